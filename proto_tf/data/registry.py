"""The seven datasets of Table 1 and the kinds a user's own files can be: what each is,
and how to load it ready for training."""

import dataclasses
import os
from typing import Callable

from proto_tf.data import adult, images, text
from proto_tf.data.common import LoadedDataset, carve_validation, cast_only
from proto_tf.data.dataset_info import DatasetInfo
from proto_tf.data.images import ImageAugmentation
from proto_tf.data.noise import with_label_noise
from proto_tf.errors import ConfigError

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The Adult files: data/adult/ of a checkout, else the copy installed with the package.
_ADULT_DIR = os.path.join(os.path.dirname(_PACKAGE), "data", "adult")
if not os.path.isdir(_ADULT_DIR):
    _ADULT_DIR = os.path.join(_PACKAGE, "adult_data")


_CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "isic": images.ISIC_CLASSES,
    "dbpedia": text.CLASS_NAMES,
    "adult": adult.CLASS_NAMES,
}


def _with_names(load, name):
    """A loader returning `(train, test)` made to return the class names too."""
    return lambda data_dir, download: (*load(data_dir, download), _CLASS_NAMES[name])


DATASETS = {
    "mnist": DatasetInfo(
        "mnist",
        "image",
        (28, 28, 1),
        "float32",
        ImageAugmentation(2),
        loader=_with_names(lambda d, download: images.load_mnist_like("mnist", d, download), "mnist"),
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        "image",
        (28, 28, 1),
        "float32",
        ImageAugmentation(2, flip_left_right=True),
        default_data_dir=images.FASHION_MNIST_SYSTEM_DIR,
        shift_sets=("mnist", "cifar10"),
        loader=_with_names(lambda d, download: images.load_mnist_like("fashion_mnist", d, download), "fashion_mnist"),
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        "image",
        (32, 32, 3),
        "float32",
        ImageAugmentation(3, True, True),
        loader=_with_names(images.load_cifar10, "cifar10"),
    ),
    "fruits": DatasetInfo(
        "fruits",
        "image",
        (100, 100, 3),
        "float32",
        ImageAugmentation(5, True, True),
        default_data_dir="~/datasets/fruits-360",
        loader=lambda d, download: images.load_fruits(d),
    ),
    "isic": DatasetInfo(
        "isic",
        "image",
        (128, 128, 3),
        "float32",
        ImageAugmentation(8, True, True),
        class_shares=(0.6, 0.4),
        default_data_dir="~/datasets/isic",
        loader=_with_names(lambda d, download: images.load_isic(d), "isic"),
    ),
    "dbpedia": DatasetInfo(
        "dbpedia",
        "text",
        (text.SEQUENCE_LENGTH,),
        "int32",
        default_data_dir="~/datasets/dbpedia_csv",
        loader=lambda d, download: text.load_dbpedia(d),
    ),
    "adult": DatasetInfo(
        "adult",
        "tabular",
        (adult.NUM_FEATURES,),
        "float32",
        default_data_dir=_ADULT_DIR,
        schema=adult.SCHEMA,
        label_column="income",
        loader=_with_names(lambda d, download: adult.load(d), "adult"),
    ),
    # A user's own data (docs/own_data.md): read by their kind.
    "csv": DatasetInfo("csv", "tabular", None, "float32", default_data_dir=None, user_data=True),
    "image_folder": DatasetInfo("image_folder", "image", None, "float32", default_data_dir=None, user_data=True),
    "text_csv": DatasetInfo("text_csv", "text", None, "int32", default_data_dir=None, user_data=True),
}


def register_dataset(info: DatasetInfo, load: Callable) -> None:
    """Adds a dataset from its own module: `load(data_dir, download)` returns `(train
    Split, test Split, class names)` in stored form (uint8 images, character codes or
    feature vectors); `info` says what the inputs are. Training, evaluation, export,
    predict and explain then take `dataset=info.name` like the paper's datasets (the
    command line also needs `flags/datasets/<name>.cfg`)."""
    if info.name in DATASETS:
        raise ValueError(f"a dataset named {info.name!r} exists already.")
    DATASETS[info.name] = dataclasses.replace(info, loader=load)


def class_names(name: str) -> tuple:
    """The class names of the paper's dataset `name`, in label order (fruits and a
    user's datasets have theirs in their files)."""
    dataset_info(name)  # Validates the name.
    if name not in _CLASS_NAMES:
        raise ConfigError(f"--dataset={name}: its class names come from its files.")
    return _CLASS_NAMES[name]


def dataset_info(name: str) -> DatasetInfo:
    """The DatasetInfo of `name`; a ConfigError (a ValueError) lists the valid names."""
    if name not in DATASETS:
        raise ConfigError(f"--dataset={name!r} is not known; valid: {', '.join(DATASETS)}.")
    return DATASETS[name]


def load_dataset(
    name: str,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    label_noise: float = 0.0,
    seed: int = 0,
    download: bool = False,
    options: object | None = None,
) -> LoadedDataset:
    """Loads a dataset of Table 1 with the paper's preprocessing.

    Args:
      name: one of `DATASETS`.
      data_dir: folder of the dataset's files (default: `DatasetInfo.default_data_dir`).
      validation_fraction: share of the training file held out (fixed seed) for
        checkpoint selection; 0 for none.
      label_noise: share of training labels (training and validation split) replaced
        by another class (Table 3); the test split stays clean.
      seed: seed of the validation carve and of the label noise.
      download: let TFDS download MNIST / Fashion-MNIST / CIFAR-10 into `data_dir`.
      options: how a user's own files are read (`csv_dataset.CsvOptions` for csv).

    Returns:
      A LoadedDataset; its `info` is the DatasetInfo with the data's own shape and
      schema for a user's dataset.
    """
    train, test, class_names, info = dataset_info(name).read_splits(data_dir, seed, options, download)
    num_classes = len(class_names)
    if label_noise:
        train = with_label_noise(train, label_noise, num_classes, seed)
    train, validation = carve_validation(train, validation_fraction, seed)
    if info.augmentation is not None:
        augment, preprocess = info.augmentation.augment, info.augmentation.preprocess
    else:
        augment, preprocess = cast_only(info.input_dtype)
    return LoadedDataset(name, num_classes, tuple(class_names), train, validation, test, augment, preprocess, info)
