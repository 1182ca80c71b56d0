"""PrototypeAttention: relational attention between inputs and a candidate database."""

import math

import keras
import tensorflow as tf

from proto_tf import normalizations
from proto_tf.normalizations.softmax import masked_softmax
from proto_tf.sparsemax import DEFAULT_TOP_K

NORMALIZATIONS = normalizations.names()
SPARSEMAX_TOP_K = DEFAULT_TOP_K  # Entries per row sparsemax's fast path sorts first.

__all__ = ["NORMALIZATIONS", "SPARSEMAX_TOP_K", "PrototypeAttention", "masked_softmax", "normalize"]


def normalize(logits: tf.Tensor, normalization: str, sparsemax_top_k: int | None = SPARSEMAX_TOP_K) -> tf.Tensor:
    """Applies the named attention normalisation (`proto_tf.normalizations`) over the
    last axis, in float32. `sparsemax_top_k` is the fast paths' speed knob (None: the
    plain sort)."""
    return normalizations.get(normalization).dense(tf.cast(logits, tf.float32), sparsemax_top_k)


@keras.saving.register_keras_serializable(package="proto_tf")
class PrototypeAttention(keras.layers.Layer):
    """Scaled dot-product attention of a batch over a candidate database.

    `weights = n(queries @ keys^T / sqrt(d_att))` with `n` a normalisation of
    `proto_tf.normalizations` (softmax, sparsemax, entmax15),
    and the output is `weights @ values`. The layer has no trainable weights.

    Args:
      normalization: a name of `proto_tf.normalizations.names()`.
      sparsemax_top_k: a speed knob of the exact fast paths (sparsemax's `top_k`, also
        under XLA); None sorts every row in full (the slow reference). The weights are
        the same either way.

    Call args:
      queries: `[B, d_att]`.
      keys: `[D, d_att]`, one row per candidate.
      values: `[D, d_val]`.
      candidate_mask: optional bool `[D]` or `[B, D]`; False marks candidates that
        must get weight 0.

    Returns:
      `(weighted_values [B, d_val], weights [B, D])`; weights are float32.

    Example:
      >>> layer = PrototypeAttention("sparsemax")
      >>> out, w = layer(tf.ones([2, 16]), tf.eye(4, 16), tf.ones([4, 8]))
      >>> w.shape
      TensorShape([2, 4])
    """

    def __init__(self, normalization: str = "softmax", sparsemax_top_k: int | None = SPARSEMAX_TOP_K, **kwargs):
        super().__init__(**kwargs)
        normalizations.get(normalization)  # A ValueError naming the valid ones.
        self.normalization = normalization
        self.sparsemax_top_k = sparsemax_top_k
        self.built = True  # Nothing to build: the layer is parameter-free.

    def call(
        self, queries: tf.Tensor, keys: tf.Tensor, values: tf.Tensor, candidate_mask: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        _check_shapes(queries, keys, values)
        attention_size = queries.shape[-1]
        # Keys stored in a narrower dtype (a database's float16/bfloat16 keys) are
        # computed in the queries' dtype.
        logits = tf.matmul(queries, tf.cast(keys, queries.dtype), transpose_b=True)
        logits = tf.cast(logits, tf.float32) / math.sqrt(attention_size)
        if candidate_mask is not None:
            mask = tf.broadcast_to(tf.cast(candidate_mask, tf.bool), tf.shape(logits))
            logits = tf.where(mask, logits, tf.constant(-float("inf"), logits.dtype))
        weights = normalize(logits, self.normalization, self.sparsemax_top_k)
        weighted_values = tf.matmul(tf.cast(weights, values.dtype), values)
        return weighted_values, weights

    def compute_output_shape(self, queries_shape: tuple, keys_shape: tuple, values_shape: tuple) -> tuple:
        return (
            (queries_shape[0], values_shape[-1]),
            (queries_shape[0], keys_shape[0]),
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"normalization": self.normalization, "sparsemax_top_k": self.sparsemax_top_k})
        return config


def _check_shapes(queries, keys, values):
    """Raises a ValueError naming both shapes when static dimensions disagree."""
    for name, tensor in (("queries", queries), ("keys", keys), ("values", values)):
        if tensor.shape.rank != 2:
            raise ValueError(f"{name} must have rank 2, got shape {tensor.shape}.")
    if queries.shape[-1] is None:
        raise ValueError(f"queries must have a known attention size (last dimension), got {queries.shape}.")
    if keys.shape[-1] is not None and keys.shape[-1] != queries.shape[-1]:
        raise ValueError(f"queries and keys must share the attention size: queries {queries.shape}, keys {keys.shape}.")
    if None not in (keys.shape[0], values.shape[0]) and keys.shape[0] != values.shape[0]:
        raise ValueError(f"keys and values must have one row per candidate: keys {keys.shape}, values {values.shape}.")
