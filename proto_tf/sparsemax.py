"""Exact sparsemax (Martins & Astudillo, 2016) with a closed-form gradient.

sparsemax(z) is the Euclidean projection of z onto the probability simplex:
p_i = max(z_i - tau(z), 0), with tau chosen so that the p_i sum to one. Unlike
softmax it returns exact zeros, which is what makes ProtoAttend's prototypes few.

`keras.ops.sparsemax` in Keras <= 3.15.1 returns wrong values whenever more than
one logit is in the support, so the library uses this implementation only.
"""

import numpy as np
import tensorflow as tf

from proto_tf import blockwise

# Computation dtype: low-precision inputs are upcast, since the cumulative sums
# over thousands of candidates lose the threshold in float16/bfloat16.
_COMPUTE_DTYPE = tf.float32


# Largest logits per row the fast path starts from when rows have no static width.
DEFAULT_TOP_K = 64


def sparsemax(logits: tf.Tensor, axis: int = -1, top_k: int | None = DEFAULT_TOP_K) -> tf.Tensor:
    """Sparsemax of `logits` along `axis`, exact and fast by default.

    Args:
      logits: floating tensor of any rank >= 1. Entries equal to `-inf` are masked:
        they get probability 0. A row whose entries are all `-inf` maps to zeros. A
        row holding NaN or `+inf` maps to NaN everywhere (its gradient too), on
        every path. Large logits are exact: the computation runs on rows shifted by
        their maximum (an offset of 1e30 gives the answer of the unshifted row).
      axis: the axis to normalise over.
      top_k: a speed knob that never changes the result: where rows have no static
        width, the fast path starts from each row's `top_k` largest logits. None
        sorts each whole row (O(n log n)): the reference, slow over long rows.

    The default path never sorts whole rows, eagerly, in a `tf.function` (rows of
    known or unknown width) and under XLA (`jit_compile=True`), where it takes a
    static-shaped form (`sparsemax_threshold_fast`). Outside XLA, rows of a known
    width of 256 or more write no row-sized tensor but the answer
    (`_sparsemax_of_long_rows`): about the cost of one softmax.

    Returns:
      A tensor of the dtype and shape of `logits`, non-negative, each row summing
      to one (or all zeros for a fully masked row).

    Example:
      >>> sparsemax([0.5, 0.4, 0.3]).numpy().round(4)
      array([0.4333, 0.3333, 0.2333], dtype=float32)
    """
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise TypeError(f"sparsemax expects floating logits, got dtype {logits.dtype.name}.")
    rank = logits.shape.rank
    if rank is None or rank == 0:
        raise ValueError(f"sparsemax expects logits of rank >= 1 with a known rank, got shape {logits.shape}.")
    if not -rank <= axis < rank:
        raise ValueError(f"axis={axis} is out of range for logits of rank {rank}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
    axis %= rank

    x = tf.cast(logits, _COMPUTE_DTYPE)
    if axis != rank - 1:
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        x = tf.transpose(x, perm)
    width = x.shape[-1]
    if top_k is not None and width is not None and _bound_block_size(width) is not None and not _in_xla_context():
        probabilities = tf.reshape(_sparsemax_of_long_rows(tf.reshape(x, [-1, width])), tf.shape(x))
    else:
        probabilities = _sparsemax_of_rows(x, top_k)
    if axis != rank - 1:
        probabilities = tf.transpose(probabilities, perm)  # A swap is its own inverse.
    return tf.cast(probabilities, logits.dtype)


def _sparsemax_of_rows(x, top_k):
    """Sparsemax along the last axis of float32 `x`, every entry computed densely: the
    full sort (`top_k` None), XLA's static form and rows of unknown width."""
    # A row holding NaN or +inf has no projection onto the simplex: it maps to NaN
    # (values and gradient) on every path. The threshold is found on a clean copy.
    invalid = tf.reduce_any(tf.logical_or(tf.math.is_nan(x), tf.equal(x, float("inf"))), axis=-1, keepdims=True)
    if top_k is not None and _in_xla_context():
        # XLA's static form cleans and shifts the rows inside each fused pass: a cleaned
        # copy would be a buffer of the logits' size that every pass reads again.
        rows = tf.reshape(x, [-1, x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]])
        tau, shift = _shifted_threshold_static(rows, tf.reshape(invalid, [-1, 1]))
        row_shape = tf.concat([tf.shape(x)[:-1], [1]], 0)
        shift = tf.stop_gradient(tf.reshape(shift, row_shape))
        return _project(x - shift, tf.stop_gradient(tf.reshape(tau, row_shape)), invalid)
    clean = tf.where(invalid, tf.zeros_like(x), x)
    # Everything after this works on rows shifted by their maximum (exact for
    # sparsemax, and x - max is exact in float32): adding the shift back before
    # max(z - tau, 0) would round the answer away for large logits (1e8, 0, 0).
    shift = tf.stop_gradient(_row_shift(tf.reduce_max(clean, axis=-1, keepdims=True)))
    clean = clean - shift
    if top_k is None:
        tau = sparsemax_threshold(clean)
    else:
        tau = sparsemax_threshold_fast(clean, top_k)
    return _project(x - shift, tf.stop_gradient(tau), invalid)


def _sparsemax_of_long_rows(rows):
    """Sparsemax of each row of float32 `rows` `[R, n]` (n >= 256, static), exactly as
    `_sparsemax_of_rows` computes it (bit for bit), at the cost of one written output.

    Over long rows the cost is memory, not arithmetic: every full-size tensor written
    costs about what a whole softmax does. So nothing of the row's size is written but
    the answer: the block maxima (one read) give the row maximum, the NaN/+inf check
    (reductions propagate NaN) and a lower bound of the threshold; only the few blocks
    whose maximum is above the bound can hold the support, and only their entries are
    read again, shifted and projected; the answer is those blocks scattered into zeros.
    """
    width = rows.shape[-1]
    block_size = _divisor_block_size(width, _bound_block_size(width))
    blocks, maxima = blockwise.block_maxima(rows, block_size)
    row_max = tf.reduce_max(maxima, axis=-1, keepdims=True)
    invalid = tf.logical_or(tf.math.is_nan(row_max), tf.equal(row_max, float("inf")))
    shift = tf.stop_gradient(_row_shift(tf.where(invalid, tf.zeros_like(row_max), row_max)))
    # Rows that are NaN in the end are thresholded as fully masked ones, so that no NaN
    # reaches the bound or the sort, and none of their blocks is read again.
    shifted_maxima = tf.where(invalid, tf.fill(tf.shape(maxima), -float("inf")), maxima - shift)
    lower_bound = _subset_lower_bound(shifted_maxima)
    # Each row's own blocks above the bound, as flat (row, block) pairs: a row whose
    # support spreads over many blocks does not make every row read as many.
    pairs = tf.where(shifted_maxima > lower_bound)
    pair_rows = pairs[:, 0]
    entries = tf.gather_nd(blocks, pairs)  # [K, block_size]
    # The same arithmetic as the dense path's x - shift.
    shifted = entries - tf.gather(shift, pair_rows)
    above = shifted > tf.gather(lower_bound, pair_rows)
    candidates = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(shifted, above),
        tf.boolean_mask(tf.broadcast_to(pair_rows[:, None], tf.shape(above, out_type=tf.int64)), above),
        nrows=tf.shape(rows, out_type=tf.int64)[0],
    )
    # At least one entry per row, so that a fully masked row still has a (-inf) one.
    candidates = candidates.to_tensor(
        default_value=-float("inf"),
        shape=tf.stack([tf.shape(rows, out_type=tf.int64)[0], tf.maximum(tf.reduce_max(candidates.row_lengths()), 1)]),
    )
    tau = tf.stop_gradient(sparsemax_threshold(candidates))
    return _project_blocks(rows, tf.nn.relu(shifted - tf.gather(tau, pair_rows)), pairs, invalid, block_size)


def _divisor_block_size(width, preferred):
    """A block size near `preferred` that divides `width`, so that the rows need no
    padded copy; `preferred` itself (padded) when none between its half and double does."""
    for size in (*range(preferred, preferred // 2 - 1, -1), *range(preferred + 1, 2 * preferred + 1)):
        if width % size == 0:
            return size
    return preferred


def _project_blocks(rows, values, pairs, invalid, block_size):
    """`[R, n]` zeros holding `values` `[K, block_size]`, the entries of the blocks
    `pairs` `[K, 2]` (row, block) (entries past the row's end hold zeros), NaN in the
    rows where `invalid`; with sparsemax's exact gradient with respect to `rows`."""

    @tf.custom_gradient
    def project(rows):
        num_rows, width = tf.shape(rows, out_type=tf.int64)[0], rows.shape[-1]
        num_blocks = -(-width // block_size)
        probabilities = tf.scatter_nd(pairs, values, tf.stack([num_rows, num_blocks, block_size]))
        probabilities = tf.reshape(probabilities, [num_rows, num_blocks * block_size])
        if num_blocks * block_size != width:
            # A copy: where no block size near the preferred one divides the width, the
            # padded answer is cut (cheaper than scattering entry by entry, whose cost
            # grows with the support's spread).
            probabilities = probabilities[:, :width]
        probabilities = tf.cond(
            tf.reduce_any(invalid),
            lambda: tf.where(invalid, tf.constant(float("nan")), probabilities),
            lambda: probabilities,
        )

        def grad(upstream):
            return _sparsemax_gradient(upstream, probabilities, invalid)

        return probabilities, grad

    return project(rows)


def threshold_from_sorted(sorted_desc: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """tau and the support size from logits sorted in descending order, already
    shifted by `shift` (the row maximum). Works on any prefix of the sorted row."""
    cumulative = tf.cumsum(sorted_desc, axis=-1)
    ranks = tf.cast(tf.range(1, tf.shape(sorted_desc)[-1] + 1), sorted_desc.dtype)
    # k is in the support iff 1 + k * z_(k) > sum_{j <= k} z_(j); the condition holds
    # for a prefix of the sorted order, so the support size is its count. -inf
    # entries never satisfy it.
    in_support = ranks * sorted_desc > cumulative - 1.0
    support_size = tf.reduce_sum(tf.cast(in_support, tf.int32), axis=-1, keepdims=True)
    cumulative_at_support = tf.gather(
        cumulative, tf.maximum(support_size - 1, 0), batch_dims=sorted_desc.shape.rank - 1
    )
    tau = (cumulative_at_support - 1.0) / tf.cast(tf.maximum(support_size, 1), sorted_desc.dtype)
    masked_row = tf.fill(tf.shape(tau), tf.constant(float("inf"), sorted_desc.dtype))
    return tf.where(support_size > 0, tau + shift, masked_row)


def _row_shift(row_max):
    # Shifting by the row maximum is exact for sparsemax and keeps the cumulative
    # sums small; a fully masked row has max -inf and is shifted by 0 instead.
    return tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))


def sparsemax_threshold(logits: tf.Tensor) -> tf.Tensor:
    """The threshold tau of sparsemax along the last axis, shape `[..., 1]`, by a
    full sort. `sparsemax(z) = max(z - tau, 0)`; rows that are entirely `-inf` get
    `+inf`, so every output of such a row is 0. `logits` must be float32."""
    shift = _row_shift(tf.reduce_max(logits, axis=-1, keepdims=True))
    return threshold_from_sorted(tf.sort(logits - shift, axis=-1, direction="DESCENDING"), shift)


def sparsemax_threshold_fast(logits: tf.Tensor, top_k: int = DEFAULT_TOP_K) -> tf.Tensor:
    """The threshold of `sparsemax_threshold` without sorting whole rows.

    In a `tf.function` or eagerly, shapes may follow the data: rows of known width
    are cut to the entries above a sort-free lower bound of the threshold
    (`_support_candidates`), which are sorted; rows of unknown width start from
    their `top_k` largest logits and double k until certified (the (k+1)-th largest
    at or below the threshold found). Both give the full sort's threshold, bit for
    bit.

    Under XLA, which needs static shapes, `_threshold_static` runs instead: only
    reductions, exact up to float32 rounding of the threshold's sum.
    """
    width = logits.shape[-1]
    in_xla = _in_xla_context()
    if width is None and not in_xla:
        return _threshold_by_doubling(logits, top_k)
    rows = tf.reshape(logits, [-1, width if width is not None else tf.shape(logits)[-1]])
    if in_xla:
        tau = _threshold_static(rows)
    else:
        tau = sparsemax_threshold(_support_candidates(rows))
    return tf.reshape(tau, tf.concat([tf.shape(logits)[:-1], [1]], 0))


def _in_xla_context() -> bool:
    # How TensorFlow's own ops choose an XLA-friendly form (e.g. array_grad.py);
    # true inside `tf.function(jit_compile=True)` and Keras' `jit_compile`.
    from tensorflow.python.framework import ops  # pylint: disable=g-direct-tensorflow-import
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())


# Rows this long (a database of 8192 candidates or more) are reduced block-wise.
_MIN_BLOCKED_LENGTH = 64 * blockwise.DEFAULT_BLOCK_SIZE
# Rows of 256 to 8191 entries are cut to blocks of 16: the bound's passes then run
# over a sixteenth of the row.
_MIN_SHORT_BLOCKED_LENGTH = 256
_SHORT_ROW_BLOCK_SIZE = 16


def _bound_block_size(width):
    """Blocks whose maxima give the lower bound of the threshold for rows of `width`
    entries (None: unknown, taken as long); None for rows short enough to use whole."""
    if width is not None and width < _MIN_SHORT_BLOCKED_LENGTH:
        return None
    if width is not None and width < _MIN_BLOCKED_LENGTH:
        return _SHORT_ROW_BLOCK_SIZE
    return blockwise.DEFAULT_BLOCK_SIZE


def _threshold_static(rows):
    """The exact threshold `[R, 1]` of each row of `rows` `[R, n]` with static shapes.

    Michelot's iteration: from a lower bound t, set t to (sum of the entries above t
    - 1) / (their count). From a lower bound it rises monotonically to the
    threshold; it has arrived when every entry that was above t is still above the
    new t (the set no longer changes). Count, sum and that check are one fused pass
    per step. It starts from the bound `_support_candidates` uses (from the block
    maxima of rows of 256 entries or more), usually a few steps from the threshold.
    """
    tau, shift = _shifted_threshold_static(rows)
    return tau + shift


def _shifted_threshold_static(rows, invalid=None):
    """`_threshold_static`'s threshold as `(tau, shift)`: tau of the rows shifted by
    `shift` (their maximum; 0 where not finite). Rows where `invalid` `[R, 1]` is true
    (NaN or +inf) are thresholded as zeros, inside each pass."""
    block_size = _bound_block_size(rows.shape[-1])
    subset = rows if block_size is None else blockwise.block_maxima(rows, block_size)[1]
    if invalid is not None:
        subset = tf.where(invalid, tf.zeros_like(subset), subset)
    row_max = tf.reduce_max(subset, axis=-1, keepdims=True)  # The block maxima's is the row's.
    shift = _row_shift(row_max)
    # Shifted entries above t are in [-1, 0], so the sums are well-conditioned; the
    # shift is applied inside each pass, not stored as another copy of the rows. The
    # bound is found on the shifted subset: shifting it back and forth would round it
    # at large offsets (1e8), and a start above the threshold would end wrong.
    t0 = _subset_lower_bound(subset - shift)  # +inf: fully masked.

    def step(t, done):
        shifted = rows - shift
        if invalid is not None:
            shifted = tf.where(invalid, tf.zeros_like(shifted), shifted)
        above = shifted > t
        count = tf.reduce_sum(tf.cast(above, rows.dtype), axis=-1, keepdims=True)
        total = tf.reduce_sum(tf.where(above, shifted, 0.0), axis=-1, keepdims=True)
        lowest_above = tf.reduce_min(tf.where(above, shifted, float("inf")), axis=-1, keepdims=True)
        # max(): rounding must not move an iterate down (the set could then grow).
        new_t = tf.where(count > 0, tf.maximum(t, (total - 1.0) / tf.maximum(count, 1.0)), t)
        # A row with nothing above t (fully masked) has arrived too.
        return new_t, tf.reduce_all(tf.logical_or(lowest_above > new_t, count == 0))

    t, _ = tf.while_loop(lambda t, done: tf.logical_not(done), step, (t0, tf.constant(False)))
    return t, shift


def _support_candidates(rows):
    """Few entries of each row of `rows` `[R, n]` that have the row's threshold.

    The threshold of any subset of a row is a lower bound of the row's threshold
    (dropping entries can only lower it). Entries at or below such a bound are
    outside the support, and dropping them leaves the threshold unchanged. Short
    rows take the bound from all their entries; longer rows from their block maxima
    (blocks of 16 below 8192 entries, of 128 above), and only blocks whose maximum
    is above it are searched.

    Returns:
      `[R, m]`: each row's entries above the bound, padded with `-inf` (m >= 1).
      They are the first entries of the row in sorted order, so the threshold
      computed from them is the one computed from the whole row, bit for bit.
    """
    block_size = _bound_block_size(rows.shape[-1])
    if block_size is None:
        entries, lower_bound = rows, _subset_lower_bound(rows)
    else:
        blocks, maxima = blockwise.block_maxima(rows, block_size)
        lower_bound = _subset_lower_bound(maxima)
        needed = tf.reduce_sum(tf.cast(maxima > lower_bound, tf.int32), axis=-1)
        # At least one block, so that a fully masked row still has a (-inf) entry.
        kept = tf.math.top_k(maxima, tf.maximum(tf.reduce_max(needed), 1)).indices
        entries = blockwise.gather_blocks(blocks, kept)[0]
    candidates = tf.ragged.boolean_mask(entries, entries > lower_bound)
    width = tf.maximum(tf.reduce_max(candidates.row_lengths()), 1)
    return candidates.to_tensor(
        default_value=-float("inf"), shape=tf.stack([tf.cast(tf.shape(rows)[0], tf.int64), width])
    )


def _subset_lower_bound(subset, iterations=4):
    """A lower bound of the sparsemax threshold of the rows that hold `subset`
    (`[R, m]`), without sorting.

    From t = max - 1, each step sets t to the threshold of {z > t} as if that were
    the support, (sum - 1) / count: Michelot's iteration, which rises toward the
    subset's threshold and never passes it (the threshold of any set of entries is
    at most the row's). A margin covers float32 rounding of the sums, so the bound
    stays a bound; it may be loose, never too high.
    """
    row_max = tf.reduce_max(subset, axis=-1, keepdims=True)
    shift = _row_shift(row_max)
    shifted = subset - shift  # Entries above t are in [-1, 0]: sums are well-conditioned.
    t = tf.fill(tf.shape(row_max), tf.constant(-1.0, subset.dtype))
    for _ in range(iterations):
        above = shifted > t
        count = tf.reduce_sum(tf.cast(above, subset.dtype), axis=-1, keepdims=True)
        total = tf.reduce_sum(tf.where(above, shifted, tf.zeros_like(shifted)), axis=-1, keepdims=True)
        t = tf.where(count > 0, (total - 1.0) / tf.maximum(count, 1.0), t)
    # The mean of `count` terms in [-1, 0] is off by at most count * eps.
    margin = 2.0 * tf.maximum(count, 1.0) * np.finfo(np.float32).eps
    bound = t - margin + shift
    # A fully masked row: no entry is above any bound.
    return tf.where(tf.math.is_finite(row_max), bound, tf.fill(tf.shape(bound), float("inf")))


def _threshold_by_doubling(logits, initial_k):
    """`sparsemax_threshold_top_k` over whole rows."""
    num_logits = tf.shape(logits)[-1]
    k = tf.minimum(tf.constant(initial_k, tf.int32), num_logits)

    def threshold_and_certified(k):
        # One extra logit to check the (k+1)-th against the threshold.
        top = tf.math.top_k(logits, k=tf.minimum(k + 1, num_logits), sorted=True).values
        shift = _row_shift(top[..., :1])
        tau = threshold_from_sorted(top[..., :k] - shift, shift)
        tau = tf.ensure_shape(tau, logits.shape[:-1].concatenate([1]))
        next_is_out = top[..., -1:] <= tau
        certified = tf.logical_or(k >= num_logits, tf.reduce_all(next_is_out))
        return tau, certified

    tau, certified = threshold_and_certified(k)

    def grow(k, tau, certified):
        k = tf.minimum(2 * k, num_logits)
        return (k, *threshold_and_certified(k))

    _, tau, _ = tf.while_loop(
        lambda k, tau, certified: tf.logical_not(certified),
        grow,
        (k, tau, certified),
        shape_invariants=(k.shape, tau.shape, certified.shape),
    )
    return tau


@tf.custom_gradient
def _project(logits, tau, invalid):
    """max(logits - tau, 0) for float32 logits, with sparsemax's exact gradient;
    NaN (values and gradient) in the rows where `invalid` `[..., 1]` is true.

    `tau` must be sparsemax's threshold of `logits`: the gradient treats it as the
    function of the logits it is (its own gradient flows through this formula).
    """
    # Masked entries stay at 0: -inf - tau is -inf, also for the +inf threshold of a
    # fully masked row.
    probabilities = tf.where(invalid, tf.constant(float("nan"), logits.dtype), tf.nn.relu(logits - tau))

    def grad(upstream):
        return _sparsemax_gradient(upstream, probabilities, invalid), tf.zeros_like(tau), None

    return probabilities, grad


def _sparsemax_gradient(upstream, probabilities, invalid):
    """The gradient of sparsemax with respect to its logits, given its output."""
    # The Jacobian is diag(s) - s s^T / |s| with s the support indicator: on the
    # support, the upstream gradient minus its mean over the support.
    support = tf.cast(probabilities > 0, upstream.dtype)
    support_size = tf.reduce_sum(support, axis=-1, keepdims=True)
    support_mean = tf.math.divide_no_nan(tf.reduce_sum(upstream * support, axis=-1, keepdims=True), support_size)
    return tf.where(invalid, tf.constant(float("nan"), upstream.dtype), support * (upstream - support_mean))
