"""Deep k-nearest neighbours (Papernot & McDaniel, 2018): conformal confidence and
credibility from the labels of nearest training points in a model's feature spaces,
for the comparison of Fig. 7.

For each layer's features, the k nearest training points of an input vote; the
nonconformity of label j is the number of neighbours (over all layers) whose label
is not j. A held-out calibration set gives the distribution of nonconformity at the
true label; the p-value of label j is the share of calibration scores at least as
large as the input's nonconformity for j. The prediction is the label with the largest
p-value, the credibility that p-value, the confidence one minus the second largest.
"""

import numpy as np


def nearest_labels(train_features, train_labels, features, k, batch_size=1024):
    """Labels of the k nearest training points (Euclidean) of each row: `[N, k]`."""
    train_features = np.asarray(train_features, np.float32)
    train_norms = (train_features**2).sum(-1)
    neighbours = []
    for start in range(0, len(features), batch_size):
        batch = np.asarray(features[start : start + batch_size], np.float32)
        distances = train_norms[None, :] - 2 * batch @ train_features.T
        nearest = np.argpartition(distances, kth=min(k, len(train_features) - 1), axis=1)[:, :k]
        neighbours.append(np.asarray(train_labels)[nearest])
    return np.concatenate(neighbours)


def nonconformity(neighbour_labels_per_layer, num_classes):
    """`[N, C]`: for each label, the count of neighbours over all layers that disagree."""
    total = 0
    for labels in neighbour_labels_per_layer:
        counts = np.stack([(labels == c).sum(-1) for c in range(num_classes)], axis=-1)
        total = total + (labels.shape[1] - counts)
    return total


class DeepKNN:
    """dkNN over a list of feature spaces (e.g. encoder features and values).

    Args:
      train_features: list (one per layer) of `[N_train, d]` arrays.
      train_labels: `[N_train]`.
      calibration_features: list of `[N_cal, d]` arrays, held out from training.
      calibration_labels: `[N_cal]`.
      num_classes, k: as in the paper (k = 75 in Papernot & McDaniel).
    """

    def __init__(self, train_features, train_labels, calibration_features, calibration_labels, num_classes, k=75):
        self.train_features = train_features
        self.train_labels = np.asarray(train_labels)
        self.num_classes = num_classes
        self.k = k
        scores = self._nonconformity(calibration_features)
        self.calibration_scores = np.sort(scores[np.arange(len(scores)), calibration_labels])

    def _nonconformity(self, features):
        neighbours = [
            nearest_labels(train, self.train_labels, layer, self.k)
            for train, layer in zip(self.train_features, features)
        ]
        return nonconformity(neighbours, self.num_classes)

    def predict(self, features):
        """`(predictions, confidence, credibility)` for a list of per-layer features."""
        scores = self._nonconformity(features)
        # p-value: share of calibration scores >= the score, via a sorted search.
        at_least = len(self.calibration_scores) - np.searchsorted(self.calibration_scores, scores, side="left")
        p_values = at_least / len(self.calibration_scores)
        order = np.sort(p_values, axis=-1)
        predictions = np.argmax(p_values, axis=-1)
        return predictions, 1.0 - order[:, -2], order[:, -1]
