"""A database of keys read block by block inside one graph: the frame every streamed
normalisation (`proto_tf.normalizations`) runs its passes in.

Keys stay in their stored dtype (float32, or float16/bfloat16 to halve the database) and
each block is cast to float32 as it is read, so products and sums accumulate in float32.
"""

import dataclasses
import math
from collections.abc import Callable

import tensorflow as tf

from proto_tf import blockwise

DEFAULT_BLOCK_SIZE = 65536  # Rows of keys per block: a [128, 65536] block is 32 MB.
# Dtypes a database may store its keys in. float32 by default; float16 or bfloat16 halve
# the keys' memory, and attention still computes in float32 (keys are cast as read).
KEY_DTYPES = ("float32", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class BlockedDatabase:
    """Queries (already divided by sqrt(d), float32) over a database of `keys [D, d]`,
    `values [D, d_v]` (float32) and `labels [D]` (int32), read `block_size` rows at a
    time: `blocks` blocks (a scalar tensor), block i holding rows `block_rows(i)`."""

    queries: tf.Tensor
    keys: tf.Tensor
    values: tf.Tensor
    labels: tf.Tensor
    num_classes: int
    block_size: int
    blocks: tf.Tensor

    @property
    def batch(self) -> tf.Tensor:
        return tf.shape(self.queries)[0]

    @property
    def size(self) -> tf.Tensor:
        return tf.shape(self.keys)[0]

    @property
    def value_size(self) -> "int | tf.Tensor":
        return self.values.shape[-1] or tf.shape(self.values)[-1]

    def block_rows(self, i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Block i's `(start, end)` rows of the database."""
        start = i * self.block_size
        return start, tf.minimum(start + self.block_size, self.size)

    def block_logits(self, i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`(logits [B, rows of block i], start, end)`."""
        start, end = self.block_rows(i)
        return tf.matmul(self.queries, as_float32(self.keys[start:end]), transpose_b=True), start, end


def blocked(
    queries: tf.Tensor,
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: tf.Tensor,
    num_classes: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> BlockedDatabase:
    """The `BlockedDatabase` of `queries [B, d]` (divided here by sqrt(d)) over the keys,
    values and labels given; keys of a dtype outside `KEY_DTYPES` are cast to float32."""
    queries = tf.convert_to_tensor(queries, tf.float32) / math.sqrt(int(queries.shape[-1]))
    keys = tf.convert_to_tensor(keys)
    if keys.dtype.name not in KEY_DTYPES:
        keys = tf.cast(keys, tf.float32)
    blocks = (tf.shape(keys)[0] + block_size - 1) // block_size
    values, labels = tf.convert_to_tensor(values, tf.float32), tf.cast(labels, tf.int32)
    return BlockedDatabase(queries, keys, values, labels, int(num_classes), int(block_size), blocks)


def as_float32(keys: tf.Tensor) -> tf.Tensor:
    return keys if keys.dtype == tf.float32 else tf.cast(keys, tf.float32)


def over_blocks(step: Callable, state: tuple, blocks: tf.Tensor) -> tuple:
    """`state` after `step(i, *state) -> state` for each block i = 0 .. blocks - 1, in
    one `tf.while_loop`."""
    return tf.while_loop(
        lambda i, *_: i < blocks,
        lambda i, *rest: (i + 1, *step(i, *rest)),
        (tf.constant(0), *state),
        maximum_iterations=blocks,
    )[1:]


def running_top(top_values: tf.Tensor, top_rows: tf.Tensor, logits: tf.Tensor, rows_of: Callable, k: int) -> tuple:
    """The `k` largest of the running top and of `logits [B, n]`, with their database
    rows, and the top of `logits` alone (`(values, columns)`, descending, at most k):
    `rows_of(columns)` maps columns of `logits` to rows (a block's start added, or the
    rows a gathered round read)."""
    # Exact, from the logits' largest chunk maxima: a selection over a few chunks, not
    # over the whole row (entries past a short row are -inf, never chosen over a
    # database's own rows; their columns are clamped to the row).
    values, columns = blockwise.top_k(logits, tf.minimum(k, tf.shape(logits)[1]))
    columns = tf.minimum(columns, tf.shape(logits)[1] - 1)
    best = tf.math.top_k(tf.concat([top_values, values], axis=1), k)
    merged_rows = tf.concat([top_rows, rows_of(columns)], axis=1)
    return best.values, tf.gather(merged_rows, best.indices, batch_dims=1), (values, columns)


def empty_top(batch: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A running top of nothing yet: `k` logits of -inf at row 0 per query."""
    return tf.fill([batch, k], -float("inf")), tf.fill([batch, k], tf.constant(0, tf.int32))
