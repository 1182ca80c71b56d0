"""Exact sparsemax (Martins & Astudillo, 2016) with a closed-form gradient.

sparsemax(z) is the Euclidean projection of z onto the probability simplex:
p_i = max(z_i - tau(z), 0), with tau chosen so that the p_i sum to one. Unlike
softmax it returns exact zeros, which is what makes ProtoAttend's prototypes few.

`keras.ops.sparsemax` in Keras <= 3.15.1 returns wrong values whenever more than
one logit is in the support, so the library uses this implementation only.
"""

import tensorflow as tf

# Computation dtype: low-precision inputs are upcast, since the cumulative sums
# over thousands of candidates lose the threshold in float16/bfloat16.
_COMPUTE_DTYPE = tf.float32


def sparsemax(logits, axis=-1):
    """Sparsemax of `logits` along `axis`.

    Args:
      logits: floating tensor of any rank >= 1. Entries equal to `-inf` are masked:
        they get probability 0. A row whose entries are all `-inf` maps to zeros.
      axis: the axis to normalise over.

    Returns:
      A tensor of the dtype and shape of `logits`, non-negative, each row summing
      to one (or all zeros for a fully masked row).

    Example:
      >>> sparsemax([0.5, 0.4, 0.3]).numpy().round(4)
      array([0.4333, 0.3333, 0.2333], dtype=float32)
    """
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise TypeError(
            f"sparsemax expects floating logits, got dtype {logits.dtype.name}."
        )
    rank = logits.shape.rank
    if rank is None or rank == 0:
        raise ValueError(
            f"sparsemax expects logits of rank >= 1 with a known rank, got shape "
            f"{logits.shape}."
        )
    if not -rank <= axis < rank:
        raise ValueError(f"axis={axis} is out of range for logits of rank {rank}.")
    axis %= rank

    x = tf.cast(logits, _COMPUTE_DTYPE)
    if axis != rank - 1:
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        x = tf.transpose(x, perm)
    probabilities = _sparsemax_last_axis(x)
    if axis != rank - 1:
        probabilities = tf.transpose(probabilities, perm)  # A swap is its own inverse.
    return tf.cast(probabilities, logits.dtype)


def sparsemax_threshold(logits):
    """The threshold tau of sparsemax along the last axis, shape `[..., 1]`.

    `sparsemax(z) = max(z - tau, 0)`. Rows that are entirely `-inf` get `+inf`, so
    that every output of such a row is 0. `logits` must be float32.
    """
    row_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    # Shifting by the row maximum is exact for sparsemax and keeps the cumulative
    # sums small; a fully masked row has max -inf and is shifted by 0 instead.
    shift = tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))
    shifted = logits - shift
    sorted_desc = tf.sort(shifted, axis=-1, direction="DESCENDING")
    cumulative = tf.cumsum(sorted_desc, axis=-1)
    ranks = tf.cast(tf.range(1, tf.shape(logits)[-1] + 1), logits.dtype)
    # k is in the support iff 1 + k * z_(k) > sum_{j <= k} z_(j); the condition holds
    # for a prefix of the sorted order, so the support size is its count. -inf
    # entries never satisfy it.
    in_support = ranks * sorted_desc > cumulative - 1.0
    support_size = tf.reduce_sum(tf.cast(in_support, tf.int32), axis=-1, keepdims=True)
    cumulative_at_support = tf.gather(
        cumulative, tf.maximum(support_size - 1, 0), batch_dims=logits.shape.rank - 1
    )
    tau = (cumulative_at_support - 1.0) / tf.cast(tf.maximum(support_size, 1), logits.dtype)
    masked_row = tf.fill(tf.shape(tau), tf.constant(float("inf"), logits.dtype))
    return tf.where(support_size > 0, tau + shift, masked_row)


@tf.custom_gradient
def _sparsemax_last_axis(logits):
    """Sparsemax over the last axis of float32 `logits`, with its exact gradient."""
    tau = sparsemax_threshold(logits)
    # -inf - (+inf) is NaN, so masked entries are zeroed explicitly.
    probabilities = tf.where(
        logits > tau, logits - tau, tf.zeros_like(logits)
    )

    def grad(upstream):
        # The Jacobian is diag(s) - s s^T / |s| with s the support indicator:
        # on the support, the upstream gradient minus its mean over the support.
        support = tf.cast(probabilities > 0, upstream.dtype)
        support_size = tf.reduce_sum(support, axis=-1, keepdims=True)
        support_mean = tf.math.divide_no_nan(
            tf.reduce_sum(upstream * support, axis=-1, keepdims=True), support_size
        )
        return support * (upstream - support_mean)

    return probabilities, grad
