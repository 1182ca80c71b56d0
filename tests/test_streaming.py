"""Streamed attention (blocks of the database, no [B, D] tensor) against the dense
PrototypeAttention layer: softmax and sparsemax, supports within and beyond the kept
entries (the exact Michelot passes), block sizes that do not divide D, eager and in a
graph of unknown D; and an export that streams answers as the dense export does."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from proto_tf import ProtoAttend, metrics, streaming
from proto_tf.attention import PrototypeAttention
from proto_tf.serving import export

CASES = [  # (query scale, support_k): wide and narrow supports; kept entries below the support.
    (1.0, 256),
    (12.0, 256),
    (1.0, 3),
    (0.3, 8),
]


def _database(rng, size=2999, classes=3):
    keys = rng.normal(size=(size, 16)).astype(np.float32)
    values = rng.normal(size=(size, 8)).astype(np.float32)
    return keys, values, rng.integers(0, classes, size)


@pytest.mark.parametrize("normalization", ["softmax", "sparsemax"])
@pytest.mark.parametrize("scale, support_k", CASES)
def test_streamed_attention_equals_the_dense_layer(normalization, scale, support_k):
    rng = np.random.default_rng(7)
    keys, values, labels = _database(rng)
    queries = (rng.normal(size=(6, 16)) * scale).astype(np.float32)
    dense_values, weights = PrototypeAttention(normalization)(queries, keys, values)
    confidence = metrics.confidence(weights, labels, 3).numpy()
    top = tf.math.top_k(weights, 5)
    run = tf.function(
        lambda q, k, v, y: streaming.streamed_attention(q, k, v, y, normalization, 3, 5, 700, support_k),
        input_signature=[
            tf.TensorSpec([None, 16]),
            tf.TensorSpec([None, 16]),
            tf.TensorSpec([None, 8]),
            tf.TensorSpec([None], tf.int64),
        ],
    )
    for out in (
        streaming.streamed_attention(queries, keys, values, labels, normalization, 3, 5, 700, support_k),
        run(queries, keys, values, labels),
    ):
        np.testing.assert_allclose(out["weighted_values"], dense_values, rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(out["confidence"], confidence, atol=2e-6)
        np.testing.assert_allclose(out["top_weights"], top.values, atol=2e-6)
        shown = top.values.numpy() > 0
        np.testing.assert_array_equal(out["top_rows"].numpy()[shown], top.indices.numpy()[shown])
    if normalization == "sparsemax" and support_k < 10:
        assert (weights.numpy() > 0).sum(-1).max() > support_k  # The Michelot passes were needed.


def test_a_streaming_export_answers_as_the_dense_export(tmp_path):
    rng = np.random.default_rng(0)
    encoder = keras.Sequential([keras.layers.Dense(16, activation="relu")])
    model = ProtoAttend(encoder, num_classes=3, attention="sparsemax", attention_size=16, value_size=8)
    model.build((None, 5))
    database_inputs = rng.normal(size=(1500, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 1500)
    signature = {"features": tf.TensorSpec([None, 5], tf.float32)}
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
