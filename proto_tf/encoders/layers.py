"""Layers shared by the encoders."""

from typing import Sequence

import keras
import tensorflow as tf

# BatchNorm of every encoder, as the authors' code has it for its ResNet:
# tf.layers.batch_normalization(momentum=0.9, epsilon=1e-5). Keras' defaults (0.99,
# 1e-3) made the VDCNN answer at chance in inference mode after a short run: its first
# BatchNorm sees a variance of about 5e-4 (Keras' embeddings start at +-0.05), and the
# initial moving variance of 1 still weighs 0.99^t, 0.0066 after 500 steps.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="proto_tf")
class DenseNormStack(keras.layers.Layer):
    """Appendix A's fully-connected layers: Dense + ReLU + LayerNorm per entry of `units`."""

    def __init__(self, units: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(units)
        self.dense_layers = [
            keras.layers.Dense(width, activation="relu", name=f"dense{index + 1}")
            for index, width in enumerate(self.units)
        ]
        self.norms = [
            keras.layers.LayerNormalization(name=f"dense{index + 1}_norm") for index in range(len(self.units))
        ]

    def build(self, input_shape: tuple) -> None:
        # Creates the sublayers' weights: a `.keras` file is loaded into a layer built
        # from its input shape alone, without a call.
        shape = tuple(input_shape)
        for dense, norm in zip(self.dense_layers, self.norms):
            dense.build(shape)
            shape = (*shape[:-1], dense.units)
            norm.build(shape)
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        for dense, norm in zip(self.dense_layers, self.norms):
            x = norm(dense(x))
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"units": list(self.units)})
        return config


@keras.saving.register_keras_serializable(package="proto_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel: one op
    forward and one backward instead of about fifteen, as the authors' code had it
    (`tf.layers.batch_normalization(fused=True)`). Keras 3 has no fused path.

    The same variables, the same moving-average update (with the biased batch
    variance, as Keras) and the same values up to float rounding. Inputs with a mask,
    renorm, a normalised axis other than the last, or no scale or offset take Keras'
    own path.
    """

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        axis = self.axis if isinstance(self.axis, int) else None
        return (
            mask is None
            and not self.renorm
            and self.scale
            and self.center
            and rank >= 2
            and axis is not None
            and axis % rank == rank - 1
        )

    def call(self, inputs: tf.Tensor, training: bool = None, mask: tf.Tensor | None = None) -> tf.Tensor:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        input_dtype = inputs.dtype
        inputs = tf.cast(inputs, tf.float32)  # As Keras: statistics in float32.
        shape = tf.shape(inputs)
        channels = inputs.shape[-1]
        # The kernel takes [N, H, W, C]; reducing over all axes but the last is the same
        # for any leading shape.
        flat = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        gamma, beta = tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                flat, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            # The kernel returns the unbiased variance; Keras averages the biased one.
            count = tf.cast(tf.size(flat) // channels, tf.float32)
            variance = variance * (count - 1.0) / count
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                flat,
                gamma,
                beta,
                mean=tf.convert_to_tensor(self.moving_mean),
                variance=tf.convert_to_tensor(self.moving_variance),
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(tf.reshape(outputs, shape), input_dtype)
