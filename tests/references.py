"""Independent NumPy references used by the tests (float64, no sorting trick)."""

import numpy as np


def _bisected_threshold(z, weight, iterations):
    """tau of each row of `z` with sum(weight(max(z - tau, 0))) = 1, by bisection in
    float64 (the weight of the row's maximum alone is at most 1 within [max - 1, max]),
    and which rows are fully masked (their tau is meaningless)."""
    row_max = z.max(axis=-1)
    masked_row = ~np.isfinite(row_max)
    row_max = np.where(masked_row, 0.0, row_max)
    low, high = row_max - 1.0, row_max  # mass(low) >= 1 >= mass(high) = 0
    for _ in range(iterations):
        tau = 0.5 * (low + high)
        mass = weight(np.maximum(z - tau[..., None], 0)).sum(-1)
        low, high = np.where(mass > 1, tau, low), np.where(mass > 1, high, tau)
    return 0.5 * (low + high), masked_row


def sparsemax_bisection(logits, iterations=100):
    """Sparsemax of each row (last axis) by bisection on tau: sum(max(z - tau, 0)) = 1.

    A different algorithm from the library's sort-and-cumsum: it solves the
    defining equation of the simplex projection directly, in float64. -inf entries
    get 0; a fully masked row gives zeros.
    """
    z = np.asarray(logits, np.float64)
    with np.errstate(invalid="ignore"):
        tau, masked_row = _bisected_threshold(z, lambda excess: excess, iterations)
        # Polish tau on the support found, so ties at the threshold come out exact.
        support = z > tau[..., None]
        tau = (np.where(support, z, 0).sum(-1) - 1.0) / np.maximum(support.sum(-1), 1)
        out = np.maximum(z - tau[..., None], 0)
    out[masked_row] = 0.0
    return out


def entmax15_bisection(logits, iterations=200):
    """1.5-entmax of each row (last axis) by bisection on tau: sum(max(z / 2 - tau, 0)^2)
    = 1, in float64; a different algorithm from the library's sort. -inf entries get 0;
    a fully masked row gives zeros."""
    z = np.asarray(logits, np.float64) / 2
    with np.errstate(invalid="ignore"):
        tau, masked_row = _bisected_threshold(z, np.square, iterations)
        out = np.maximum(z - tau[..., None], 0) ** 2
    out[masked_row] = 0.0
    return out


def softmax(logits):
    """Softmax of each row in float64; -inf entries get 0, a fully masked row zeros."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=-1, keepdims=True)
    shifted = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
    total = shifted.sum(axis=-1, keepdims=True)
    return np.divide(shifted, total, out=np.zeros_like(shifted), where=total > 0)


def layer_norm(x, gamma, beta, epsilon=1e-3):
    mean = x.mean(axis=-1, keepdims=True)
    variance = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def cross_entropy(labels, logits):
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


# An independent float64 reference per attention normalisation.
NORMALIZATION_REFERENCES = {"softmax": softmax, "sparsemax": sparsemax_bisection, "entmax15": entmax15_bisection}
