"""Exact attention over a large database in blocks, never holding `[B, D]`.

`streamed_attention` reads the database's keys block by block inside one graph (standard
TF ops, a `tf.while_loop`), keeping per query only running statistics of fixed size, so
memory is the database plus one `[B, block_size]` block whatever D is:

- softmax: the running maximum logit m, the sum of exp(logit - m), the same sums weighted
  by the values and by the one-hot labels (rescaled by exp(m_old - m_new) when m grows),
  and the top-k logits: one pass, exact.
- sparsemax: one pass keeps each query's `support_k` largest logits with their rows; the
  threshold of that subset is certified exact when its smallest kept logit is at or below
  it (no entry outside can reach the support), and the weights, weighted values and
  confidence then come from the kept rows alone. Rows not certified (a support of
  `support_k` entries or more) are finished by Michelot's iteration from that threshold
  (a lower bound of the true one; each pass over the blocks raises it, and it stops
  exactly at the true threshold), then one more pass for the weighted sums.

Sums are accumulated in another order than the dense path's, so results agree with it to
float32 rounding (not bit for bit); the top prototypes are the same.
"""

import math

import tensorflow as tf

from proto_tf.sparsemax import threshold_from_sorted

DEFAULT_BLOCK_SIZE = 65536  # Rows of keys per block: a [128, 65536] block is 32 MB.
DEFAULT_SUPPORT_K = 256  # Sparsemax: entries kept per query, enough for trained supports.
_MICHELOT_PASSES = 64


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
    queries = tf.convert_to_tensor(queries, tf.float32) / math.sqrt(int(queries.shape[-1]))
    keys, values = tf.convert_to_tensor(keys, tf.float32), tf.convert_to_tensor(values, tf.float32)
    labels = tf.cast(labels, tf.int32)
    size = tf.shape(keys)[0]
    blocks = (size + block_size - 1) // block_size

    def block_logits(i):
        start = i * block_size
        end = tf.minimum(start + block_size, size)
        return tf.matmul(queries, keys[start:end], transpose_b=True), start, end

    if normalization == "softmax":
        return _softmax(queries, values, labels, num_classes, top_k, blocks, block_logits)
    if normalization == "sparsemax":
        return _sparsemax(queries, values, labels, num_classes, top_k, support_k, blocks, block_logits)
    raise ValueError(f"normalization must be softmax or sparsemax; got {normalization!r}.")


def _running_top(top_values, top_rows, logits, start, k):
    """The `k` largest of the running top and a block's logits, with their rows."""
    block_top = tf.math.top_k(logits, tf.minimum(k, tf.shape(logits)[1]))
    merged_values = tf.concat([top_values, block_top.values], axis=1)
    merged_rows = tf.concat([top_rows, block_top.indices + start], axis=1)
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


def _sparsemax(queries, values, labels, num_classes, top_k, support_k, blocks, block_logits):
    batch = tf.shape(queries)[0]
    kept = max(support_k, top_k)  # The top prototypes come from the kept entries.

    def keep(i, top_values, top_rows):
        logits, start, _ = block_logits(i)
        return _running_top(top_values, top_rows, logits, start, kept)

    top_values, top_rows = _over_blocks(keep, _empty_top(batch, kept), blocks)
    shift = top_values[:, :1]  # The row maximum.
    tau = threshold_from_sorted(top_values - shift, shift)  # [B, 1]: a lower bound of the true one.
    # Exact when no entry left out can pass the threshold: the smallest kept is below it.
    certified = top_values[:, -1:] <= tau

    def from_kept():
        weights = tf.maximum(top_values - tau, 0.0)
        weighted = tf.einsum("bk,bkd->bd", weights, tf.gather(values, top_rows))
        mass = tf.einsum("bk,bkc->bc", weights, tf.one_hot(tf.gather(labels, top_rows), num_classes))
        return weighted, mass

    def by_passes():
        exact = _michelot(tau, blocks, block_logits)
        exact = tf.where(certified, tau, exact)

        def accumulate(i, weighted, mass):
            logits, start, end = block_logits(i)
            weights = tf.maximum(logits - exact, 0.0)
            weighted += tf.matmul(weights, values[start:end])
            mass += tf.matmul(weights, tf.one_hot(labels[start:end], num_classes))
            return weighted, mass

        initial = (tf.zeros([batch, values.shape[-1] or tf.shape(values)[-1]]), tf.zeros([batch, num_classes]))
        weighted, mass = _over_blocks(accumulate, initial, blocks)
        return weighted, mass, exact

    weighted, mass, tau = tf.cond(tf.reduce_all(certified), lambda: (*from_kept(), tau), by_passes)
    top = top_values[:, :top_k]
    return {
        "weighted_values": weighted,
        "confidence": tf.minimum(tf.reduce_max(mass, axis=1), 1.0),
        "top_weights": tf.maximum(top - tau, 0.0),
        "top_rows": top_rows[:, :top_k],
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
