"""Calibrated abstention: a confidence threshold chosen on held-out data with a
finite-sample guarantee on the accuracy (or the coverage) of the decisions kept.

The guarantee ("learn then test", Angelopoulos et al. 2021): held-out and future
examples are exchangeable (drawn from the same distribution, as a random validation
split is). For a target accuracy 1 - e, each threshold t of a fixed grid (`THRESHOLDS`,
chosen before any data is seen) is tested against "the error of the decisions with
confidence >= t exceeds e" with the exact one-sided binomial (Clopper-Pearson) bound at
level delta / len(THRESHOLDS) (Bonferroni), and the lowest rejected threshold is chosen:
with probability at least 1 - delta over the held-out draw, every rejected threshold,
hence the chosen one, keeps decisions whose error on new data is at most e. For a
target coverage c, the highest threshold of a finer grid whose share kept has a lower
bound >= c at level delta (the share falls as the threshold rises, so the thresholds are
tested in sequence from the lowest, and stop at the first that fails: no correction).
"""

import dataclasses
import math

import numpy as np

DEFAULT_DELTA = 0.05


def binomial_cdf(successes: int, trials: int, p: float) -> float:
    """P(Binomial(trials, p) <= successes), summed exactly in log space."""
    if p <= 0.0 or successes >= trials:
        return 1.0
    if p >= 1.0:
        return 0.0
    return _cdf(_log_choose(successes, trials), trials, p)


def _log_choose(successes, trials):
    """log C(trials, k) for k = 0..successes, from a table of log factorials."""
    log_factorials = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, trials + 1, dtype=np.float64)))])
    k = np.arange(successes + 1)
    return log_factorials[trials] - log_factorials[k] - log_factorials[trials - k]


def _cdf(log_choose, trials, p):
    k = np.arange(len(log_choose), dtype=np.float64)
    terms = log_choose + k * math.log(p) + (trials - k) * math.log1p(-p)
    top = terms.max()
    return float(min(1.0, math.exp(top) * np.exp(terms - top).sum()))


def upper_bound(failures: int, trials: int, delta: float = DEFAULT_DELTA) -> float:
    """The one-sided Clopper-Pearson upper bound of a rate seen as `failures` in
    `trials`: the largest p with P(Binomial(trials, p) <= failures) >= delta."""
    if trials == 0 or failures >= trials:
        return 1.0
    log_choose = _log_choose(failures, trials)
    low, high = failures / trials, 1.0
    for _ in range(60):  # Bisection: 2^-60 of the unit interval.
        middle = 0.5 * (low + high)
        if _cdf(log_choose, trials, middle) >= delta:
            low = middle
        else:
            high = middle
    return high


def lower_bound(successes: int, trials: int, delta: float = DEFAULT_DELTA) -> float:
    """The one-sided Clopper-Pearson lower bound of a rate seen as `successes` in `trials`."""
    return 1.0 - upper_bound(trials - successes, trials, delta)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A chosen threshold and what it gave on the held-out examples: `coverage` (share
    kept), `accuracy` of the kept ones, and `bound`: the guaranteed accuracy (target
    accuracy) or coverage (target coverage) at level 1 - delta. `threshold` is None when
    no threshold meets the target (then abstaining everywhere is the only safe answer)."""

    target: str  # "accuracy" or "coverage"
    target_value: float
    delta: float
    threshold: float | None
    coverage: float
    accuracy: float | None
    bound: float | None
    examples: int
    table: tuple  # ({threshold, kept, coverage, accuracy, bound}, ...), highest threshold first.

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"table": list(self.table)}


# Thresholds tested (fixed in advance, as the guarantee needs): 0, 0.05, ..., 0.95 and
# the high end at which confident decisions separate. Few, because each test is made at
# level delta / len(THRESHOLDS): a finer grid would cost more in the bound than it gains.
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20)) + (0.99, 0.995, 0.999, 1.0)
# For a target coverage, every test is at level delta (a fixed sequence along a monotone
# share): a fine grid costs nothing.
COVERAGE_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(100)) + (0.995, 0.999, 1.0)


def calibrate(
    confidence: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float | None = None,
    target_coverage: float | None = None,
    delta: float = DEFAULT_DELTA,
) -> Calibration:
    """The lowest threshold of `THRESHOLDS` whose kept decisions meet `target_accuracy`
    with the guarantee of the module docstring, or the highest of `COVERAGE_THRESHOLDS`
    whose share kept meets `target_coverage`. Give exactly one target. Decisions with a confidence >= the
    threshold are kept; `table` lists every threshold tested."""
    if (target_accuracy is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_accuracy and target_coverage.")
    target = "accuracy" if target_accuracy is not None else "coverage"
    value = target_accuracy if target == "accuracy" else target_coverage
    if not 0.0 < value < 1.0:
        raise ValueError(f"target_{target}={value} must be in (0, 1).")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta={delta} must be in (0, 1).")
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or len(confidence) == 0:
        raise ValueError("confidence and correct need one value per held-out example (and at least one).")
    n = len(confidence)
    grid = THRESHOLDS if target == "accuracy" else COVERAGE_THRESHOLDS
    level = delta / len(grid) if target == "accuracy" else delta
    table, passing = [], []
    for threshold in grid:
        kept = confidence >= threshold
        count, good = int(kept.sum()), int(correct[kept].sum())
        if target == "accuracy":
            bound = 1.0 - upper_bound(count - good, count, level) if count else 0.0
        else:
            bound = lower_bound(count, n, level)
        row = {
            "threshold": threshold,
            "kept": count,
            "coverage": count / n,
            "accuracy": good / count if count else None,
            "bound": bound,
        }
        table.append(row)
        if bound >= value:
            passing.append(row)
    if not passing:
        return Calibration(target, value, delta, None, 0.0, None, None, n, tuple(table))
    # Accuracy: the lowest passing threshold (the most kept); coverage: the highest.
    chosen = passing[0] if target == "accuracy" else passing[-1]
    return Calibration(
        target,
        value,
        delta,
        chosen["threshold"],
        chosen["coverage"],
        chosen["accuracy"],
        chosen["bound"],
        n,
        tuple(table),
    )


def at_threshold(confidence: np.ndarray, correct: np.ndarray, threshold: float | None) -> dict:
    """Coverage and accuracy of the decisions kept at `threshold` (None: none kept)."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, bool)
    kept = confidence >= threshold if threshold is not None else np.zeros(len(confidence), bool)
    return {
        "threshold": threshold,
        "examples": int(len(kept)),
        "kept": int(kept.sum()),
        "coverage": float(kept.mean()) if len(kept) else 0.0,
        "accuracy": float(correct[kept].mean()) if kept.any() else None,
    }
