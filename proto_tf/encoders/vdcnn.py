"""VDCNN text encoder of Appendix A.2 (DBPedia), over quantised characters."""

from typing import Sequence

import keras
import tensorflow as tf

from proto_tf.encoders.layers import BN_EPSILON, BN_MOMENTUM, DenseNormStack, FusedBatchNormalization

# 69 characters (Zhang & LeCun, 2015); code 0 is padding and unknown characters.
VOCABULARY_SIZE = 70


@keras.saving.register_keras_serializable(package="proto_tf")
class KMaxPooling(keras.layers.Layer):
    """Keeps the k largest activations of each channel over time, in their original
    temporal order: `[B, T, C] -> [B, k, C]`."""

    def __init__(self, k: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        channels_first = tf.transpose(x, [0, 2, 1])  # [B, C, T]
        top_indices = tf.math.top_k(channels_first, k=self.k, sorted=False).indices
        in_time_order = tf.sort(top_indices, axis=-1)
        pooled = tf.gather(channels_first, in_time_order, batch_dims=2)  # [B, C, k]
        return tf.transpose(pooled, [0, 2, 1])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.k, input_shape[2])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"k": self.k})
        return config


@keras.saving.register_keras_serializable(package="proto_tf")
class VDCNN(keras.Model):
    """Character CNN: embeddings, 1 + 8 convolutions, k-max pooling, dense layers.

    16-d embeddings of the character codes; a conv (64 filters, width 3, stride 2);
    8 convs of width 3 with `block_filters` (64, 64, 128, 128, 256, 256, 512, 512),
    max-pooling (width 3, stride 2) after each pair; every conv followed by BN and
    ReLU; k-max pooling (k = 8); two Dense(1024) + ReLU + LayerNorm. BatchNorm as in
    the authors' ResNet (momentum 0.9, epsilon 1e-5; `layers.BN_MOMENTUM`).

    Appendix A says the convolutional filters "use weight normalization with
    parameter 0.00001". Weight normalisation (Salimans & Kingma) has no such
    parameter, so this is read as L2 weight decay 1e-5 on conv kernels.

    Args:
      embedding_size: 16.
      block_filters: filters of the 8 conv layers after the first.
      k: of k-max pooling.
      dense_units: widths of the final dense layers.
      weight_decay: L2 factor on conv kernels.

    Example:
      >>> VDCNN()(np.zeros([2, 448], "int32")).shape
      TensorShape([2, 1024])
    """

    def __init__(
        self,
        embedding_size: int = 16,
        first_filters: int = 64,
        block_filters: Sequence[int] = (64, 64, 128, 128, 256, 256, 512, 512),
        k: int = 8,
        dense_units: Sequence[int] = (1024, 1024),
        weight_decay: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embedding_size = embedding_size
        self.first_filters = first_filters
        self.block_filters = tuple(block_filters)
        self.k = k
        self.dense_units = tuple(dense_units)
        self.weight_decay = weight_decay

        self.embedding = keras.layers.Embedding(VOCABULARY_SIZE, embedding_size, name="embedding")
        self.conv_layers = [self._conv_bn(first_filters, strides=2, name="conv0")]
        for index, filters in enumerate(self.block_filters):
            self.conv_layers.append(self._conv_bn(filters, strides=1, name=f"conv{index + 1}"))
            if index % 2 == 1:
                self.conv_layers.append(
                    [keras.layers.MaxPooling1D(3, strides=2, padding="same", name=f"pool{index // 2 + 1}")]
                )
        self.k_max_pooling = KMaxPooling(k, name="k_max_pooling")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.head = DenseNormStack(self.dense_units, name="head")

    def _conv_bn(self, filters, strides, name):
        regularizer = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        return [
            keras.layers.Conv1D(
                filters,
                3,
                strides=strides,
                padding="same",
                use_bias=False,
                kernel_regularizer=regularizer,
                name=name,
            ),
            FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn"),
            keras.layers.ReLU(name=f"{name}_relu"),
        ]

    def call(self, character_codes: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = self.embedding(character_codes)
        for group in self.conv_layers:
            for layer in group:
                x = layer(x, training=training)
        return self.head(self.flatten(self.k_max_pooling(x)))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "embedding_size": self.embedding_size,
                "first_filters": self.first_filters,
                "block_filters": list(self.block_filters),
                "k": self.k,
                "dense_units": list(self.dense_units),
                "weight_decay": self.weight_decay,
            }
        )
        return config
