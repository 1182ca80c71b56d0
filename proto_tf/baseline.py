"""The paper's "Baseline enc.": the encoder followed by the decision layer, trained with
the plain cross-entropy alone (`--attention=none`)."""

import keras
import tensorflow as tf

from proto_tf.classifier import Classifier, cross_entropy


@keras.saving.register_keras_serializable(package="proto_tf")
class BaselineClassifier(Classifier):
    """An encoder and a bias-free decision layer: ProtoAttend's plain path on its own.

    Args:
      encoder: a Keras layer/model mapping a batch of inputs to `[B, features]`.
      num_classes: number of output classes.

    Training data for `train_step` is a dict with `inputs [B, ...]` and `labels [B]`
    (candidates, when the pipeline gives them, are not read).

    Example:
      >>> model = BaselineClassifier(keras.layers.Dense(8), num_classes=3)
      >>> model.build((None, 5))
      >>> model(np.zeros([2, 5], "float32"))["logits"].shape
      TensorShape([2, 3])
    """

    def __init__(self, encoder: keras.layers.Layer, num_classes: int, **kwargs):
        super().__init__(encoder, num_classes, **kwargs)
        # The decision has no bias, as ProtoAttend's: the baseline is its plain path.
        self.decision = keras.layers.Dense(self.num_classes, use_bias=False, name="decision")
        self._track_metrics(("loss", "plain_loss", "plain_accuracy"))

    def build(self, input_shape: tuple, input_dtype: str = "float32") -> None:
        """Creates every weight by running one zero example through the layers."""
        if self.built:
            return
        self.decision(self.encoder(tf.zeros([1] + list(input_shape)[1:], dtype=input_dtype), training=False))
        self.built = True

    def plain_logits(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.decision(self.encoder(inputs, training=training))

    def call(self, inputs: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Returns `{"logits": [B, num_classes]}`."""
        return {"logits": self.plain_logits(inputs, training)}

    def forward_train(
        self, data: dict[str, tf.Tensor], alpha: tf.Tensor | float, training: bool = True
    ) -> dict[str, tf.Tensor]:
        del alpha  # No mixed path.
        return {"plain_logits": self.plain_logits(data["inputs"], training)}

    def loss_terms(self, labels: tf.Tensor, outputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        plain = cross_entropy(tf.cast(labels, tf.int32), outputs["plain_logits"])
        return {"plain_loss": plain, "loss": plain}
