"""Calibrated abstention: the binomial bounds against closed forms and direct sums, the
threshold choice against a brute-force reading of its table, and the guarantee itself
by simulation on a distribution whose selective accuracy is known exactly."""

import math

import numpy as np
import pytest

from proto_tf import calibration


def test_binomial_cdf_is_the_direct_sum():
    for successes, trials, p in ((0, 1, 0.3), (3, 10, 0.25), (7, 40, 0.1), (20, 60, 0.5)):
        direct = sum(math.comb(trials, k) * p**k * (1 - p) ** (trials - k) for k in range(successes + 1))
        assert calibration.binomial_cdf(successes, trials, p) == pytest.approx(direct, rel=1e-10)


def test_clopper_pearson_bounds_match_closed_forms():
    for trials in (1, 5, 40, 1000):
        for delta in (0.05, 0.01):
            # No failure in n trials: the upper bound solves (1 - p)^n = delta.
            assert calibration.upper_bound(0, trials, delta) == pytest.approx(1 - delta ** (1 / trials), rel=1e-12)
            # All n trials succeed: the lower bound solves p^n = delta.
            assert calibration.lower_bound(trials, trials, delta) == pytest.approx(delta ** (1 / trials), rel=1e-12)
    # One failure in n: P(X <= 1) = (1-p)^n + n p (1-p)^(n-1) = delta at the bound.
    bound = calibration.upper_bound(1, 20, 0.05)
    assert (1 - bound) ** 20 + 20 * bound * (1 - bound) ** 19 == pytest.approx(0.05, rel=1e-9)
    assert calibration.upper_bound(5, 5) == 1.0 and calibration.upper_bound(0, 0) == 1.0


def test_the_threshold_is_the_lowest_whose_bound_meets_the_target():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(size=3000)
    correct = rng.uniform(size=3000) < confidence
    result = calibration.calibrate(confidence, correct, target_accuracy=0.9)
    level = 0.05 / len(calibration.THRESHOLDS)
    for row in result.table:  # Each row recomputed by hand.
        kept = confidence >= row["threshold"]
        assert row["kept"] == kept.sum()
        if not kept.any():
            assert row["accuracy"] is None and row["bound"] == 0.0
            continue
        assert row["accuracy"] == pytest.approx(correct[kept].mean())
        assert row["bound"] == pytest.approx(
            1 - calibration.upper_bound(int((~correct[kept]).sum()), int(kept.sum()), level)
        )
    passing = [row["threshold"] for row in result.table if row["bound"] >= 0.9]
    assert result.threshold == min(passing) and result.bound >= 0.9
    assert result.coverage == pytest.approx(np.mean(confidence >= result.threshold))
    # Selective accuracy here is (1 + t) / 2: 0.9 needs t >= 0.8, and the bound is conservative.
    assert 0.8 <= result.threshold <= 0.95
    coverage = calibration.calibrate(confidence, correct, target_coverage=0.5)
    assert coverage.threshold == max(r["threshold"] for r in coverage.table if r["bound"] >= 0.5)
    row = next(r for r in coverage.table if r["threshold"] == coverage.threshold)
    assert coverage.bound == pytest.approx(calibration.lower_bound(row["kept"], 3000), rel=1e-12)


def test_the_guarantee_holds_on_new_data_by_simulation():
    """Confidence ~ U(0, 1) and P(correct | c) = c: the kept decisions' accuracy at t is
    exactly (1 + t) / 2 and the share kept 1 - t. Over 60 validation draws, the chosen
    threshold misses the target on the population in at most delta of them (binomial
    slack: 9 of 60 would be a 1-in-350 event at delta = 0.05). No threshold (abstain
    on everything) breaks no guarantee, but must be rare at this size."""
    rng = np.random.default_rng(1)
    accuracy_misses = coverage_misses = none_found = 0
    for _ in range(60):
        confidence = rng.uniform(size=1500)
        correct = rng.uniform(size=1500) < confidence
        chosen = calibration.calibrate(confidence, correct, target_accuracy=0.85).threshold
        none_found += chosen is None
        accuracy_misses += chosen is not None and (1 + chosen) / 2 < 0.85
        kept = calibration.calibrate(confidence, correct, target_coverage=0.6).threshold
        coverage_misses += 1 - kept < 0.6
    assert accuracy_misses <= 8 and coverage_misses <= 8 and none_found <= 6


def test_bad_targets_are_refused():
    confidence, correct = np.array([0.9, 0.5]), np.array([True, False])
    with pytest.raises(ValueError, match="exactly one of"):
        calibration.calibrate(confidence, correct)
    with pytest.raises(ValueError, match="target_accuracy=1.2 must be in"):
        calibration.calibrate(confidence, correct, target_accuracy=1.2)
    with pytest.raises(ValueError, match="one value per held-out example"):
        calibration.calibrate(confidence, correct[:1], target_accuracy=0.9)
    # Two examples cannot guarantee 99 %: no threshold, none kept.
    result = calibration.calibrate(confidence, correct, target_accuracy=0.99)
    assert result.threshold is None and result.coverage == 0.0
    assert calibration.at_threshold(confidence, correct, None)["kept"] == 0
