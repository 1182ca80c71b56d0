"""Images: the paper's image sets and a user's folder of class subfolders."""

import os

import numpy as np
import tensorflow as tf

from proto_tf.data import image_folder, images
from proto_tf.data.common import Split
from proto_tf.data.kinds.base import DataKind, ServingInputs, batches_of
from proto_tf.errors import DataError

IMAGE_BYTES_SIGNATURE = "image_bytes"  # Encoded images, as TF Serving's REST API sends them.


class ImageKind(DataKind):
    """uint8 pixels `[H, W, C]`, encoded by the ResNet with the dataset's augmentation."""

    name = "image"
    encoder = "resnet"
    examples_are_images = True

    def user_options(self, config):
        return image_folder.ImageFolderOptions(
            config.image_size, config.flip_left_right, config.flip_up_down, config.test_fraction
        )

    def load_user_files(self, info, data_dir, seed, options):
        loaded = image_folder.load(data_dir, options or image_folder.ImageFolderOptions(), seed)
        train, test, class_names, shape, augmentation = loaded
        return train, test, class_names, dict(input_shape=shape, augmentation=augmentation)

    def serving_endpoints(self, info, preprocess):
        """`images` (uint8 pixels of the model's size) through the dataset's own
        `preprocess`, and `image_bytes`: encoded images (PNG, JPEG, GIF, BMP; REST's
        `{"b64": ...}`) decoded and resized in the graph as `read_image` does for files."""
        height, width, channels = info.input_shape
        pixels = ServingInputs(
            {"images": tf.TensorSpec([None, *info.input_shape], tf.uint8, name="images")},
            lambda raw: preprocess(raw["images"]),
        )

        def decode(encoded):
            image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
            image = tf.image.resize(image, [height, width])
            return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)

        def from_bytes(raw):
            shape = tf.TensorSpec([height, width, channels], tf.uint8)
            return preprocess(tf.map_fn(decode, raw["image_bytes"], fn_output_signature=shape))

        encoded = ServingInputs({"image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")}, from_bytes)
        return {"": pixels, IMAGE_BYTES_SIGNATURE: encoded}

    def read_inputs(self, path, specs, batch_size, description):
        """A folder (searched recursively) of PNG/JPEG/GIF/BMP files, resized to the
        model's size as evaluation does."""
        if not os.path.isdir(path):
            raise DataError(f"{path}: not a folder; expected a folder of PNG or JPEG images.")
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.lower().endswith(images.IMAGE_EXTENSIONS)
        )
        if not files:
            raise DataError(f"{path}: no images ({', '.join(images.IMAGE_EXTENSIONS)}) found.")
        shape = specs["images"].shape
        size, channels = (int(shape[1]), int(shape[2])), int(shape[-1])
        return (
            (
                {"images": np.stack([images.read_image(file, size, channels) for file in chunk]).astype(np.uint8)},
                list(chunk),
            )
            for chunk in batches_of(files, batch_size)
        )

    def read_database(self, path, info, class_names):
        """A folder with one subfolder per class, named by the class name or its label
        id (0, 1, ...), resized to the model's size."""
        class_names = list(class_names)
        if not os.path.isdir(path):
            raise DataError(f"--database={path}: not a folder of class subfolders.")
        subfolders = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
        labels_of = {name: label for label, name in enumerate(class_names)}
        labels_of.update({str(label): label for label in range(len(class_names))})
        unknown = [d for d in subfolders if d not in labels_of]
        if unknown or not subfolders:
            raise DataError(
                f"--database={path}: subfolders must be class names or label ids "
                f"({', '.join(class_names)}); found {', '.join(unknown) or 'none'}."
            )
        pictures, labels = [], []
        size, channels = tuple(info.input_shape[:2]), info.input_shape[-1]
        for name in subfolders:
            for file_name in sorted(os.listdir(os.path.join(path, name))):
                pictures.append(images.read_image(os.path.join(path, name, file_name), size, channels))
                labels.append(labels_of[name])
        if not pictures:
            raise DataError(f"--database={path}: no images in its class subfolders.")
        return Split(np.stack(pictures), np.asarray(labels), np.arange(len(labels)))

    def raw_examples(self, info, data_dir, options, seed):
        train_split, test, class_names, _ = info.read_splits(data_dir, seed, options)
        # Prototype indices count the images of the training source (a held-out test
        # split included): place each training example at its index.
        train = np.zeros((int(train_split.indices.max()) + 1, *train_split.inputs.shape[1:]), train_split.inputs.dtype)
        train[train_split.indices] = train_split.inputs
        return {
            "train": train,
            "test": test.inputs,
            "train_labels": train_split.labels,
            "test_labels": test.labels,
            "class_names": tuple(class_names),
        }

    def request(self, examples, raw):
        return {"images": tf.constant(examples, tf.uint8)}

    def reference_features(self, inputs):
        """Pixels scaled to [0, 1], one row per image."""
        return inputs.reshape(len(inputs), -1).astype(np.float32) / 255.0
