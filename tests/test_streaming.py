"""Streamed attention (blocks of the database, no [B, D] tensor) against the dense
PrototypeAttention layer: every normalisation, supports gathered from their chunks
(a few, or spread over more chunks than one round gathers) and finished by Michelot's
passes over the blocks, block sizes that do not divide D, eager and in a graph of
unknown D; and an export that streams answers as the dense export does."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import toy_training
from references import NORMALIZATION_REFERENCES

from proto_tf import ProtoAttend, normalizations, streaming
from proto_tf.attention import PrototypeAttention
from proto_tf.errors import ConfigError
from proto_tf.normalizations import thresholded
from proto_tf.serving import export

GATHERED = 1.0  # Gather the candidate chunks whatever their share of the database.
CASES = {  # name: (query scale, gather_fraction, keys): wide and narrow supports, adversarial rows.
    "few": (12.0, GATHERED, "random"),
    "some": (1.0, GATHERED, "random"),
    "some_by_passes": (1.0, 0.0, "random"),  # Nothing gathered: Michelot's passes over the blocks.
    "wide": (0.3, GATHERED, "random"),
    "wide_by_passes": (0.3, 0.0, "random"),
    "most_of_a_block": (0.004, GATHERED, "random"),  # Supports of most of a 700-row block.
    "ties": (6.0, GATHERED, "tied"),  # Every logit 60 times: ties at the top and at the threshold.
    "ties_by_passes": (6.0, 0.0, "tied"),
    "flat": (0.0, GATHERED, "random"),  # All logits equal: the support is the whole row.
    "flat_by_passes": (0.0, 0.0, "random"),
}


def _database(rng, size=2999, classes=3, keys="random"):
    if keys == "tied":
        distinct = rng.normal(size=(50, 16)).astype(np.float32)
        keys = np.tile(distinct, (size // 50 + 1, 1))[:size]
    else:
        keys = rng.normal(size=(size, 16)).astype(np.float32)
    values = rng.normal(size=(size, 8)).astype(np.float32)
    return keys, values, rng.integers(0, classes, size)


def _reference(normalization, queries, keys, values, labels, classes=3):
    """Weights, weighted values and confidence (Eq. 3) in float64 NumPy."""
    logits = queries.astype(np.float64) @ keys.astype(np.float64).T / np.sqrt(queries.shape[1])
    weights = NORMALIZATION_REFERENCES[normalization](logits)
    mass = np.stack([np.bincount(labels, row, classes) for row in weights])
    return logits, weights, weights @ values, np.minimum(mass.max(1), 1.0)


def _recorded_loops(monkeypatch):
    """The names of the loops streamed attention runs from here on (eager: tf.cond runs
    one branch): "scan", "gather_round", or the passes over the blocks."""
    loops = []
    over_blocks = thresholded.over_blocks
    monkeypatch.setattr(
        thresholded, "over_blocks", lambda step, *rest: loops.append(step.__name__) or over_blocks(step, *rest)
    )
    return loops


@pytest.mark.parametrize("normalization", normalizations.names())
@pytest.mark.parametrize("case", list(CASES))
def test_streamed_attention_is_exact_against_float64_and_the_dense_layer(normalization, case):
    scale, gather_fraction, kind = CASES[case]
    rng = np.random.default_rng(7)
    keys, values, labels = _database(rng, keys=kind)
    queries = (rng.normal(size=(6, 16)) * scale).astype(np.float32)
    logits, weights, weighted, confidence = _reference(normalization, queries, keys, values, labels)
    # float32 logits carry a rounding of eps * |logit|, every output inherits it, and
    # sums over wide supports add their own.
    tolerance = 2e-6 + 4 * np.finfo(np.float32).eps * np.abs(logits).max()
    dense_values, dense_weights = PrototypeAttention(normalization)(queries, keys, values)
    run = tf.function(
        lambda q, k, v, y: streaming.streamed_attention(q, k, v, y, normalization, 3, 5, 700, gather_fraction),
        input_signature=[
            tf.TensorSpec([None, 16]),
            tf.TensorSpec([None, 16]),
            tf.TensorSpec([None, 8]),
            tf.TensorSpec([None], tf.int64),
        ],
    )
    for out in (
        streaming.streamed_attention(queries, keys, values, labels, normalization, 3, 5, 700, gather_fraction),
        run(queries, keys, values, labels),
    ):
        for name, got, expected in (
            ("weighted_values", out["weighted_values"], weighted),
            ("confidence", out["confidence"], confidence),
            ("top_weights", out["top_weights"], -np.sort(-weights, axis=1)[:, :5]),
        ):
            np.testing.assert_allclose(got, expected, atol=tolerance, rtol=0, err_msg=name)
        # The rows named carry the weights given (ties may name any of equal rows).
        rows = out["top_rows"].numpy()
        np.testing.assert_allclose(np.take_along_axis(weights, rows, 1), out["top_weights"], atol=tolerance)
        np.testing.assert_allclose(out["weighted_values"], dense_values, atol=tolerance, rtol=1e-5)
    np.testing.assert_allclose(dense_weights, weights, atol=tolerance)  # The dense path, the same reference.
    smallest_support = {"wide": 7, "most_of_a_block": 350, "flat": len(keys)}.get(case.removesuffix("_by_passes"))
    if normalization == "sparsemax" and smallest_support:
        assert (weights > 0).sum(-1).min() >= smallest_support  # The case is the one named.


@pytest.mark.parametrize("attention", normalizations.names())
def test_a_trained_models_streamed_answers_are_the_dense_paths_and_float64s(attention):
    # A trained model's keys cluster by class, unlike random ones: jittered copies of its
    # training encodings (as the scale benchmark builds them) give sparsemax supports of
    # a few dozen entries, nearly each in a chunk of its own, the case that served slowly and could hide
    # an inexact gather.
    model, _, ((x_train, y_train), (x_test, _)) = toy_training.train_toy(attention, steps=150)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(x_train), 40_000)

    def jittered(encodings):
        encodings = encodings.numpy()
        noise = rng.standard_normal((len(rows), encodings.shape[1])) * 0.05 * encodings.std(0)
        return (encodings[rows] + noise).astype(np.float32)

    keys, values = map(jittered, model.encode_database(x_train))
    labels = y_train[rows]
    inputs = x_test[:24]
    logits, weights, weighted, confidence = _reference(
        attention, model.encode(inputs)[0].numpy(), keys, values, labels, 4
    )
    if attention == "sparsemax":  # The case: wide supports over many chunks of keys.
        chunk = streaming.chunk_size(len(keys))
        chunks = [np.unique(np.flatnonzero(row > 0) // chunk).size for row in weights]
        assert np.median((weights > 0).sum(1)) > 15 and np.median(chunks) > 15
    dense = model.predict_with_database(inputs, keys, values, labels)
    streamed = model.predict_streamed(inputs, keys, values, labels, 5, 4096)
    tolerance = 2e-6 + 4 * np.finfo(np.float32).eps * np.abs(logits).max()
    np.testing.assert_allclose(streamed["logits"], dense["logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(streamed["logits"], model.decision(weighted.astype(np.float32)), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(streamed["confidence"], confidence, atol=tolerance, rtol=0)
    np.testing.assert_allclose(streamed["confidence"], dense["confidence"], atol=tolerance, rtol=0)
    np.testing.assert_allclose(streamed["top_weights"], -np.sort(-weights, axis=1)[:, :5], atol=tolerance, rtol=0)
    named = np.take_along_axis(weights, streamed["top_rows"].numpy(), 1)  # The rows carry the weights given.
    np.testing.assert_allclose(named, streamed["top_weights"], atol=tolerance, rtol=0)


def test_a_support_spread_over_many_chunks_is_gathered_not_passed_over(monkeypatch):
    # Trained keys spread a support of a few hundred entries over as many chunks of
    # keys, more than one round gathers (`ROUND_KEY_BYTES`, made small here): the chunks
    # are gathered round after round, and the database is not passed over again (which
    # made a served batch of 128 at 1M prototypes take 5.6x softmax's time).
    monkeypatch.setattr(thresholded, "ROUND_KEY_BYTES", 1 << 16)  # 1024 keys of 16 floats.
    rng = np.random.default_rng(3)
    size, planted = 160_000, 300
    keys, values, labels = _database(rng, size)
    keys *= 0.01
    direction = rng.normal(size=16).astype(np.float32)
    direction /= np.linalg.norm(direction)
    rows = np.arange(planted) * 512 + rng.integers(0, 512, planted)  # One entry in every 512 keys.
    keys[rows] = 0.1 * direction + 1e-4 * rng.normal(size=(planted, 16)).astype(np.float32)
    queries = np.concatenate([direction[None] * 10 + 0.1 * rng.normal(size=(3, 16)), 30 * rng.normal(size=(3, 16))])
    queries = queries.astype(np.float32)
    logits, weights, weighted, confidence = _reference("sparsemax", queries, keys, values, labels)
    chunk = streaming.chunk_size(size)
    chunks = [np.unique(np.flatnonzero(row > 0) // chunk).size for row in weights]
    assert sum(chunks) * chunk * 16 * 4 > 4 * thresholded.ROUND_KEY_BYTES  # The case: several rounds of chunks.
    loops = _recorded_loops(monkeypatch)
    out = streaming.streamed_attention(queries, keys, values, labels, "sparsemax", 3, 5, 4096)
    assert loops == ["scan", "gather_round"]  # One pass over the database, then gathered rounds.
    tolerance = 2e-6 + 4 * np.finfo(np.float32).eps * np.abs(logits).max()
    np.testing.assert_allclose(out["weighted_values"], weighted, atol=tolerance, rtol=0)
    np.testing.assert_allclose(out["confidence"], confidence, atol=tolerance, rtol=0)
    np.testing.assert_allclose(out["top_weights"], -np.sort(-weights, axis=1)[:, :5], atol=tolerance, rtol=0)
    np.testing.assert_array_equal(np.sort(out["top_rows"].numpy()[:3], 1), np.sort(np.argsort(-weights[:3])[:, :5], 1))


def test_one_flat_query_in_a_batch_of_sparse_ones_is_gathered_exactly(monkeypatch):
    # The gathered share is the batch's average: a query whose support is its whole row
    # beside sparse ones gathers every chunk for itself alone, not for the whole batch,
    # and its answer is exact (the rows past its candidates are padding of no query).
    rng = np.random.default_rng(5)
    keys, values, labels = _database(rng, 5000)
    queries = np.concatenate([np.zeros((1, 16)), 12.0 * rng.normal(size=(7, 16))]).astype(np.float32)
    logits, weights, weighted, confidence = _reference("sparsemax", queries, keys, values, labels)
    assert (weights[0] > 0).all() and (weights[1:] > 0).sum(1).max() < 20  # The case.
    loops = _recorded_loops(monkeypatch)
    out = streaming.streamed_attention(queries, keys, values, labels, "sparsemax", 3, 5, 1024, gather_fraction=0.25)
    assert loops == ["scan", "gather_round"]
    tolerance = 2e-6 + 4 * np.finfo(np.float32).eps * np.abs(logits).max()
    np.testing.assert_allclose(out["weighted_values"], weighted, atol=tolerance, rtol=0)
    np.testing.assert_allclose(out["confidence"], confidence, atol=tolerance, rtol=0)
    np.testing.assert_allclose(out["top_weights"], -np.sort(-weights, axis=1)[:, :5], atol=tolerance, rtol=0)


def test_a_batch_past_the_gathered_keys_cap_runs_the_passes(monkeypatch):
    # More candidate keys than `MAX_GATHERED_KEYS` would hold flat lists of gigabytes:
    # the batch runs Michelot's passes, with the same answer.
    rng = np.random.default_rng(6)
    keys, values, labels = _database(rng, 3000)
    queries = (0.3 * rng.normal(size=(4, 16))).astype(np.float32)
    _, weights, weighted, _ = _reference("sparsemax", queries, keys, values, labels)
    monkeypatch.setattr(thresholded, "MAX_GATHERED_KEYS", 64)
    loops = _recorded_loops(monkeypatch)
    out = streaming.streamed_attention(queries, keys, values, labels, "sparsemax", 3, 5, 1024, gather_fraction=1.0)
    assert loops[0] == "scan" and "gather_round" not in loops and loops[-1] == "accumulate"
    np.testing.assert_allclose(out["weighted_values"], weighted, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["top_weights"], -np.sort(-weights, axis=1)[:, :5], atol=1e-5, rtol=0)


def _exportable(rng, rows, attention="sparsemax"):
    """A small model over 5 features, `rows` raw database inputs and labels, and the
    serving signature."""
    keras.utils.set_random_seed(0)  # Initial weights independent of the tests run before.
    encoder = keras.Sequential([keras.layers.Dense(16, activation="relu")])
    model = ProtoAttend(encoder, num_classes=3, attention=attention, attention_size=16, value_size=8)
    model.build((None, 5))
    database_inputs = rng.normal(size=(rows, 5)).astype(np.float32)
    return model, database_inputs, rng.integers(0, 3, rows), {"features": tf.TensorSpec([None, 5], tf.float32)}


@pytest.mark.parametrize("attention", ["sparsemax", "entmax15"])
def test_a_streaming_export_answers_as_the_dense_export(tmp_path, attention):
    rng = np.random.default_rng(0)
    model, database_inputs, labels, signature = _exportable(rng, 1500, attention)
    dense = export.export_any(model, database_inputs, labels, signature, str(tmp_path / "dense"))
    streamed = export.export_any(
        model, database_inputs, labels, signature, str(tmp_path / "streamed"), stream_above=100
    )
    request = {"features": tf.constant(rng.normal(size=(9, 5)).astype(np.float32) * 3)}
    a = tf.saved_model.load(dense).signatures["serving_default"](**request)
    b = tf.saved_model.load(streamed).signatures["serving_default"](**request)
    assert set(a) == set(b)
    np.testing.assert_array_equal(a["class_ids"], b["class_ids"])
    for key in ("probabilities", "confidence", "prototype_weights"):
        np.testing.assert_allclose(a[key], b[key], atol=2e-6, err_msg=key)
    shown = a["prototype_weights"].numpy() > 0
    np.testing.assert_array_equal(a["prototype_indices"].numpy()[shown], b["prototype_indices"].numpy()[shown])
    with pytest.raises(Exception, match="stream_above=0 must be a positive integer"):
        export.export_model_dir(str(tmp_path / "none"), str(tmp_path / "x"), stream_above=0)


def test_key_scan_is_each_querys_largest_logit_in_either_layout():
    rng = np.random.default_rng(3)
    keys, _, _ = _database(rng, size=1001)
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    expected = (queries.astype(np.float64) @ keys.T.astype(np.float64) / 4.0).max(1)
    for keys_first in (False, True):
        np.testing.assert_allclose(streaming.key_scan(queries, keys, 300, keys_first), expected, rtol=1e-5)


@pytest.mark.parametrize("key_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("normalization", ["softmax", "sparsemax"])
def test_narrow_keys_are_read_in_float32(normalization, key_dtype):
    # Keys stored as float16/bfloat16 lose their own rounding, nothing more: the streamed
    # and dense paths over them equal float64 over the same (rounded) keys.
    rng = np.random.default_rng(5)
    keys, values, labels = _database(rng)
    narrow = tf.cast(keys, key_dtype)
    rounded = tf.cast(narrow, tf.float64).numpy()
    queries = (rng.normal(size=(6, 16)) * 6.0).astype(np.float32)
    logits, weights, weighted, confidence = _reference(normalization, queries, rounded, values, labels)
    tolerance = 2e-6 + 4 * np.finfo(np.float32).eps * np.abs(logits).max()
    out = streaming.streamed_attention(queries, narrow, values, labels, normalization, 3, 5, 700)
    np.testing.assert_allclose(out["weighted_values"], weighted, atol=tolerance, rtol=0)
    np.testing.assert_allclose(out["confidence"], confidence, atol=tolerance, rtol=0)
    dense_values, dense_weights = PrototypeAttention(normalization)(queries, narrow, values)
    np.testing.assert_allclose(dense_weights, weights, atol=tolerance)
    np.testing.assert_allclose(dense_values, weighted, atol=tolerance)
    np.testing.assert_allclose(streaming.key_scan(queries, narrow, 700), logits.max(1), rtol=1e-5)
    # And the rounding is visible: the float32 keys' answer differs.
    assert np.abs(_reference(normalization, queries, keys, values, labels)[2] - weighted).max() > 1e-4


def test_an_export_stores_narrow_keys_once_and_answers_from_them(tmp_path):
    rng = np.random.default_rng(1)
    model, database_inputs, labels, signature = _exportable(rng, 3000)
    request = {"features": tf.constant(rng.normal(size=(9, 5)).astype(np.float32) * 3)}
    answers, sizes = {}, {}
    for key_dtype in ("float32", "float16"):
        path = export.export_any(
            model, database_inputs, labels, signature, str(tmp_path / key_dtype), stream_above=100, key_dtype=key_dtype
        )
        assert model.database.keys.dtype == key_dtype
        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
        dtypes = reader.get_variable_to_dtype_map()
        stored = [name for name, shape in reader.get_variable_to_shape_map().items() if shape == [3000, 16]]
        assert [dtypes[name].name for name in stored] == [key_dtype]  # The keys, once, as stored.
        loaded = tf.saved_model.load(path)
        answers[key_dtype] = loaded.signatures["serving_default"](**request)
        sizes[key_dtype] = sum(f.stat().st_size for f in (tmp_path / key_dtype / "variables").iterdir())
        # The export answers as the model in memory does over the same stored keys.
        direct = model.predict_streamed(request["features"], *model.database.tensors(), top_k=5, training=False)
        np.testing.assert_allclose(answers[key_dtype]["confidence"], direct["confidence"], atol=2e-6)
    # Half the keys' bytes: 3000 rows x 16 x 2 bytes saved.
    assert sizes["float32"] - sizes["float16"] == pytest.approx(3000 * 16 * 2, rel=0.05)
    np.testing.assert_allclose(answers["float16"]["confidence"], answers["float32"]["confidence"], atol=0.02)
    with pytest.raises(ValueError, match="key_dtype must be one of float32, float16, bfloat16"):
        model.set_database(*model.database.tensors(), key_dtype="int8")
    # The command's refusal comes before the run is read (there is none here).
    with pytest.raises(ConfigError, match=r"^--database_key_dtype='int8' must be one of float32, float16, bfloat16\.$"):
        export.export_model_dir(str(tmp_path / "no_run"), str(tmp_path / "x"), key_dtype="int8")
