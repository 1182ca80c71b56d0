"""Distribution-shifted test sets for a Fashion-MNIST model (Fig. 8)."""

import numpy as np
import tensorflow as tf

from proto_tf.data.common import Split


def rotated(split, quarter_turns=1):
    """The split's images rotated by 90 degrees `quarter_turns` times."""
    return Split(np.rot90(split.inputs, quarter_turns, axes=(1, 2)).copy(), split.labels, split.indices)


def as_fashion_mnist_inputs(split):
    """Another dataset's images as 28x28 grey images: the first (R) channel, resized
    (the paper's "resizing the R dimension" for CIFAR-10)."""
    images = split.inputs[..., :1]
    if images.shape[1:3] != (28, 28):
        images = tf.cast(tf.round(tf.image.resize(images, [28, 28])), tf.uint8).numpy()
    return Split(images, split.labels, split.indices)
