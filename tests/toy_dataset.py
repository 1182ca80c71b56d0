"""A dataset added as docs/own_data.md says, in one module: its loader and its DatasetInfo.
Images of 8x8 pixels whose class is their brightness."""

import numpy as np

from proto_tf.data.common import Split
from proto_tf.data.images import ImageAugmentation
from proto_tf.data.registry import DatasetInfo, register_dataset

CLASS_NAMES = ("dark", "bright")
INFO = DatasetInfo("toy_brightness", "image", (8, 8, 1), "float32", ImageAugmentation(1), default_data_dir="")


def load(data_dir, download):
    """`(train, test, class names)`: 96 and 32 images (no files are read)."""
    del data_dir, download
    rng = np.random.default_rng(0)
    splits = []
    for count in (96, 32):
        labels = np.arange(count) % 2
        pixels = np.clip(rng.normal(60 + 120 * labels[:, None, None, None], 20, (count, 8, 8, 1)), 0, 255)
        splits.append(Split(pixels.astype(np.uint8), labels, np.arange(count)))
    return (*splits, CLASS_NAMES)


register_dataset(INFO, load)
