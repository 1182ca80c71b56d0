"""Exact reductions of long rows (one per query, one entry per database candidate)
to the few fixed-size blocks that can matter.

Attention over a database of a million candidates makes rows of a million logits.
Only the largest entries matter for sparsemax's support and for the top prototypes,
and all of them lie in the blocks with the largest maxima; one pass for the block
maxima then replaces a selection over the whole row.
"""

import tensorflow as tf

# Entries per block: small enough that the kept blocks are few entries, large
# enough that the block maxima are a short row.
DEFAULT_BLOCK_SIZE = 128


def block_maxima(rows: tf.Tensor, block_size: int = DEFAULT_BLOCK_SIZE) -> tf.Tensor:
    """Splits `rows` `[R, n]` into blocks of `block_size` consecutive entries.

    Returns `(blocks [R, ceil(n / block_size), block_size], maxima [R, num_blocks])`;
    the last block is padded with `-inf`.
    """
    padded = rows
    if rows.shape[-1] is None or rows.shape[-1] % block_size:  # A pad writes a copy of the rows.
        padding = -tf.shape(rows)[-1] % block_size
        padded = tf.pad(rows, [[0, 0], [0, padding]], constant_values=-float("inf"))
    blocks = tf.reshape(padded, [tf.shape(rows)[0], -1, block_size])
    return blocks, tf.reduce_max(blocks, axis=-1)


def gather_blocks(blocks: tf.Tensor, block_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The entries of the chosen blocks of each row, concatenated, with their column
    in the original row.

    Args:
      blocks: `[R, num_blocks, block_size]` from `block_maxima`.
      block_ids: int32 `[R, m]`, the blocks to keep per row.

    Returns:
      `(entries [R, m * block_size], columns [R, m * block_size])`.
    """
    block_size = tf.shape(blocks)[-1]
    entries = tf.gather(blocks, block_ids, batch_dims=1)
    columns = block_ids[..., None] * block_size + tf.range(block_size)
    rows = tf.shape(blocks)[0]
    return tf.reshape(entries, [rows, -1]), tf.reshape(columns, [rows, -1])


def top_k(rows: tf.Tensor, k: int, block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[tf.Tensor, tf.Tensor]:
    """`tf.math.top_k(rows, k)` for 2-D `rows`, without a selection over whole rows.

    Exact: the k largest entries of a row lie in the k blocks with the largest
    maxima (each of them is at most its block's maximum). Values equal
    `tf.math.top_k`'s; among exactly equal entries the index returned may differ.
    Rows must have at least k entries above `-inf`.

    Returns:
      `(values [R, k], indices [R, k])`, values in descending order.
    """
    length = rows.shape[-1]
    if length is not None and length <= 4 * block_size:
        result = tf.math.top_k(rows, k)
        return result.values, result.indices
    blocks, maxima = block_maxima(rows, block_size)
    kept_blocks = tf.math.top_k(maxima, tf.minimum(k, tf.shape(maxima)[-1])).indices
    entries, columns = gather_blocks(blocks, kept_blocks)
    best = tf.math.top_k(entries, k)
    return best.values, tf.gather(columns, best.indices, batch_dims=1)
