"""Distribution-shifted test sets of an image model (Fig. 8: Fashion-MNIST's)."""

import numpy as np
import tensorflow as tf

from proto_tf.data.common import Split


def rotated(split, quarter_turns=1):
    """The split's images rotated by 90 degrees `quarter_turns` times."""
    return Split(np.rot90(split.inputs, quarter_turns, axes=(1, 2)).copy(), split.labels, split.indices)


def as_inputs_like(split, image_shape):
    """Another dataset's uint8 images in a model's `image_shape` (H, W, C): for a grey
    model the first (R) channel (the paper's "resizing the R dimension" for CIFAR-10),
    for a colour one grey images repeated over its channels; resized to H x W."""
    height, width, channels = image_shape
    images = split.inputs[..., :1] if channels == 1 else split.inputs
    if images.shape[-1] != channels:
        images = np.repeat(images[..., :1], channels, axis=-1)
    if images.shape[1:3] != (height, width):
        images = tf.cast(tf.round(tf.image.resize(images, [height, width])), tf.uint8).numpy()
    return Split(images, split.labels, split.indices)
