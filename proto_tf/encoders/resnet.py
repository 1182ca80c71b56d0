"""ResNet image encoder of Appendix A.1 (MNIST, Fashion-MNIST, CIFAR-10, Fruits, ISIC)."""

from typing import Sequence

import keras
import tensorflow as tf

from proto_tf.encoders.layers import BN_EPSILON, BN_MOMENTUM, DenseNormStack, FusedBatchNormalization


def _batch_norm(name):
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv(filters, kernel_size, strides, weight_decay, name):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,  # Followed by batch norm, which has its own offset.
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name=name,
    )


@keras.saving.register_keras_serializable(package="proto_tf")
class ResidualBlock(keras.layers.Layer):
    """The authors' residual block: conv-BN-ReLU, conv-BN, added to the shortcut, ReLU.

    The shortcut is the identity, except in a block with stride 2 (the first of
    stages 2 and 3), where a 1x1 convolution with that stride and no batch norm
    projects the input to the new width, as in the released TF1 code.
    """

    def __init__(self, filters: int, strides: int = 1, weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.weight_decay = weight_decay
        self.conv1 = _conv(filters, 3, strides, weight_decay, "conv1")
        self.bn1 = _batch_norm("bn1")
        self.conv2 = _conv(filters, 3, 1, weight_decay, "conv2")
        self.bn2 = _batch_norm("bn2")
        self.projection = None
        if strides != 1:
            self.projection = _conv(filters, 1, strides, weight_decay, "projection")

    def build(self, input_shape: tuple) -> None:
        if self.projection is None and input_shape[-1] != self.filters:
            raise ValueError(
                f"An identity shortcut needs {self.filters} input channels, got "
                f"{input_shape[-1]}: widen the stem or give the block a stride."
            )
        self.built = True

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        y = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        y = self.bn2(self.conv2(y), training=training)
        shortcut = x if self.projection is None else self.projection(x)
        return keras.ops.relu(shortcut + y)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "weight_decay": self.weight_decay})
        return config


@keras.saving.register_keras_serializable(package="proto_tf")
class ResNet(keras.Model):
    """CIFAR-style ResNet of depth 6n + 2 with dense feature layers on top.

    One 3x3 conv (16 filters) stem, three stages of n residual blocks with 16, 32,
    64 filters (stride 2 at the first block of stages 2 and 3: 4x downsampling),
    global average pooling (7x7 for 28x28 inputs, 8x8 for 32x32), then for each
    entry of `dense_units` a Dense + ReLU + LayerNorm. Depth counts the stem, the
    2n convs of each stage and one dense layer: 32 -> n = 5, 50 -> n = 8.

    Args:
      depth: 32 (MNIST, Fashion-MNIST, Fruits) or 50 (CIFAR-10, ISIC); any 6n + 2.
      dense_units: (256,) for the MNISTs, (256, 512) for CIFAR-10, (128,) for Fruits/ISIC.
      downsample_stem: the stride-2 conv(16) + stride-2 max-pool used for the large
        Fruits (100x100 -> 25x25) and ISIC (128x128 -> 32x32) images.
      weight_decay: L2 factor on conv kernels (1e-4 for Fruits, else 0).
      base_filters: filters of the first stage (16 in the paper).

    Example:
      >>> encoder = ResNet(depth=32)
      >>> encoder(np.zeros([2, 28, 28, 1], "float32")).shape
      TensorShape([2, 256])
    """

    def __init__(
        self,
        depth: int = 32,
        dense_units: Sequence[int] = (256,),
        downsample_stem: bool = False,
        weight_decay: float = 0.0,
        base_filters: int = 16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1 (e.g. 32, 50), got {depth}.")
        self.depth = depth
        self.dense_units = tuple(dense_units)
        self.downsample_stem = downsample_stem
        self.weight_decay = weight_decay
        self.base_filters = base_filters
        blocks_per_stage = (depth - 2) // 6

        self.stem_layers = []
        if downsample_stem:
            self.stem_layers += [
                _conv(base_filters, 3, 2, weight_decay, "downsample_conv"),
                _batch_norm("downsample_bn"),
                keras.layers.ReLU(name="downsample_relu"),
                keras.layers.MaxPooling2D(3, strides=2, padding="same", name="downsample_pool"),
            ]
        self.stem_layers += [
            _conv(base_filters, 3, 1, weight_decay, "stem_conv"),
            _batch_norm("stem_bn"),
            keras.layers.ReLU(name="stem_relu"),
        ]
        self.blocks = []
        for stage in range(3):
            for index in range(blocks_per_stage):
                strides = 2 if stage > 0 and index == 0 else 1
                self.blocks.append(
                    ResidualBlock(
                        base_filters * 2**stage,
                        strides,
                        weight_decay,
                        name=f"stage{stage + 1}_block{index + 1}",
                    )
                )
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = DenseNormStack(self.dense_units, name="head")

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.head(self.pooled(images, training=training))

    def pooled(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The globally pooled last stage `[B, 4 * base_filters]`, before the dense head:
        the more general features when the encoder is reused on other classes."""
        x = images
        for layer in self.stem_layers:
            x = layer(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.pool(x)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "depth": self.depth,
                "dense_units": list(self.dense_units),
                "downsample_stem": self.downsample_stem,
                "weight_decay": self.weight_decay,
                "base_filters": self.base_filters,
            }
        )
        return config
