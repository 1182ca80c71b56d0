import numpy as np
import pytest

from proto_tf import metrics


def _random_weights(rng, batch, candidates, sparse=True):
    weights = rng.random((batch, candidates))
    if sparse:
        weights[rng.random(weights.shape) < 0.7] = 0.0
        weights[:, 0] += 1e-3  # Keep every row non-empty.
    return (weights / weights.sum(-1, keepdims=True)).astype(np.float32)


def test_confidence_matches_brute_force():
    rng = np.random.default_rng(0)
    weights = _random_weights(rng, 200, 30)
    labels = rng.integers(0, 4, 30)
    got = metrics.confidence(weights, labels, 4).numpy()
    for row, value in zip(weights, got):
        per_class = [sum(w for w, y in zip(row, labels) if y == m) for m in range(4)]
        assert abs(value - max(per_class)) < 1e-6


def test_confidence_hand_cases():
    labels = np.array([0, 0, 1, 2])
    weights = np.array([[0.5, 0.5, 0, 0], [0.2, 0.2, 0.6, 0], [0.25, 0.25, 0.25, 0.25]], np.float32)
    np.testing.assert_allclose(metrics.confidence(weights, labels, 3), [1.0, 0.6, 0.5])


def test_prototype_counts_match_brute_force():
    rng = np.random.default_rng(1)
    weights = _random_weights(rng, 300, 25)
    thresholds = (0.5, 0.9, 0.95)
    got = metrics.prototype_counts(weights, thresholds).numpy()
    for row, counts in zip(weights, got):
        for threshold, count in zip(thresholds, counts):
            expected = next(
                k for k in range(1, len(row) + 1) if np.sort(row)[::-1][:k].sum(dtype=np.float32) >= threshold
            )
            assert count == expected


def test_prototype_counts_hand_case_and_medians():
    weights = np.array([[0.6, 0.3, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(metrics.prototype_counts(weights), [[1, 2, 3], [2, 4, 4], [1, 1, 1]])
    assert metrics.median_prototype_counts(weights) == {0.5: 1.0, 0.9: 2.0, 0.95: 3.0}


def test_unreachable_threshold_counts_every_candidate():
    np.testing.assert_array_equal(metrics.prototype_counts(np.zeros([1, 7]), (0.5,)), [[7]])


def test_coverage_curve_hand_case():
    confidence = np.array([0.9, 0.8, 0.6, 0.5, 0.3])
    correct = np.array([True, True, False, True, False])
    curve = metrics.coverage_curve(confidence, correct, [0.0, 0.55, 0.85, 0.95])
    assert [c["kept"] for c in curve] == [1.0, 0.6, 0.2, 0.0]
    assert curve[0]["accuracy"] == 0.6 and abs(curve[1]["accuracy"] - 2 / 3) < 1e-12
    assert curve[2]["accuracy"] == 1.0 and curve[3]["accuracy"] is None
    assert metrics.fraction_above(confidence, [0.5, 0.85, 1.0]) == [0.8, 0.2, 0.0]


def test_accuracy_when_keeping_the_most_confident():
    confidence = np.array([0.9, 0.8, 0.6, 0.5, 0.3])
    correct = np.array([True, True, False, True, False])
    assert metrics.accuracy_when_keeping(confidence, correct, [1.0, 0.6, 0.4, 0.01]) == {
        1.0: 0.6,
        0.6: 2 / 3,
        0.4: 1.0,
        0.01: 1.0,
    }


def _pairwise_auc(scores, positives):
    """Brute-force reference: the share of (positive, negative) pairs ordered right,
    ties counting one half."""
    pos, neg = scores[positives], scores[~positives]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_counting_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(5):
        scores = rng.integers(0, 7, 300) / 7.0  # Many ties.
        positives = rng.random(300) < 0.3 + 0.1 * trial
        assert np.isclose(metrics.roc_auc(scores, positives), _pairwise_auc(scores, positives), rtol=1e-12)
    assert metrics.roc_auc([0.1, 0.9], [False, True]) == 1.0
    assert metrics.roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert metrics.roc_auc([0.3, 0.4], [True, True]) is None


def test_auc_curve_keeps_confident_examples():
    rng = np.random.default_rng(1)
    scores, positives = rng.random(200), rng.random(200) < 0.4
    confidence = rng.random(200)
    curve = metrics.auc_curve(confidence, scores, positives, [0.0, 0.5, 1.01])
    assert curve[0]["kept"] == 1.0 and curve[0]["auc"] == metrics.roc_auc(scores, positives)
    kept = confidence >= 0.5
    assert curve[1]["kept"] == kept.mean()
    assert np.isclose(curve[1]["auc"], _pairwise_auc(scores[kept], positives[kept]))
    assert curve[2] == {"threshold": 1.01, "kept": 0.0, "auc": None}


def test_confidence_never_exceeds_one():
    # Weights that sum to 1 + rounding: the confidence stays a share.
    weights = np.full([1, 3], np.float32(1 / 3) * np.float32(1.0000005), np.float32)
    assert float(metrics.confidence(weights, np.zeros(3, np.int32), 2)[0]) == 1.0


def attention_hub(weights):
    statistics = metrics.attention_statistics(weights)
    return statistics["distinct_top_share"], statistics["top3_weight_share"]


def test_attention_hub_signs_against_hand_counts():
    # Every query's weight on candidate 2: one distinct top among 4 queries, all weight on it.
    hub = np.zeros((4, 10), np.float32)
    hub[:, 2] = 1.0
    distinct, top3 = attention_hub(hub)
    assert float(distinct) == 0.25 and float(top3) == 1.0
    # Each query on its own candidate: 4 distinct tops, the 3 most-weighted hold 3 of 4.
    spread = np.eye(4, 10, dtype=np.float32)
    distinct, top3 = attention_hub(spread)
    assert float(distinct) == 1.0 and float(top3) == pytest.approx(0.75)
    # Mixed rows, against NumPy.
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(12), size=6).astype(np.float32)
    distinct, top3 = attention_hub(weights)
    assert float(distinct) == len(set(weights.argmax(1))) / 6
    assert float(top3) == pytest.approx(np.sort(weights.sum(0))[-3:].sum() / weights.sum(), rel=1e-6)
    mean_max = metrics.attention_statistics(weights)["mean_max_weight"]
    assert float(mean_max) == pytest.approx(weights.max(1).mean(), rel=1e-6)


def test_hub_watch_warns_once_after_a_collapsed_streak_while_the_plain_path_learns():
    from proto_tf.training.health import HubWatch

    lines = []
    watch = HubWatch(windows=3, report=lines.append)
    collapsed = {"top3_weight_share": 0.95, "prototype_accuracy": 0.10, "plain_accuracy": 0.55}
    for step, scalars in enumerate(
        [
            collapsed,
            collapsed,
            dict(collapsed, plain_accuracy=0.15),  # Streak broken.
            collapsed,
            collapsed,
        ],
        start=1,
    ):
        watch.check(step * 50, scalars)
    assert lines == []
    watch.check(300, collapsed)
    watch.check(350, collapsed)
    assert lines == [
        "warning: at step 300 the attention has collapsed onto a few candidates for 3 log windows (95 % of "
        "each batch's weight on 3 of them; prototype accuracy 0.100, plain path 0.550). The prototype path is "
        'unlikely to recover; see docs/training.md, "Attention hubs".'
    ]
    healthy = HubWatch(windows=1, report=lines.append)
    healthy.check(50, {"top3_weight_share": 0.2, "prototype_accuracy": 0.8, "plain_accuracy": 0.8})
    healthy.check(100, {"loss": 1.0})  # A baseline logs no attention.
    assert len(lines) == 1


def test_hub_watch_ignores_the_warmup_steps():
    from proto_tf.training.health import HubWatch

    lines = []
    watch = HubWatch(windows=2, report=lines.append, after_step=100)
    collapsed = {"top3_weight_share": 0.95, "prototype_accuracy": 0.10, "plain_accuracy": 0.55}
    for step in (50, 100):  # The attention is not trained yet: no streak.
        watch.check(step, collapsed)
    assert lines == []
    watch.check(150, collapsed)
    watch.check(200, collapsed)
    assert len(lines) == 1 and lines[0].startswith("warning: at step 200 ")
