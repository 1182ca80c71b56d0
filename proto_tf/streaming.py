"""Exact attention over a large database in blocks, never holding `[B, D]`.

`streamed_attention` reads the database's keys block by block inside one graph (standard
TF ops, a `tf.while_loop`), keeping per query only running statistics of fixed size, so
memory is the database plus one `[B, block_size]` block whatever D is (thresholded
normalisations add their chunk maxima, at most `[B, 131072]`). Each normalisation streams
itself (`proto_tf.normalizations`): softmax in one exact pass of running sums; sparsemax
and 1.5-entmax by chunk maxima, a gathered support and its exact threshold
(`normalizations.thresholded`).

Sums are accumulated in another order than the dense path's, so results agree with it to
float32 rounding (not bit for bit); the top prototypes are the same.
"""

import tensorflow as tf

from proto_tf import normalizations
from proto_tf.database_blocks import DEFAULT_BLOCK_SIZE, KEY_DTYPES, as_float32, blocked, over_blocks
from proto_tf.normalizations.thresholded import DEFAULT_GATHER_FRACTION, chunk_size

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_GATHER_FRACTION",
    "KEY_DTYPES",
    "chunk_size",
    "key_scan",
    "streamed_attention",
]


def streamed_attention(
    queries: tf.Tensor,
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: tf.Tensor,
    normalization: str,
    num_classes: int,
    top_k: int = 5,
    block_size: int = DEFAULT_BLOCK_SIZE,
    gather_fraction: float = DEFAULT_GATHER_FRACTION,
) -> dict:
    """Attention of `queries [B, d]` over `keys [D, d]`, `values [D, d_v]`, `labels [D]`
    (logits q k^T / sqrt(d), normalised by the normalisation named), without a `[B, D]`
    tensor.

    Returns `weighted_values [B, d_v]`, `confidence [B]` (Eq. 3) and the `top_k`
    prototypes: `top_weights [B, k]` (descending) and `top_rows [B, k]` (int32 rows of
    the database; entries past a sparse support have weight 0) and `top_logits [B, k]`
    (their logits q . k / sqrt(d)). Softmax also returns its sums before normalisation:
    `max_logit [B]` (m), `sum_exp [B]` (of exp(logit - m)), `weighted_sum [B, d_v]` and
    `class_mass [B, C]` (the same sums times the values and the one-hot labels).
    `gather_fraction`: see `normalizations.thresholded`.
    """
    database = blocked(queries, keys, values, labels, num_classes, block_size)
    return normalizations.get(normalization).streamed(database, top_k, gather_fraction)


def key_scan(
    queries: tf.Tensor, keys: tf.Tensor, block_size: int = DEFAULT_BLOCK_SIZE, keys_first: bool = False
) -> tf.Tensor:
    """Each query's largest logit `q . k / sqrt(d)` over `keys`, by blocks of rows: one
    read of the keys and nothing else, the floor of any exact attention (benchmarks).
    `keys_first` computes each block as `k q^T` instead of `q k^T`."""
    database = blocked(queries, keys, tf.zeros([0, 1]), tf.zeros([0], tf.int32), 1, block_size)

    def step(i, best):
        start, end = database.block_rows(i)
        block = as_float32(database.keys[start:end])
        if keys_first:
            block_max = tf.reduce_max(tf.matmul(block, database.queries, transpose_b=True), axis=0)
        else:
            block_max = tf.reduce_max(tf.matmul(database.queries, block, transpose_b=True), axis=1)
        return (tf.maximum(best, block_max),)

    initial = (tf.fill([database.batch], -float("inf")),)
    return over_blocks(step, initial, database.blocks)[0]
