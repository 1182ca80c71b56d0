"""PrototypeIndex: `model(x)`, Keras' `predict` and an export search the database dense up
to `stream_above` rows and in blocks above it, with the same answers; above it no `[B, D]`
tensor is made."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from references import NORMALIZATION_REFERENCES

import proto_tf
from proto_tf import ProtoAttend, PrototypeIndex


def _model(attention, stream_above):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(16, activation="relu")])
    model = ProtoAttend(encoder, 3, attention, attention_size=16, value_size=8, stream_above=stream_above)
    model.build((None, 5))
    return model


def _database(rng, rows):
    return (
        rng.normal(size=(rows, 16)).astype(np.float32),
        rng.normal(size=(rows, 8)).astype(np.float32),
        rng.integers(0, 3, rows),
    )


@pytest.mark.parametrize("attention", proto_tf.normalizations.names())
def test_above_stream_above_the_model_answers_with_the_top_prototypes_of_the_dense_path(attention):
    rng = np.random.default_rng(0)
    keys, values, labels = _database(rng, 3000)
    inputs = rng.normal(size=(7, 5)).astype(np.float32) * 3
    dense, streamed = _model(attention, 100_000), _model(attention, 1000)
    for model in (dense, streamed):
        model.set_database(keys, values, labels)
    assert isinstance(streamed.database, PrototypeIndex) and streamed.database.streams()
    expected, got = dense(inputs), streamed(inputs)
    assert "weights" in expected and "weights" not in got
    np.testing.assert_allclose(got["logits"], expected["logits"], atol=1e-5)
    np.testing.assert_allclose(got["confidence"], expected["confidence"], atol=1e-5)
    weights = expected["weights"].numpy()
    np.testing.assert_allclose(got["top_weights"], -np.sort(-weights, axis=1)[:, :5], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(weights, got["top_rows"].numpy(), 1), got["top_weights"], atol=1e-5)
    # The dense weights themselves against the float64 reference of the normalisation.
    queries = dense.encode(inputs)[0].numpy().astype(np.float64)
    reference = NORMALIZATION_REFERENCES[attention](queries @ keys.T.astype(np.float64) / 4.0)
    np.testing.assert_allclose(weights, reference, atol=1e-5)


def test_keras_predict_follows_a_new_database_across_the_threshold():
    rng = np.random.default_rng(1)
    model = _model("sparsemax", 1000)
    model.compile()
    inputs = rng.normal(size=(6, 5)).astype(np.float32)
    model.set_database(*_database(rng, 500))
    assert model.predict(inputs, verbose=0)["weights"].shape == (6, 500)
    large = _database(rng, 4000)
    model.set_database(*large)  # Past stream_above: predict is traced again, streamed.
    out = model.predict(inputs, verbose=0)
    assert "weights" not in out and out["top_rows"].shape == (6, 5)
    reference = _model("sparsemax", 100_000)
    reference.set_database(*large)
    np.testing.assert_allclose(out["logits"], reference(inputs)["logits"], atol=1e-5)


@pytest.mark.slow
def test_model_call_over_two_million_prototypes_stays_within_memory():
    # Dense, a batch of 256 over 2M prototypes makes 2 GB of weights and as much again of
    # logits; streamed (above stream_above) the process peaks near the database (192 MB)
    # plus TensorFlow. Measured in a process of its own (peak RSS only ever grows).
    code = """
import numpy as np, keras
from proto_tf import ProtoAttend
from proto_tf.peak_memory import peak_resident_gib
rows = 2_000_000
rng = np.random.default_rng(0)
model = ProtoAttend(keras.Sequential([keras.layers.Dense(16)]), 3, "sparsemax", value_size=8)
model.build((None, 5))
model.set_database(rng.normal(size=(rows, 16)).astype(np.float32),
                   rng.normal(size=(rows, 8)).astype(np.float32), rng.integers(0, 3, rows))
out = model(rng.normal(size=(256, 5)).astype(np.float32))
assert "weights" not in out and out["top_rows"].shape == (256, 5)
print(peak_resident_gib())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    peak_gib = float(result.stdout.strip().splitlines()[-1])
    assert peak_gib < 2.5, peak_gib


def test_a_subprocess_peak_is_its_own_not_its_large_parents():
    """`ru_maxrss` survives execve: a child of a 1 GiB parent reported 1 GiB, and the
    2M-prototype test above, started from a test worker grown to 2.8 GB, failed at 2.83
    GiB while it peaks at 1.13 alone. `peak_resident_gib` reads the child's own peak."""
    ballast = np.ones(2**27, np.float64)  # 1 GiB, touched: resident in this process.
    code = (
        "import resource; from proto_tf.peak_memory import peak_resident_gib; "
        "print(peak_resident_gib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    own, inherited = (float(value) for value in result.stdout.split())
    assert ballast.sum() == 2**27
    assert inherited >= 1.0 > 0.5 > own, (own, inherited)


def test_stream_above_is_checked_and_kept_by_keras_saving(tmp_path):
    with pytest.raises(ValueError, match="stream_above must be a positive integer, got 0"):
        _model("softmax", 0)
    model = _model("softmax", 1234)
    model.set_database(*_database(np.random.default_rng(3), 2000))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.stream_above == 1234 and loaded.database.streams()
