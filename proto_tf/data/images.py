"""Image datasets of Appendix A.1: readers of the upstream on-disk formats, TFDS, and
the paper's augmentation (pad + random crop, flips, per-image standardisation)."""

import dataclasses
import gzip
import os
import pickle
import struct

import keras
import numpy as np
import tensorflow as tf

from proto_tf.data.common import (
    Split,
    check_labels,
    csv_rows,
    missing_data,
    require_rows,
)
from proto_tf.errors import DataError

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian dataset-fashion-mnist.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "fruits": "https://www.kaggle.com/datasets/moltean/fruits (Fruits-360)",
    "isic": "https://challenge.isic-archive.com/data/ (ISIC 2016, melanoma vs benign)",
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclasses.dataclass(frozen=True)
class ImageAugmentation:
    """Appendix A.1's augmentation: zero-pad each side by `pad` pixels and crop back at
    a random offset, optional random flips, then per-image standardisation."""

    pad: int
    flip_left_right: bool = False
    flip_up_down: bool = False

    def augment(self, images, seed):
        """Augments a `[B, H, W, C]` batch; a stateless function of `seed` (shape [2])."""
        return tf.image.per_image_standardization(self.augment_pixels(images, seed))

    def augment_pixels(self, images, seed):
        """`augment` without the standardisation: float32 pixels in 0..255 (for a
        backbone that prepares its own inputs)."""
        x = tf.cast(images, tf.float32)
        batch, height, width = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        crop_seed, lr_seed, ud_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        if self.pad:
            padded = tf.pad(x, [[0, 0], [self.pad, self.pad], [self.pad, self.pad], [0, 0]])
            offsets = tf.random.stateless_uniform(
                [batch, 2], crop_seed, minval=0, maxval=2 * self.pad + 1, dtype=tf.int32
            )
            rows = offsets[:, :1] + tf.range(height)[None, :]
            cols = offsets[:, 1:] + tf.range(width)[None, :]
            x = tf.gather(padded, rows, axis=1, batch_dims=1)
            x = tf.gather(x, cols, axis=2, batch_dims=1)
        if self.flip_left_right:
            x = _random_flip(x, lr_seed, axis=2)
        if self.flip_up_down:
            x = _random_flip(x, ud_seed, axis=1)
        return x

    def preprocess(self, images):
        """Evaluation preprocessing: per-image standardisation only."""
        return tf.image.per_image_standardization(tf.cast(images, tf.float32))

    def preprocessing_layer(self) -> keras.layers.Layer:
        """`preprocess` as a Keras layer (for an encoder saved as a `.keras` backbone)."""
        return PerImageStandardization()


@keras.saving.register_keras_serializable(package="proto_tf")
class PerImageStandardization(keras.layers.Layer):
    """Each image scaled to zero mean and unit deviation (`tf.image.per_image_standardization`)."""

    def call(self, images):
        return tf.image.per_image_standardization(tf.cast(images, tf.float32))


def _random_flip(images, seed, axis):
    flip = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, [axis]), images)


# === Upstream file formats ===


def read_idx(path):
    """Reads an IDX file (as distributed for MNIST and Fashion-MNIST), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:  # gzip: "not a gzipped file", truncated stream.
        raise DataError(f"{path}: cannot be read as {'gzip' if path.endswith('.gz') else 'IDX'}: {error}.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    rank = data[3]
    if len(data) < 4 + 4 * rank:
        raise DataError(f"{path}: IDX header is truncated (rank {rank} needs {4 + 4 * rank} bytes).")
    shape = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    itemsize = np.dtype(_IDX_DTYPES[data[2]]).itemsize
    body = len(data) - 4 - 4 * rank
    if body != int(np.prod(shape)) * itemsize:
        raise DataError(
            f"{path} is truncated or corrupt: header says shape {shape} "
            f"({int(np.prod(shape)) * itemsize} bytes of data), the file has {body}."
        )
    return np.frombuffer(data, _IDX_DTYPES[data[2]], offset=4 + 4 * rank).reshape(shape)


def load_idx_pair(data_dir, images_file, labels_file, num_classes=10):
    """Images `[N, 28, 28, 1]` uint8 and labels from an IDX pair."""
    images = read_idx(os.path.join(data_dir, images_file))
    labels_path = os.path.join(data_dir, labels_file)
    labels = read_idx(labels_path).astype(np.int32)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{images_file} must hold [N, rows, cols] images and {labels_file} [N] labels; "
            f"got shapes {images.shape} and {labels.shape}."
        )
    if len(images) != len(labels):
        raise DataError(f"{images_file} has {len(images)} images but {labels_file} has {len(labels)} labels.")
    require_rows(os.path.join(data_dir, images_file), len(images), "at least one image")
    check_labels(labels_path, labels, num_classes)
    return images[..., None], labels


def load_mnist_like(name, data_dir, download=False):
    """MNIST or Fashion-MNIST: IDX files in `data_dir` first, else TFDS."""
    expected = [os.path.join(data_dir, f) for pair in IDX_FILES.values() for f in pair]
    if all(os.path.isfile(path) for path in expected):
        splits = [load_idx_pair(data_dir, *IDX_FILES[s]) for s in ("train", "test")]
        return [Split(x, y, np.arange(len(y))) for x, y in splits]
    return load_tfds(name, data_dir, download, looked_for=expected)


def load_cifar10(data_dir, download=False):
    """CIFAR-10 from the python (`cifar-10-batches-py`) or binary (`cifar-10-batches-bin`)
    batches in `data_dir` (or `data_dir` itself), else TFDS."""
    candidates = [
        data_dir,
        os.path.join(data_dir, "cifar-10-batches-py"),
        os.path.join(data_dir, "cifar-10-batches-bin"),
    ]
    for folder in candidates:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        if all(os.path.isfile(os.path.join(folder, n)) for n in names):
            batches = [_read_cifar_python(os.path.join(folder, n)) for n in names]
            break
        if all(os.path.isfile(os.path.join(folder, n + ".bin")) for n in names):
            batches = [_read_cifar_binary(os.path.join(folder, n + ".bin")) for n in names]
            break
    else:
        return load_tfds(
            "cifar10",
            data_dir,
            download,
            looked_for=[
                os.path.join(candidates[1], "data_batch_1..5, test_batch"),
                os.path.join(candidates[2], "data_batch_1..5.bin, test_batch.bin"),
            ],
        )
    train_x = np.concatenate([b[0] for b in batches[:5]])
    train_y = np.concatenate([b[1] for b in batches[:5]])
    test_x, test_y = batches[5]
    return [Split(train_x, train_y, np.arange(len(train_y))), Split(test_x, test_y, np.arange(len(test_y)))]


# What a CIFAR-10 python batch may name: NumPy arrays, dtypes and scalars, and bytes
# (its dict and lists need no global). Anything else (a pickle that would call os.system,
# say) is refused before it runs.
_CIFAR_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
    for name in ("_reconstruct", "scalar", "_frombuffer")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # Protocol 2 writes bytes by encode.


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR-10 batch never holds (only NumPy arrays, lists and "
                "bytes); it was not loaded"
            )
        return super().find_class(module, name)


def _read_cifar_python(path):
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{path}: not a complete CIFAR-10 python batch (a pickled dict with b'data' and "
            f"b'labels'): {type(error).__name__}: {error}."
        ) from None
    data, labels = np.asarray(data, np.uint8), np.asarray(labels, np.int32)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(
            f"{path}: expected data [N, 3072] and N labels, got data {data.shape} and {len(labels)} labels."
        )
    check_labels(path, labels, 10)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_cifar_binary(path):
    records = np.fromfile(path, np.uint8)
    if records.size == 0 or records.size % 3073:
        raise DataError(
            f"{path}: size {records.size} bytes is not a positive multiple of 3073-byte records (truncated?)."
        )
    records = records.reshape(-1, 3073)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = records[:, 0].astype(np.int32)
    check_labels(path, labels, 10)
    return np.ascontiguousarray(images), labels


def load_image_folder(folder, size, class_names=None):
    """Images under `folder/<class>/*` resized to `size` x `size`; classes sorted by name."""
    if class_names is None:
        class_names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    images, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(folder, class_name)
        if not os.path.isdir(class_dir):
            continue
        for file_name in sorted(os.listdir(class_dir)):
            images.append(read_image(os.path.join(class_dir, file_name), size))
            labels.append(label)
    require_rows(folder, len(images), "images in <class>/ subfolders")
    return np.stack(images), np.asarray(labels, np.int32), tuple(class_names)


def read_image(path, size, channels=3):
    """A PNG/JPEG/GIF/BMP file as a `[height, width, channels]` uint8 array, `size`
    being `height` for a square or `(height, width)`, resized when needed;
    `channels=1` converts a colour image to grayscale. A DataError names a file that
    cannot be decoded."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    image = decode_image_file(path, 3)
    if image.shape[0] != height or image.shape[1] != width:
        image = tf.cast(tf.round(tf.image.resize(image, [height, width])), tf.uint8)
    if channels == 1:
        image = tf.cast(tf.round(tf.image.rgb_to_grayscale(image)), tf.uint8)
    return np.asarray(image)


def decode_image_file(path, channels=0):
    """The decoded image of a file as a uint8 tensor (`channels=0`: as stored); a
    DataError names a file that cannot be decoded."""
    try:
        return tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        message = error.message.splitlines()[0] if error.message else type(error).__name__
        raise DataError(f"{path}: not a readable PNG, JPEG, GIF or BMP image ({message}).") from None


def load_fruits(data_dir):
    """Fruits-360 folder layout: `Training/<class>/*.jpg`, `Test/<class>/*.jpg`, 100x100."""
    train_dir, test_dir = os.path.join(data_dir, "Training"), os.path.join(data_dir, "Test")
    if not (os.path.isdir(train_dir) and os.path.isdir(test_dir)):
        raise missing_data("Fruits-360", [train_dir, test_dir], URLS["fruits"])
    train_x, train_y, class_names = load_image_folder(train_dir, 100)
    test_x, test_y, _ = load_image_folder(test_dir, 100, class_names)
    return (
        Split(train_x, train_y, np.arange(len(train_y))),
        Split(test_x, test_y, np.arange(len(test_y))),
        class_names,
    )


ISIC_CLASSES = ("benign", "melanoma")
_ISIC_LABELS = {"benign": 0, "0": 0, "0.0": 0, "melanoma": 1, "malignant": 1, "1": 1, "1.0": 1}


def load_isic(data_dir):
    """ISIC melanoma: `train/` and `test/` image folders with `train.csv` / `test.csv`
    rows `image_id,label` (label benign/malignant/melanoma or 0/1; a header row is
    allowed), images resized to 128x128."""
    splits = []
    for name in ("train", "test"):
        folder, labels_file = os.path.join(data_dir, name), os.path.join(data_dir, name + ".csv")
        if not (os.path.isdir(folder) and os.path.isfile(labels_file)):
            raise missing_data("ISIC", [folder, labels_file], URLS["isic"])
        files = {os.path.splitext(f)[0]: f for f in os.listdir(folder)}
        images, labels = [], []
        for line_number, row in csv_rows(labels_file):
            if line_number == 1 and row[-1].strip().lower() not in _ISIC_LABELS:
                continue  # Header or blank line.
            where = f"{labels_file}:{line_number}"
            if len(row) < 2 or row[1].strip().lower() not in _ISIC_LABELS:
                raise DataError(
                    f"{where}: expected image_id,label with label one of "
                    f"{', '.join(sorted(_ISIC_LABELS))}; got {row!r}."
                )
            image_id = row[0].strip()
            if image_id not in files:
                raise DataError(f"{where}: image {image_id!r} is not in {folder}.")
            images.append(read_image(os.path.join(folder, files[image_id]), 128))
            labels.append(_ISIC_LABELS[row[1].strip().lower()])
        require_rows(labels_file, len(labels), "rows image_id,label")
        splits.append(Split(np.stack(images), np.asarray(labels), np.arange(len(labels))))
    return splits


def load_tfds(name, data_dir, download, looked_for=()):
    """Train and test splits from TFDS (prepared data in `data_dir`, or downloaded
    there when `download`), as uint8 images and labels."""
    try:
        import tensorflow_datasets as tfds  # Heavy import, only needed on this path.
    except ImportError:
        raise missing_data(
            name,
            list(looked_for),
            URLS[name],
            detail="tensorflow-datasets is not installed (pip install tensorflow-datasets), "
            "and the upstream files were not found",
        ) from None

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
        splits = []
        for split in ("train", "test"):
            # Batches rather than batch_size=-1, which aborts on generator-backed data.
            batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(8192)))
            images = np.concatenate([b["image"] for b in batches])
            labels = np.concatenate([b["label"] for b in batches])
            splits.append(Split(images, labels, np.arange(len(labels))))
        return splits
    except (AssertionError, FileNotFoundError, OSError) as error:
        raise missing_data(
            name,
            list(looked_for) + [f"TFDS '{name}' prepared under {data_dir}"],
            URLS[name],
            flag="--data_dir (or --download to let TFDS fetch it)",
            detail=str(error).splitlines()[0] if str(error) else "",
        ) from error
