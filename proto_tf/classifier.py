"""`Classifier`: what the baseline encoder and ProtoAttend share as Keras models.

The training step (loss, gradient scaled for the replica count, update, metrics, the
trainer's health inspection), the metrics' bookkeeping and evaluation on `(x, y)`. A
subclass says what its paths are: `forward_train`, `loss_terms`, `call` and
`plain_logits`.
"""

from typing import Callable

import keras
import tensorflow as tf


class Classifier(keras.Model):
    """An encoder and a decision layer trained with a step of this project's form.

    Subclasses create their layers after `super().__init__` (the order of
    `model.weights`, which training checkpoints follow) and call `_track_metrics`.
    """

    uses_database = False  # True: predictions need a prototype database (`set_database`).

    def __init__(self, encoder: keras.layers.Layer, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        self.encoder = encoder
        self.num_classes = int(num_classes)

    def _track_metrics(self, training_names: tuple, evaluation_names: tuple = ()) -> None:
        """Means of the training step's logs (`training_names`) and of `evaluate(x, y)`."""
        self._training_metrics = tuple(training_names)
        names = dict.fromkeys(training_names + tuple(evaluation_names))
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self._trackers.values())

    # === Paths (subclasses) ===

    def plain_logits(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Logits of the plain path: the encoder's features through the decision."""
        raise NotImplementedError

    def forward_train(self, data: dict[str, tf.Tensor], alpha: tf.Tensor | float, training: bool = True) -> dict:
        """The outputs of the training paths for a step's `data` dict."""
        raise NotImplementedError

    def loss_terms(self, labels: tf.Tensor, outputs: dict[str, tf.Tensor]) -> dict:
        """The loss terms as means over the (per-replica) batch, their sum as `loss`."""
        raise NotImplementedError

    def sample_alpha(self, step: int | tf.Tensor) -> tf.Tensor:
        """Alpha of Eq. 1's mixed path for `step`; a model without that path draws none."""
        del step
        return tf.constant(0.0, tf.float32)

    # === Training ===

    def train_step(self, data: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return self.train_step_with_alpha(data, self.sample_alpha(self.optimizer.iterations))

    def train_step_with_alpha(
        self,
        data: dict[str, tf.Tensor],
        alpha: tf.Tensor | float,
        inspect: Callable | None = None,
        results: bool = True,
    ) -> dict[str, tf.Tensor]:
        """`train_step` with Eq. 1's alpha given (for steps compiled by XLA, whose
        stateless random numbers differ from TensorFlow's for the same seed).

        `inspect(loss, gradients, variables) -> dict`, when given, is called after the
        update with this step's total loss, the gradients and the (updated) trainable
        variables; its entries are added to the logs (the trainer's health checks).
        `results=False` leaves the metrics' values out of the logs (they are still
        updated): the trainer reads them only at the steps it logs.
        """
        with tf.GradientTape() as tape:
            outputs = self.forward_train(data, alpha, training=True)
            terms = self.loss_terms(data["labels"], outputs)
            total = terms["loss"]
            if self.losses:
                total += tf.add_n(self.losses)  # Weight decay of the encoder.
            # Replicas' gradients are summed by the optimizer: scale so the update is
            # the one of the global batch, whatever the replica count.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = total / replicas
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        terms["loss"] = total
        self._update_trackers(data["labels"], outputs, terms)
        logs = self._results(self._training_metrics) if results else {}
        if inspect is not None:
            logs = {**logs, **inspect(total, gradients, variables)}
        return logs

    def _update_trackers(self, labels, outputs, terms):
        for name, value in terms.items():
            self._trackers[name].update_state(value)
        self._trackers["plain_accuracy"].update_state(accuracy(tf.cast(labels, tf.int32), outputs["plain_logits"]))

    # === Evaluation ===

    def test_step(self, data: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """`(x, y)` (or `(x, y, sample_weight)`) scored by `call`: `loss` (cross-entropy
        of the decision) and the subclass's `evaluation_terms`, exact means over the
        examples."""
        inputs, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if labels is None:
            raise ValueError("model.evaluate needs labels: call model.evaluate(x, y).")
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        outputs = self(inputs, training=False)
        logits = tf.cast(outputs["logits"], tf.float32)
        per_example = {
            "loss": tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
            **self.evaluation_terms(labels, outputs),
        }
        for name, values in per_example.items():
            self._trackers[name].update_state(values, sample_weight=sample_weight)
        return self._results(per_example)

    def evaluation_terms(self, labels: tf.Tensor, outputs: dict[str, tf.Tensor]) -> dict:
        """Per-example values that `evaluate(x, y)` averages besides the loss."""
        return {"plain_accuracy": correct(labels, outputs["logits"])}

    def _results(self, names):
        return {name: self._trackers[name].result() for name in names}

    # === Config ===

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"encoder": keras.saving.serialize_keras_object(self.encoder), "num_classes": self.num_classes})
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Classifier":
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean sparse cross-entropy, computed in float32 (mixed precision gives bfloat16)."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
    )


def correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """1.0 where the arg-max of `logits` is the label, else 0.0 (per example)."""
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predictions, labels), tf.float32)


def accuracy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The share of `labels` that the arg-max of `logits` gets right."""
    return tf.reduce_mean(correct(labels, logits))
