"""Sparsemax attention (Martins & Astudillo, 2016; the paper's "sparsemax" rows):
w = max(l - tau, 0). The dense op and its fast paths are `proto_tf.sparsemax.sparsemax`."""

import numpy as np
import tensorflow as tf

from proto_tf.normalizations.base import register
from proto_tf.normalizations.thresholded import ThresholdedNormalization
from proto_tf.sparsemax import DEFAULT_TOP_K, sparsemax, threshold_from_sorted


class Sparsemax(ThresholdedNormalization):
    """The Euclidean projection of the logits onto the simplex."""

    name = "sparsemax"
    scale = 1.0

    def dense(self, logits, top_k=DEFAULT_TOP_K):
        return sparsemax(logits, top_k=top_k)

    def weights_of(self, excess):
        return excess

    def sorted_threshold(self, sorted_desc):
        return threshold_from_sorted(sorted_desc, 0.0)

    def prefix_thresholds(self, rank, c1, c2):
        return (c1 - 1.0) / rank

    def prefix_in_support(self, rank, x, c1, tau):
        # 1 + k x_(k) > sum_{j <= k} x_(j): the form without a division, as the dense op.
        return rank * x > c1 - 1.0

    def pass_step(self, tau, count, s1, s2):
        # Michelot's step: the threshold of the entries above tau as if all were in the support.
        return (s1 - 1.0) / tf.maximum(count, 1.0)

    def numpy_threshold(self, ordered):
        finite = np.where(np.isfinite(ordered), ordered, 0.0)
        ranks = np.arange(1, ordered.shape[-1] + 1)
        cumulative = np.cumsum(finite, axis=-1)
        size = ((1 + ranks * ordered > cumulative) & np.isfinite(ordered)).sum(axis=-1, keepdims=True)
        at_size = np.take_along_axis(cumulative, np.maximum(size - 1, 0), axis=-1)
        return np.where(size > 0, (at_size - 1) / np.maximum(size, 1), np.inf)

    def numpy_weights_of(self, excess):
        return excess


SPARSEMAX = register(Sparsemax())
