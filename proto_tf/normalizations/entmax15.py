"""1.5-entmax attention (Peters, Niculae & Martins, 2019): w = max(l / 2 - tau, 0)^2, with
tau such that the weights sum to one. Sparse like sparsemax (exact zeros, so few
prototypes), smoother like softmax (weights fall off quadratically at the threshold, and
the gradient is continuous there).

The threshold is exact by sorting: over the entries x_(1) >= x_(2) >= ... of x = l / 2,
the k-th prefix's threshold is tau_k = mean_k - sqrt((1 - k var_k) / k) (the smaller root
of sum_{j <= k} (x_(j) - tau)^2 = 1), and the support is the prefixes with tau_k <=
x_(k). The dense path first tries each row's `top_k` largest entries, which certify the
threshold when their own support leaves the k-th out, and sorts whole rows otherwise.
"""

import numpy as np
import tensorflow as tf

from proto_tf.normalizations.base import register
from proto_tf.normalizations.thresholded import ThresholdedNormalization

DEFAULT_TOP_K = 256  # Largest entries per row the dense path tries first.


def entmax15(logits: tf.Tensor, top_k: int | None = DEFAULT_TOP_K) -> tf.Tensor:
    """1.5-entmax of float `logits` over the last axis (float32 inside), differentiable.

    `-inf` entries get 0 and a row of only `-inf` gives zeros; a row holding NaN or
    `+inf` gives NaN. `top_k` never changes the result: rows whose support fits in their
    `top_k` largest entries skip the full sort (None: always sort).

    Example:
      >>> entmax15([[1.0, 0.0, -1.0]]).numpy().round(4)
      array([[0.8307, 0.1693, 0.    ]], dtype=float32)
    """
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise TypeError(f"entmax15 expects floating logits, got dtype {logits.dtype.name}.")
    if logits.shape.rank is None or logits.shape.rank == 0:
        raise ValueError(f"entmax15 expects logits of rank >= 1 with a known rank, got shape {logits.shape}.")
    return tf.cast(_entmax15(tf.cast(logits, tf.float32), top_k), logits.dtype)


def _entmax15(z, top_k):
    @tf.custom_gradient
    def forward(z):
        row_max = tf.reduce_max(z, axis=-1, keepdims=True)
        shift = tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))
        x = (z - shift) / 2.0
        width = z.shape[-1]
        if top_k is not None and (width is None or width > top_k):
            tau = _threshold_from_top(x, top_k)
        else:
            tau = _sorted_threshold(tf.sort(x, axis=-1, direction="DESCENDING"))
        s = tf.maximum(x - tau, 0.0)
        # NaN or +inf anywhere in a row makes the whole row NaN, as sparsemax does.
        broken = tf.reduce_any(tf.math.is_nan(z) | (z == float("inf")), axis=-1, keepdims=True)
        s = tf.where(broken, tf.constant(float("nan")), s)

        def grad(upstream):
            # d w / d l = diag(s) - s s^T / sum(s), with s = sqrt(w) (the 1/2 of x = l / 2
            # cancels the 2 of d (x - tau)^2).
            weighted = upstream * s
            total = tf.reduce_sum(s, axis=-1, keepdims=True)
            return weighted - s * tf.math.divide_no_nan(tf.reduce_sum(weighted, axis=-1, keepdims=True), total)

        return s * s, grad

    return forward(z)


def _threshold_from_top(x, top_k):
    """tau from each row's `top_k` largest entries where they hold the support of every
    row (the k-th outside their own support: every entry past it is at most the k-th),
    from a full sort otherwise."""
    k = tf.minimum(top_k, tf.shape(x)[-1])
    top = tf.math.top_k(x, k).values
    tau = _sorted_threshold(top)
    certified = tf.reduce_all((top[..., -1:] <= tau) | (k == tf.shape(x)[-1]))
    return tf.cond(certified, lambda: tau, lambda: _sorted_threshold(tf.sort(x, axis=-1, direction="DESCENDING")))


def _prefix_thresholds(rank, c1, c2):
    mean = c1 / rank
    delta = (1.0 - (c2 - c1 * mean)) / rank
    return mean - tf.sqrt(tf.maximum(delta, 0.0))


def _sorted_threshold(sorted_desc):
    """tau `[..., 1]` of rows of x sorted in descending order (-inf entries allowed; a
    row of only -inf gives +inf)."""
    finite = tf.math.is_finite(sorted_desc)
    z = tf.where(finite, sorted_desc, 0.0)
    rank = tf.cast(tf.range(1, tf.shape(z)[-1] + 1), z.dtype)
    tau_k = _prefix_thresholds(rank, tf.cumsum(z, axis=-1), tf.cumsum(z * z, axis=-1))
    size = tf.reduce_sum(tf.cast((tau_k <= sorted_desc) & finite, tf.int32), axis=-1, keepdims=True)
    tau = tf.gather(tau_k, tf.maximum(size - 1, 0), batch_dims=sorted_desc.shape.rank - 1)
    return tf.where(size > 0, tau, tf.constant(float("inf"), z.dtype))


class Entmax15(ThresholdedNormalization):
    """1.5-entmax: see the module's docstring."""

    name = "entmax15"
    settings_of = "sparsemax"  # Not in the paper: it trains with sparsemax's settings.
    scale = 0.5
    needs_squares = True

    def dense(self, logits: tf.Tensor, top_k: int | None = DEFAULT_TOP_K) -> tf.Tensor:
        return entmax15(logits, top_k=DEFAULT_TOP_K if top_k is not None else None)

    def weights_of(self, excess: tf.Tensor) -> tf.Tensor:
        return excess * excess

    def sorted_threshold(self, sorted_desc: tf.Tensor) -> tf.Tensor:
        return _sorted_threshold(sorted_desc)

    def prefix_thresholds(self, rank: tf.Tensor, c1: tf.Tensor, c2: tf.Tensor) -> tf.Tensor:
        return _prefix_thresholds(rank, c1, c2)

    def prefix_in_support(self, rank: tf.Tensor, x: tf.Tensor, c1: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
        return tau <= x

    def pass_step(self, tau: tf.Tensor, count: tf.Tensor, s1: tf.Tensor, s2: tf.Tensor) -> tf.Tensor:
        # Newton's step on g(tau) = sum over x > tau of (x - tau)^2 - 1, convex and
        # decreasing: from below the root it stays below it and converges quadratically.
        excess_sum = s1 - count * tau
        value = s2 - 2.0 * tau * s1 + count * tau * tau - 1.0
        return tau + tf.math.divide_no_nan(value, 2.0 * excess_sum)

    def numpy_threshold(self, ordered: np.ndarray) -> np.ndarray:
        finite = np.isfinite(ordered)
        z = np.where(finite, ordered, 0.0)
        rank = np.arange(1, ordered.shape[-1] + 1)
        c1, c2 = np.cumsum(z, axis=-1), np.cumsum(z * z, axis=-1)
        mean = c1 / rank
        tau_k = mean - np.sqrt(np.maximum((1.0 - (c2 - c1 * mean)) / rank, 0.0))
        size = ((tau_k <= ordered) & finite).sum(axis=-1, keepdims=True)
        at_size = np.take_along_axis(tau_k, np.maximum(size - 1, 0), axis=-1)
        return np.where(size > 0, at_size, np.inf)

    def numpy_weights_of(self, excess: np.ndarray) -> np.ndarray:
        return excess * excess


ENTMAX15 = register(Entmax15())
