"""Exact attention over a large database in blocks, never holding `[B, D]`.

`streamed_attention` reads the database's keys block by block inside one graph (standard
TF ops, a `tf.while_loop`), keeping per query only running statistics of fixed size, so
memory is the database plus one `[B, block_size]` block whatever D is:

- softmax: the running maximum logit m, the sum of exp(logit - m), the same sums weighted
  by the values and by the one-hot labels (rescaled by exp(m_old - m_new) when m grows),
  and the top-k logits: one pass, exact.
- sparsemax: one pass keeps the maximum logit of every chunk of 128 keys (`[B, D/128]`).
  The threshold of those maxima is a lower bound of each row's threshold (a subset's
  threshold is at most the row's), so the support lies in the chunks whose maximum
  passes it: their keys are gathered (a few chunks per query), and the `support_k`
  largest of their logits give the threshold, certified exact when the smallest kept
  logit is at or below it. Rows not certified (a support of `support_k` entries or
  more, or more than `MAX_CHUNKS` candidate chunks, e.g. a flat row) are finished by
  Michelot's iteration from the lower bound (each pass over the blocks raises it, and
  it stops exactly at the true threshold), then one more pass for the weighted sums.

Sums are accumulated in another order than the dense path's, so results agree with it to
float32 rounding (not bit for bit); the top prototypes are the same.
"""

import math

import tensorflow as tf

from proto_tf import blockwise
from proto_tf.sparsemax import threshold_from_sorted

DEFAULT_BLOCK_SIZE = 65536  # Rows of keys per block: a [128, 65536] block is 32 MB.
DEFAULT_SUPPORT_K = 256  # Sparsemax: entries kept per query, enough for trained supports.
CHUNK_SIZE = 128  # Sparsemax: keys per chunk, the unit whose maximum the scan keeps.
MAX_CHUNKS = 64  # Sparsemax: candidate chunks gathered per query at most (8192 keys).
_MICHELOT_PASSES = 64
# Dtypes a database may store its keys in. float32 by default; float16 or bfloat16 halve
# the keys' memory, and attention still computes in float32 (keys are cast as read).
KEY_DTYPES = ("float32", "float16", "bfloat16")


def streamed_attention(
    queries: tf.Tensor,
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: tf.Tensor,
    normalization: str,
    num_classes: int,
    top_k: int = 5,
    block_size: int = DEFAULT_BLOCK_SIZE,
    support_k: int = DEFAULT_SUPPORT_K,
) -> dict:
    """Attention of `queries [B, d]` over `keys [D, d]`, `values [D, d_v]`, `labels [D]`
    (logits q k^T / sqrt(d), softmax or sparsemax), without a `[B, D]` tensor.

    Returns `weighted_values [B, d_v]`, `confidence [B]` (Eq. 3) and the `top_k`
    prototypes: `top_weights [B, k]` (descending) and `top_rows [B, k]` (int32 rows of
    the database; entries past a sparse support have weight 0).
    """
    queries, keys, blocks, block_rows = _blocked(queries, keys, block_size)
    values, labels = tf.convert_to_tensor(values, tf.float32), tf.cast(labels, tf.int32)

    def block_logits(i):
        start, end = block_rows(i)
        return tf.matmul(queries, _as_float32(keys[start:end]), transpose_b=True), start, end

    if normalization == "softmax":
        return _softmax(queries, values, labels, num_classes, top_k, blocks, block_logits)
    if normalization == "sparsemax":
        return _sparsemax(
            queries, keys, values, labels, num_classes, top_k, support_k, blocks, block_size, block_logits
        )
    raise ValueError(f"normalization must be softmax or sparsemax; got {normalization!r}.")


def key_scan(
    queries: tf.Tensor, keys: tf.Tensor, block_size: int = DEFAULT_BLOCK_SIZE, keys_first: bool = False
) -> tf.Tensor:
    """Each query's largest logit `q . k / sqrt(d)` over `keys`, by blocks of rows: one
    read of the keys and nothing else, the floor of any exact attention (benchmarks).
    `keys_first` computes each block as `k q^T` instead of `q k^T`."""
    queries, keys, blocks, block_rows = _blocked(queries, keys, block_size)

    def step(i, best):
        start, end = block_rows(i)
        block = _as_float32(keys[start:end])
        if keys_first:
            block_max = tf.reduce_max(tf.matmul(block, queries, transpose_b=True), axis=0)
        else:
            block_max = tf.reduce_max(tf.matmul(queries, block, transpose_b=True), axis=1)
        return (tf.maximum(best, block_max),)

    initial = (tf.fill([tf.shape(queries)[0]], -float("inf")),)
    return _over_blocks(step, initial, blocks)[0]


def _blocked(queries, keys, block_size):
    """`(queries / sqrt(d) in float32, keys, number of blocks, block_rows)`, where
    `block_rows(i)` is block i's `(start, end)` rows of the keys. Keys stay in their
    stored dtype (float32, or float16/bfloat16 to halve the database): each block is
    cast to float32 as it is read, so products and sums accumulate in float32."""
    queries = tf.convert_to_tensor(queries, tf.float32) / math.sqrt(int(queries.shape[-1]))
    keys = tf.convert_to_tensor(keys)
    if keys.dtype.name not in KEY_DTYPES:
        keys = tf.cast(keys, tf.float32)
    size = tf.shape(keys)[0]

    def block_rows(i):
        start = i * block_size
        return start, tf.minimum(start + block_size, size)

    return queries, keys, (size + block_size - 1) // block_size, block_rows


def _as_float32(keys):
    return keys if keys.dtype == tf.float32 else tf.cast(keys, tf.float32)


def _running_top(top_values, top_rows, logits, start, k):
    """The `k` largest of the running top and a block's logits, with their rows."""
    # Exact, from the block's largest chunk maxima: a selection over a few chunks, not
    # over the whole [B, block] (entries past a short block are -inf, never chosen
    # over a database's own rows).
    block_values, block_columns = blockwise.top_k(logits, k)
    block_columns = tf.minimum(block_columns, tf.shape(logits)[1] - 1)
    merged_values = tf.concat([top_values, block_values], axis=1)
    merged_rows = tf.concat([top_rows, block_columns + start], axis=1)
    best = tf.math.top_k(merged_values, k)
    return best.values, tf.gather(merged_rows, best.indices, batch_dims=1)


def _over_blocks(step, state, blocks):
    """`state` after `step(i, *state) -> state` for each block i = 0 .. blocks - 1, in
    one `tf.while_loop`."""
    return tf.while_loop(
        lambda i, *_: i < blocks,
        lambda i, *rest: (i + 1, *step(i, *rest)),
        (tf.constant(0), *state),
        maximum_iterations=blocks,
    )[1:]


def _empty_top(batch, k):
    return tf.fill([batch, k], -float("inf")), tf.fill([batch, k], tf.constant(0, tf.int32))


def _softmax(queries, values, labels, num_classes, top_k, blocks, block_logits):
    batch = tf.shape(queries)[0]

    def step(i, peak, total, weighted, mass, top_values, top_rows):
        logits, start, end = block_logits(i)
        new_peak = tf.maximum(peak, tf.reduce_max(logits, axis=1))
        rescale = tf.exp(peak - new_peak)  # exp(-inf) = 0 before the first block.
        scaled = tf.exp(logits - new_peak[:, None])
        one_hot = tf.one_hot(labels[start:end], num_classes)
        total = total * rescale + tf.reduce_sum(scaled, axis=1)
        weighted = weighted * rescale[:, None] + tf.matmul(scaled, values[start:end])
        mass = mass * rescale[:, None] + tf.matmul(scaled, one_hot)
        top_values, top_rows = _running_top(top_values, top_rows, logits, start, top_k)
        return new_peak, total, weighted, mass, top_values, top_rows

    initial = (
        tf.fill([batch], -float("inf")),
        tf.zeros([batch]),
        tf.zeros([batch, values.shape[-1] or tf.shape(values)[-1]]),
        tf.zeros([batch, num_classes]),
        *_empty_top(batch, top_k),
    )
    peak, total, weighted, mass, top_values, top_rows = _over_blocks(step, initial, blocks)
    return {
        "weighted_values": weighted / total[:, None],
        "confidence": tf.minimum(tf.reduce_max(mass, axis=1) / total, 1.0),
        "top_weights": tf.exp(top_values - peak[:, None]) / total[:, None],
        "top_rows": top_rows,
    }


def _sparsemax(queries, keys, values, labels, num_classes, top_k, support_k, blocks, block_size, block_logits):
    batch = tf.shape(queries)[0]
    size = tf.shape(keys)[0]
    kept = max(support_k, top_k)  # The top prototypes come from the kept entries.
    chunk = min(CHUNK_SIZE, block_size)
    per_block = -(-block_size // chunk)

    # 1. One scan: the maximum logit of every chunk of `chunk` consecutive keys.
    def scan(i, maxima):
        _, chunk_max = blockwise.block_maxima(block_logits(i)[0], chunk)
        padding = [[0, 0], [0, per_block - tf.shape(chunk_max)[1]]]  # The last block's missing chunks.
        return (maxima.write(i, tf.pad(chunk_max, padding, constant_values=-float("inf"))),)

    (maxima,) = _over_blocks(scan, (tf.TensorArray(tf.float32, size=blocks, element_shape=[None, per_block]),), blocks)
    chunk_maxima = tf.reshape(tf.transpose(maxima.stack(), [1, 0, 2]), [batch, -1])  # [B, chunks]
    # 2. A lower bound of the threshold: the threshold of a subset of a row (its chunk
    # maxima) is at most the row's. Only chunks whose maximum passes it can hold
    # support entries.
    shift = tf.reduce_max(chunk_maxima, axis=1, keepdims=True)
    best_maxima = tf.math.top_k(chunk_maxima, tf.minimum(kept, tf.shape(chunk_maxima)[1])).values
    lower = threshold_from_sorted(best_maxima - shift, shift)
    candidates = chunk_maxima > lower
    needed = tf.reduce_max(tf.reduce_sum(tf.cast(candidates, tf.int32), axis=1))

    # 3. The candidate chunks' keys, gathered: their logits hold the whole support.
    def from_chunks():
        chosen = tf.math.top_k(tf.where(candidates, chunk_maxima, -float("inf")), needed).indices
        offsets = (chosen % per_block)[..., None] * chunk + tf.range(chunk)  # [B, m, chunk] in the block.
        rows = (chosen // per_block)[..., None] * block_size + offsets
        valid = tf.reshape((offsets < block_size) & (rows < size), [batch, -1])
        rows = tf.where(valid, tf.reshape(rows, [batch, -1]), 0)
        logits = tf.matmul(queries[:, None, :], _as_float32(tf.gather(keys, rows)), transpose_b=True)[:, 0, :]
        logits = tf.where(valid, logits, -float("inf"))
        width = tf.shape(logits)[1]
        top = tf.math.top_k(logits, tf.minimum(kept, width))
        top_values = tf.pad(top.values, [[0, 0], [0, kept - tf.shape(top.values)[1]]], constant_values=-float("inf"))
        top_rows = tf.pad(tf.gather(rows, top.indices, batch_dims=1), [[0, 0], [0, kept - tf.shape(top.values)[1]]])
        tau = threshold_from_sorted(top_values - top_values[:, :1], top_values[:, :1])
        # Exact when every gathered entry was kept, or the smallest kept is below tau.
        certified = (top_values[:, -1:] <= tau) | (width <= kept)
        return tau, certified, top_values, top_rows

    def too_many_chunks():
        return lower, tf.zeros([batch, 1], tf.bool), *_empty_top(batch, kept)

    tau, certified, top_values, top_rows = tf.cond(needed <= MAX_CHUNKS, from_chunks, too_many_chunks)

    def from_kept():
        weights = tf.maximum(top_values - tau, 0.0)
        weighted = tf.einsum("bk,bkd->bd", weights, tf.gather(values, top_rows))
        mass = tf.einsum("bk,bkc->bc", weights, tf.one_hot(tf.gather(labels, top_rows), num_classes))
        return weighted, mass, tau, top_values[:, :top_k], top_rows[:, :top_k]

    def by_passes():
        # A support wider than the kept entries: Michelot's passes from the lower bound,
        # then one pass for the weighted sums and the top prototypes.
        exact = tf.where(certified, tau, _michelot(tau, blocks, block_logits))

        def accumulate(i, weighted, mass, best_values, best_rows):
            logits, start, end = block_logits(i)
            weights = tf.maximum(logits - exact, 0.0)
            weighted += tf.matmul(weights, values[start:end])
            mass += tf.matmul(weights, tf.one_hot(labels[start:end], num_classes))
            best_values, best_rows = _running_top(best_values, best_rows, logits, start, top_k)
            return weighted, mass, best_values, best_rows

        initial = (
            tf.zeros([batch, values.shape[-1] or tf.shape(values)[-1]]),
            tf.zeros([batch, num_classes]),
            *_empty_top(batch, top_k),
        )
        weighted, mass, best_values, best_rows = _over_blocks(accumulate, initial, blocks)
        return weighted, mass, exact, best_values, best_rows

    weighted, mass, tau, top, rows = tf.cond(tf.reduce_all(certified), from_kept, by_passes)
    return {
        "weighted_values": weighted,
        "confidence": tf.minimum(tf.reduce_max(mass, axis=1), 1.0),
        "top_weights": tf.maximum(top - tau, 0.0),
        "top_rows": rows,
    }


def _michelot(tau, blocks, block_logits):
    """The exact sparsemax threshold from a lower bound `tau [B, 1]`: tau <- (sum of the
    logits above tau - 1) / their count, one pass over the blocks each, until the count
    stops changing (it only falls; in practice a few passes)."""

    def above(threshold):
        def step(i, total, count):
            logits, _, _ = block_logits(i)
            over = logits > threshold
            total += tf.reduce_sum(tf.where(over, logits, 0.0), axis=1, keepdims=True)
            count += tf.reduce_sum(tf.cast(over, tf.float32), axis=1, keepdims=True)
            return total, count

        zeros = tf.zeros_like(threshold)
        return _over_blocks(step, (zeros, zeros), blocks)

    def iterate(n, threshold, done):
        total, count = above(threshold)
        raised = tf.maximum(threshold, (total - 1.0) / tf.maximum(count, 1.0))
        # Stable once the entries above stop changing: the same sum, the same threshold.
        return n + 1, raised, tf.reduce_all(raised == threshold)

    _, tau, _ = tf.while_loop(
        lambda n, threshold, done: tf.logical_not(done),
        iterate,
        (tf.constant(0), tau, tf.constant(False)),
        maximum_iterations=_MICHELOT_PASSES,
    )
    return tau
