import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from references import softmax, sparsemax_bisection

from proto_tf import PrototypeAttention


def _example(rng, batch=3, candidates=5, attention_size=4, value_size=2):
    return (
        rng.normal(size=(batch, attention_size)).astype(np.float32),
        rng.normal(size=(candidates, attention_size)).astype(np.float32),
        rng.normal(size=(candidates, value_size)).astype(np.float32),
    )


@pytest.mark.parametrize("normalization,reference", [("softmax", softmax), ("sparsemax", sparsemax_bisection)])
def test_matches_numpy(normalization, reference):
    queries, keys, values = _example(np.random.default_rng(0))
    weighted, weights = PrototypeAttention(normalization)(queries, keys, values)
    expected_weights = reference(queries.astype(np.float64) @ keys.T / math.sqrt(4))
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-6)
    np.testing.assert_allclose(weighted.numpy(), expected_weights @ values, atol=1e-5)


def test_hand_computed_case():
    # One query [1, 0] over keys [[2, 0], [0, 2], [1, 0]] with d_att = 2:
    # logits = [2, 0, 1] / sqrt(2) = [1.4142, 0, 0.7071]. Sparsemax: the top two are
    # in the support (1 + 2 * 0.7071 > 2.1213), tau = (2.1213 - 1) / 2 = 0.5607, so
    # p = [0.8536, 0, 0.1464].
    queries = np.array([[1.0, 0.0]], np.float32)
    keys = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]], np.float32)
    values = np.array([[1.0], [10.0], [100.0]], np.float32)
    weighted, weights = PrototypeAttention("sparsemax")(queries, keys, values)
    np.testing.assert_allclose(weights.numpy(), [[0.853553, 0.0, 0.146447]], atol=1e-5)
    np.testing.assert_allclose(weighted.numpy(), [[0.853553 + 14.6447]], atol=1e-4)


@pytest.mark.parametrize("normalization", ["softmax", "sparsemax"])
def test_mask_equals_attention_over_the_unmasked_subset(normalization):
    queries, keys, values = _example(np.random.default_rng(1), candidates=6)
    mask = np.array([True, False, True, True, False, True])
    layer = PrototypeAttention(normalization)
    weighted, weights = layer(queries, keys, values, candidate_mask=mask)
    sub_weighted, sub_weights = layer(queries, keys[mask], values[mask])
    np.testing.assert_array_equal(weights.numpy()[:, ~mask], 0.0)
    np.testing.assert_allclose(weights.numpy()[:, mask], sub_weights.numpy(), atol=1e-6)
    np.testing.assert_allclose(weighted.numpy(), sub_weighted.numpy(), atol=1e-6)


def test_fully_masked_rows_give_zero_weights():
    queries, keys, values = _example(np.random.default_rng(2))
    mask = np.zeros([3, 5], bool)
    mask[0, 1] = True
    _, weights = PrototypeAttention("softmax")(queries, keys, values, candidate_mask=mask)
    np.testing.assert_allclose(weights.numpy()[0], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(weights.numpy()[1:], 0.0)


def test_errors_name_valid_options_and_shapes():
    with pytest.raises(ValueError, match="softmax, sparsemax"):
        PrototypeAttention("entmax")
    layer = PrototypeAttention()
    with pytest.raises(ValueError, match=r"queries \(2, 4\), keys \(5, 3\)"):
        layer(tf.zeros([2, 4]), tf.zeros([5, 3]), tf.zeros([5, 2]))
    with pytest.raises(ValueError, match=r"keys \(5, 4\), values \(6, 2\)"):
        layer(tf.zeros([2, 4]), tf.zeros([5, 4]), tf.zeros([6, 2]))


def test_has_no_weights_and_round_trips_config():
    layer = PrototypeAttention("sparsemax", name="attn")
    layer(*_example(np.random.default_rng(3)))
    assert layer.weights == []
    clone = PrototypeAttention.from_config(layer.get_config())
    assert clone.normalization == "sparsemax"
    assert (
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)).normalization == "sparsemax"
    )
