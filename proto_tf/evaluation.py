"""Evaluating a trained model on a split with a fixed inference database."""

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from proto_tf import calibration, metrics
from proto_tf.data.candidates import evaluation_batches
from proto_tf.data.common import Split
from proto_tf.errors import ConfigError
from proto_tf.work_progress import tracked


class Evaluator:
    """Encodes inference databases and predicts splits with one traced function each,
    so repeated evaluations during training do not retrace.

    `progress(description, total) -> WorkProgress`, when given, shows the encoding of a
    database and the prediction of a split while they run (work_progress.py: nothing
    for work of a few seconds)."""

    def __init__(
        self, model: keras.Model, preprocess: Callable, batch_size: int = 512, progress: Callable | None = None
    ):
        self.model = model
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.progress = progress
        self._encode = model.key_value_function() if model.uses_database else None
        self.database_split = None  # The split behind the model's database, once set.
        self._features = tf.function(lambda x: _encoder_features_and_values(model, x), reduce_retracing=True)
        # The database is an argument, not a capture: a traced function would otherwise
        # keep the database of its first call after the model sets a new one.
        if not model.uses_database:
            self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        else:
            self._predict = tf.function(
                lambda x, keys, values, labels: model.predict_with_database(x, keys, values, labels, training=False),
                reduce_retracing=True,
            )

    def features(self, split: Split) -> list[np.ndarray]:
        """Per-layer features for deep k-NN: `[encoder output, values]` as NumPy arrays."""
        encoder_outputs, values = [], []
        for inputs, _ in evaluation_batches(split, self.preprocess, self.batch_size):
            batch_features = self._features(inputs)
            encoder_outputs.append(batch_features[0].numpy())
            values.append(batch_features[1].numpy())
        return [np.concatenate(encoder_outputs), np.concatenate(values)]

    def set_database(self, database_split: Split, key_dtype: str = "float32") -> None:
        """Encodes `database_split` (no augmentation) and sets it as the model's database,
        its keys stored as `key_dtype` (`model.KEY_DTYPES`)."""
        batches = (inputs for inputs, _ in self._batches(database_split, "encoding the prototype database"))
        keys, values = self.model.encode_batches(batches, self._encode)
        self.model.set_database(keys, values, database_split.labels, database_split.indices, key_dtype)
        self.database_split = database_split

    def predict(self, split: Split, thresholds: Sequence[float] = metrics.DEFAULT_THRESHOLDS) -> dict[str, np.ndarray]:
        """Per-example predictions on a split, as NumPy arrays.

        Returns a dict with `labels`, `predictions`, `probabilities [N, C]`, `loss`
        (cross-entropy of the decision) and, with attention, `plain_predictions`,
        `plain_loss`, `confidence` and `prototype_counts [N, len(thresholds)]`.
        """
        collected = {}
        for inputs, labels in self._batches(split, "predicting"):
            if not self.model.uses_database:
                outputs = self._predict(inputs)
            else:
                database = self.model.database
                outputs = self._predict(inputs, *database.tensors())
            logits = tf.cast(outputs["logits"], tf.float32)
            batch = {
                "labels": labels,
                "predictions": tf.argmax(logits, -1),
                "probabilities": tf.nn.softmax(logits),
                "loss": _cross_entropy(labels, logits),
            }
            if "weights" in outputs:
                batch["plain_predictions"] = tf.argmax(outputs["plain_logits"], -1)
                batch["plain_loss"] = _cross_entropy(labels, outputs["plain_logits"])
                batch["confidence"] = outputs["confidence"]
                batch["prototype_counts"] = metrics.prototype_counts(outputs["weights"], thresholds)
            for key, value in batch.items():
                collected.setdefault(key, []).append(np.asarray(value))
        return {key: np.concatenate(parts) for key, parts in collected.items()}

    def _batches(self, split, description):
        """The split's evaluation batches, shown as they are done when `progress` is set."""
        progress = self.progress(description, len(split)) if self.progress else None
        return tracked(
            evaluation_batches(split, self.preprocess, self.batch_size), progress, lambda batch: batch[1].shape[0]
        )

    def evaluate(self, split: Split, database_split: Split | None = None) -> dict:
        """Sets the database (when given and the model has attention) and summarises
        the model's predictions on `split`."""
        if database_split is not None and self.model.uses_database:
            self.set_database(database_split)
        return summarize(self.predict(split))


def _cross_entropy(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )


def _encoder_features_and_values(model, inputs):
    features = model.encoder(inputs, training=False)
    return features, model.heads(features)[2]


def summarize(predictions: dict, thresholds: Sequence[float] = metrics.DEFAULT_THRESHOLDS) -> dict:
    """Accuracy of both paths, median prototype counts, mean confidence of right and
    wrong decisions (plain floats, ready for JSON)."""
    correct = predictions["predictions"] == predictions["labels"]
    summary = {"accuracy": float(correct.mean()), "examples": int(len(correct))}
    for name in ("loss", "plain_loss"):
        if name in predictions:
            summary[name] = float(np.mean(predictions[name]))
    if "confidence" in predictions:
        summary["plain_accuracy"] = float((predictions["plain_predictions"] == predictions["labels"]).mean())
        for index, threshold in enumerate(thresholds):
            summary[f"median_prototypes_{int(round(threshold * 100))}"] = float(
                np.median(predictions["prototype_counts"][:, index])
            )
        confidence = predictions["confidence"]
        summary["confidence_right"] = float(confidence[correct].mean()) if correct.any() else None
        summary["confidence_wrong"] = float(confidence[~correct].mean()) if (~correct).any() else None
    return summary


COVERAGE_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0, 0.02)) + (0.99, 0.995, 0.999)
KEPT_FRACTIONS = (0.99, 0.97, 0.95, 0.9, 0.8, 0.5)
SHIFT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def confidence_report(predictions: dict, thresholds: Sequence[float] = COVERAGE_THRESHOLDS) -> dict:
    """Summary metrics plus the confidence-controlled accuracy curve (Fig. 6) and, for
    two classes, the AUC of the second class's probability and its curve against the
    share kept (Fig. 6d, ISIC's headline)."""
    report = summarize(predictions)
    if predictions["probabilities"].shape[-1] == 2:
        scores, positives = predictions["probabilities"][:, 1], predictions["labels"] == 1
        report["auc"] = metrics.roc_auc(scores, positives)
        if "confidence" in predictions:
            report["auc_curve"] = metrics.auc_curve(predictions["confidence"], scores, positives, thresholds)
    if "confidence" in predictions:
        correct = predictions["predictions"] == predictions["labels"]
        report["coverage_curve"] = metrics.coverage_curve(predictions["confidence"], correct, thresholds)
        kept = metrics.accuracy_when_keeping(predictions["confidence"], correct, KEPT_FRACTIONS)
        report["accuracy_when_keeping"] = {str(k): v for k, v in kept.items()}  # JSON keys.
    return report


def shift_report(evaluator: Evaluator, named_splits: dict, levels: Sequence[float] = SHIFT_LEVELS) -> dict:
    """Share of examples above each confidence level, per (possibly shifted) split
    (Fig. 8): `{name: [share at each level]}`."""
    return {
        name: metrics.fraction_above(evaluator.predict(split)["confidence"], levels)
        for name, split in named_splits.items()
    }


def calibrate_on(
    evaluator: Evaluator,
    split: Split,
    target_accuracy: float | None = None,
    target_coverage: float | None = None,
    delta: float = calibration.DEFAULT_DELTA,
) -> calibration.Calibration:
    """`calibration.calibrate` on the model's predictions for `split` (the run's
    validation split: held out from training, exchangeable with new data); a
    ConfigError when no threshold meets the target, saying what it reached."""
    predictions = evaluator.predict(split)
    correct = predictions["predictions"] == predictions["labels"]
    result = calibration.calibrate(predictions["confidence"], correct, target_accuracy, target_coverage, delta)
    if result.threshold is None:
        flag = f"--target_{result.target}={result.target_value}"
        best = max(result.table, key=lambda row: row["bound"])
        raise ConfigError(
            f"{flag}: no confidence threshold reaches it with {100 * (1 - delta):g} % confidence on the "
            f"{result.examples} validation examples (the best guaranteed {result.target} is "
            f"{best['bound']:.4f}, at threshold {best['threshold']}); lower the target, or train with a "
            "larger --validation_fraction."
        )
    return result
