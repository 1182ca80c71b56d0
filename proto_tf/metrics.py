"""Confidence (Eq. 3) and prototype counts (Table 2) from attention weights."""

from typing import Sequence

import numpy as np
import tensorflow as tf

DEFAULT_THRESHOLDS = (0.5, 0.9, 0.95)


def class_weights(weights: tf.Tensor, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Total prototype weight per class: `weights [B, D] @ one_hot(labels) -> [B, C]`."""
    weights = tf.convert_to_tensor(weights)
    one_hot = tf.one_hot(tf.convert_to_tensor(labels), num_classes, dtype=weights.dtype)
    return tf.matmul(weights, one_hot)


def confidence(weights: tf.Tensor, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Eq. 3: `C(p, y) = max_m sum_i p_i [y_i = m]`, per example.

    Args:
      weights: `[B, D]` prototype weights (rows sum to 1).
      labels: `[D]` integer labels of the candidates.
      num_classes: number of classes.

    Returns:
      `[B]` confidences in [0, 1]; 1 iff all non-zero weights share one label.
    """
    # The weights sum to 1 up to float rounding: keep the result a share, never 1 + eps.
    return tf.minimum(tf.reduce_max(class_weights(weights, labels, num_classes), axis=-1), 1.0)


def prototype_counts(weights: tf.Tensor, thresholds: tuple = DEFAULT_THRESHOLDS) -> tf.Tensor:
    """Smallest number of largest weights whose sum reaches each threshold.

    Args:
      weights: `[B, D]` prototype weights.
      thresholds: fractions of the total weight, e.g. (0.5, 0.9, 0.95).

    Returns:
      int32 `[B, len(thresholds)]`. A threshold a row never reaches (e.g. a fully
      masked row) counts all D candidates.
    """
    weights = tf.convert_to_tensor(weights)
    cumulative = tf.cumsum(tf.sort(weights, axis=-1, direction="DESCENDING"), axis=-1)
    num_candidates = tf.shape(weights)[-1]
    counts = []
    for threshold in thresholds:
        below = tf.reduce_sum(tf.cast(cumulative < threshold, tf.int32), axis=-1)
        counts.append(tf.minimum(below + 1, num_candidates))
    return tf.stack(counts, axis=-1)


def median_prototype_counts(weights: tf.Tensor, thresholds: tuple = DEFAULT_THRESHOLDS) -> dict:
    """Median over examples of `prototype_counts`, as `{threshold: median}` (Table 2)."""
    counts = np.asarray(prototype_counts(weights, thresholds))
    return {t: float(np.median(counts[:, i])) for i, t in enumerate(thresholds)}


def coverage_curve(confidence: np.ndarray, correct: np.ndarray, thresholds: Sequence[float]) -> list[dict]:
    """Accuracy against the share of examples kept when predicting only where the
    confidence is at least each threshold (Fig. 6).

    Returns a list of dicts `{threshold, kept, accuracy}`; `accuracy` is None when
    nothing is kept.
    """
    confidence, correct = np.asarray(confidence), np.asarray(correct, bool)
    curve = []
    for threshold in thresholds:
        kept = confidence >= threshold
        accuracy = float(correct[kept].mean()) if kept.any() else None
        curve.append({"threshold": float(threshold), "kept": float(kept.mean()), "accuracy": accuracy})
    return curve


def fraction_above(confidence: np.ndarray, levels: Sequence[float]) -> list[float]:
    """Share of examples whose confidence is at least each level (Fig. 8)."""
    confidence = np.asarray(confidence)
    return [float((confidence >= level).mean()) for level in levels]


def accuracy_when_keeping(confidence: np.ndarray, correct: np.ndarray, fractions: Sequence[float]) -> dict:
    """Accuracy on the `fraction` most confident examples, for each fraction (the
    paper's "error reached by refraining from x % of predictions")."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    correct = np.asarray(correct, bool)[order]
    return {float(f): float(correct[: max(1, int(round(f * len(correct))))].mean()) for f in fractions}


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for the binary labels `positives`: the
    probability that a random positive scores above a random negative, ties counting
    one half (the Mann-Whitney statistic, from average ranks). None when one class is
    absent."""
    scores, positives = np.asarray(scores, np.float64), np.asarray(positives, bool)
    count_positive, count_negative = int(positives.sum()), int((~positives).sum())
    if not count_positive or not count_negative:
        return None
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # Average rank (1-based) of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + 1 + end) / 2
    rank_sum = ranks[positives].sum()
    return float((rank_sum - count_positive * (count_positive + 1) / 2) / (count_positive * count_negative))


def auc_curve(
    confidence: np.ndarray, scores: np.ndarray, positives: np.ndarray, thresholds: Sequence[float]
) -> list[dict]:
    """AUC against the share of examples kept when predicting only where the
    confidence is at least each threshold (Fig. 6d, ISIC). A list of dicts
    `{threshold, kept, auc}`; `auc` is None where the kept examples hold one class."""
    confidence = np.asarray(confidence)
    scores, positives = np.asarray(scores), np.asarray(positives, bool)
    curve = []
    for threshold in thresholds:
        kept = confidence >= threshold
        auc = roc_auc(scores[kept], positives[kept]) if kept.any() else None
        curve.append({"threshold": float(threshold), "kept": float(kept.mean()), "auc": auc})
    return curve


def attention_statistics(weights: tf.Tensor) -> dict[str, tf.Tensor]:
    """What a training step logs of its attention weights, from one pass for the top
    candidate of each query: `mean_max_weight` (the mean of each query's largest
    weight), and the signs of an attention "hub", where every query of a batch picks
    the same few candidates: `distinct_top_share`, the share of distinct top candidates
    among the queries (1 when each query's largest weight is on its own candidate, 1/B
    when all share one), and `top3_weight_share`, the share of the batch's total
    weight on the 3 candidates that receive the most.

    Args:
      weights: `[B, D]` attention weights of a batch over its candidates.
    """
    weights = tf.cast(weights, tf.float32)
    queries = tf.cast(tf.shape(weights)[0], tf.float32)
    top = tf.argmax(weights, axis=-1, output_type=tf.int32)
    # Queries per top candidate: O(B + D) work, where a one-hot would be [B, D].
    hits = tf.math.unsorted_segment_sum(tf.ones_like(top, tf.float32), top, tf.shape(weights)[1])
    received = tf.reduce_sum(weights, axis=0)
    top3 = tf.reduce_sum(tf.math.top_k(received, tf.minimum(3, tf.shape(received)[0])).values)
    return {
        "mean_max_weight": tf.reduce_mean(tf.gather(weights, top, batch_dims=1)),
        "distinct_top_share": tf.math.count_nonzero(hits, dtype=tf.float32) / queries,
        "top3_weight_share": top3 / tf.maximum(tf.reduce_sum(received), 1e-12),
    }
