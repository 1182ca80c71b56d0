"""The prototype database the Keras API predicts with: never a stale one after
`set_database`, kept by `.keras` saving, and scored by `model.evaluate(x, y)`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import proto_tf


def _model(attention="softmax", seed=0):
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([keras.layers.Dense(16, activation="relu")])
    model = proto_tf.ProtoAttend(encoder, num_classes=3, attention=attention, value_size=8)
    model.build((None, 5))
    model.compile(optimizer="adam")
    return model


def _with_database(model, rows, labels):
    candidates = np.random.default_rng(rows).normal(size=(rows, 5)).astype("float32")
    model.set_database(*model.encode_database(candidates), labels=labels)


@pytest.fixture
def inputs():
    return np.random.default_rng(1).normal(size=(3, 5)).astype("float32")


def test_predict_call_and_traced_functions_follow_set_database(inputs):
    model = _model()
    _with_database(model, 64, np.arange(64) % 3)
    traced = tf.function(lambda x: model(x)["confidence"])
    first = model.predict(inputs, verbose=0)
    assert first["weights"].shape == (3, 64)
    assert traced(inputs).shape == (3,)
    _with_database(model, 10, np.ones(10))  # Every prototype has label 1.
    for outputs in (model.predict(inputs, verbose=0), model(inputs)):
        weights = np.asarray(outputs["weights"])
        assert weights.shape == (3, 10)
        np.testing.assert_allclose(np.asarray(outputs["confidence"]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(traced(inputs).numpy(), 1.0, rtol=1e-6)  # Not retraced.
    assert traced.experimental_get_tracing_count() == 1
    result = model.evaluate(inputs, np.ones(3), verbose=0, return_dict=True)
    assert result["mean_confidence"] == pytest.approx(1.0)


@pytest.mark.parametrize("attention", ["softmax", "sparsemax"])
def test_evaluate_reports_both_paths_and_confidence(inputs, attention):
    model = _model(attention)
    labels = np.arange(40) % 3
    _with_database(model, 40, labels)
    x = np.random.default_rng(2).normal(size=(37, 5)).astype("float32")
    y = np.random.default_rng(3).integers(0, 3, 37)
    result = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    outputs = model(x)
    # NumPy reference over the 37 examples (the last batch has 5: exact means, not
    # means of batch means).
    logits = outputs["logits"].numpy()
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    assert set(result) == {"loss", "prototype_accuracy", "plain_accuracy", "mean_confidence"}
    assert result["prototype_accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y))
    assert result["plain_accuracy"] == pytest.approx(np.mean(outputs["plain_logits"].numpy().argmax(-1) == y))
    assert result["mean_confidence"] == pytest.approx(outputs["confidence"].numpy().mean(), rel=1e-5)
    assert result["loss"] == pytest.approx(-np.log(probabilities[np.arange(37), y]).mean(), rel=1e-5)


def test_keras_file_keeps_the_database(tmp_path, inputs):
    model = _model("sparsemax")
    _with_database(model, 50, np.arange(50) % 3)
    model.database.indices = np.arange(50) * 7
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.database is not None and len(loaded.database) == 50
    np.testing.assert_array_equal(loaded.database.indices, np.arange(50) * 7)
    expected, got = model(inputs), loaded(inputs)
    for name in ("logits", "weights", "confidence"):
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy())


@pytest.mark.parametrize("key_dtype", ["float16", "bfloat16"])
def test_keras_file_keeps_narrow_keys(tmp_path, inputs, key_dtype):
    model = _model("sparsemax")
    candidates = np.random.default_rng(4).normal(size=(50, 5)).astype("float32")
    keys, values = model.encode_database(candidates)
    model.set_database(keys, values, np.arange(50) % 3, key_dtype=key_dtype)
    assert model.database.keys.dtype == key_dtype
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.database.key_dtype == key_dtype
    np.testing.assert_array_equal(
        tf.cast(loaded.database.keys, tf.float32).numpy(), tf.cast(tf.cast(keys, key_dtype), tf.float32).numpy()
    )
    expected, got = model(inputs), loaded(inputs)
    for name in ("logits", "weights", "confidence"):
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy())


def test_set_database_refuses_labels_outside_the_classes_nan_rows_and_no_rows():
    from proto_tf.errors import DataError

    model = _model()
    keys, values = model.encode_database(np.random.default_rng(0).normal(size=(6, 5)).astype("float32"))
    keys, values = keys.numpy(), values.numpy()
    with pytest.raises(DataError, match=r"labels must be class ids in 0\.\.2; rows 1, 4 \(2 in all\) hold \[-1, 3\]"):
        model.set_database(keys, values, labels=[0, -1, 2, 1, 3, 0])
    bad_keys = keys.copy()
    bad_keys[2, 0] = np.nan
    with pytest.raises(DataError, match=r"database keys hold NaN or infinite numbers in row 2 \(1 in all\)"):
        model.set_database(bad_keys, values, labels=np.zeros(6))
    bad_values = values.copy()
    bad_values[5, 1] = np.inf
    with pytest.raises(DataError, match=r"database values hold NaN or infinite numbers in row 5 \(1 in all\)"):
        model.set_database(keys, bad_values, labels=np.zeros(6))
    with pytest.raises(DataError, match=r"^the prototype database is empty"):
        model.set_database(keys[:0], values[:0], labels=np.zeros(0))
    # Was class 2, silently (a cast).
    with pytest.raises(DataError, match=r"labels must be whole class ids; row 3 \(1 in all\) hold \[2\.7\]"):
        model.set_database(keys, values, labels=[0.0, 1.0, 2.0, 2.7, 2.0, 0.0])
    # Was accepted, after which a database of the right width could no longer be set.
    with pytest.raises(ValueError, match=rf"Database keys must be \[rows, {keys.shape[1]}\] for this model"):
        model.set_database(keys[:, :-1], values, labels=np.zeros(6))
    with pytest.raises(ValueError, match=rf"Database values must be \[rows, {values.shape[1]}\] for this model"):
        model.set_database(keys, np.concatenate([values, values], 1), labels=np.zeros(6))
    assert model.database is None  # Nothing was set by a refused call.
    model.set_database(keys, values, labels=[0, 1, 2, 1, 2, 0.0])
    assert len(model.database) == 6
    assert model.database.labels.numpy().tolist() == [0, 1, 2, 1, 2, 0]
