"""The seven datasets of Table 1: what each is, and how to load it ready for training."""

import dataclasses
import os

from proto_tf.data import adult, csv_dataset, image_folder, images, text, text_csv
from proto_tf.data.common import LoadedDataset, carve_validation, cast_only
from proto_tf.data.images import ImageAugmentation
from proto_tf.data.tabular import TabularSchema
from proto_tf.data.noise import with_label_noise
from proto_tf.errors import ConfigError

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The Adult files: data/adult/ of a checkout, else the copy installed with the package.
_ADULT_DIR = os.path.join(os.path.dirname(_PACKAGE), "data", "adult")
if not os.path.isdir(_ADULT_DIR):
    _ADULT_DIR = os.path.join(_PACKAGE, "adult_data")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts of a dataset: model input shape and dtype, augmentation, the
    class shares of balanced sampling (ISIC), and where its files are looked for."""

    name: str
    kind: str  # "image", "text" or "tabular"
    input_shape: tuple | None  # None: set by the data (a user's own dataset).
    input_dtype: str
    augmentation: ImageAugmentation | None = None
    class_shares: tuple | None = None
    default_data_dir: str | None = "~/tensorflow_datasets"
    schema: TabularSchema | None = None  # Tabular: the columns a model reads.
    label_column: str | None = None  # Tables, documents: the label's column (optional in inputs to predict).
    text_columns: tuple | None = None  # A user's documents: the columns joined into the text.
    alphabet: str | None = None  # Text: the quantiser's characters (None: DBPedia's).
    user_data: bool = False  # A user's own files: shapes and database sizes follow the data.


DATASETS = {
    "mnist": DatasetInfo("mnist", "image", (28, 28, 1), "float32", ImageAugmentation(2)),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "image", (28, 28, 1), "float32",
        ImageAugmentation(2, flip_left_right=True),
        default_data_dir=images.FASHION_MNIST_SYSTEM_DIR,
    ),
    "cifar10": DatasetInfo(
        "cifar10", "image", (32, 32, 3), "float32", ImageAugmentation(3, True, True)
    ),
    "fruits": DatasetInfo(
        "fruits", "image", (100, 100, 3), "float32", ImageAugmentation(5, True, True),
        default_data_dir="~/datasets/fruits-360",
    ),
    "isic": DatasetInfo(
        "isic", "image", (128, 128, 3), "float32", ImageAugmentation(8, True, True),
        class_shares=(0.6, 0.4), default_data_dir="~/datasets/isic",
    ),
    "dbpedia": DatasetInfo(
        "dbpedia", "text", (text.SEQUENCE_LENGTH,), "int32",
        default_data_dir="~/datasets/dbpedia_csv",
    ),
    "adult": DatasetInfo(
        "adult", "tabular", (adult.NUM_FEATURES,), "float32",
        default_data_dir=_ADULT_DIR, schema=adult.SCHEMA, label_column="income",
    ),
    # A user's own data (README, "Your own data").
    "csv": DatasetInfo("csv", "tabular", None, "float32", default_data_dir=None, user_data=True),
    "image_folder": DatasetInfo("image_folder", "image", None, "float32", default_data_dir=None, user_data=True),
    "text_csv": DatasetInfo("text_csv", "text", None, "int32", default_data_dir=None, user_data=True),
}  # fmt: skip

_CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"),
    "isic": images.ISIC_CLASSES,
    "dbpedia": text.CLASS_NAMES,
    "adult": adult.CLASS_NAMES,
}  # fmt: skip


# Datasets added by their own modules (`register_dataset`): name -> loader.
_ADDED_LOADERS = {}


def register_dataset(info: DatasetInfo, load) -> None:
    """Adds a dataset from its own module: `load(data_dir, download)` returns `(train
    Split, test Split, class names)` in stored form (uint8 images, character codes or
    feature vectors); `info` says what the inputs are. Training, evaluation, export,
    predict and explain then take `dataset=info.name` like the paper's datasets (the
    command line also needs `flags/<name>_<attention>.cfg`)."""
    if info.name in DATASETS:
        raise ValueError(f"a dataset named {info.name!r} exists already.")
    DATASETS[info.name] = info
    _ADDED_LOADERS[info.name] = load


def class_names(name: str) -> tuple:
    """The class names of dataset `name`, in label order."""
    dataset_info(name)  # Validates the name.
    return _CLASS_NAMES[name]


def dataset_info(name: str) -> DatasetInfo:
    """The DatasetInfo of `name`; a ConfigError (a ValueError) lists the valid names."""
    if name not in DATASETS:
        raise ConfigError(f"--dataset={name!r} is not known; valid: {', '.join(DATASETS)}.")
    return DATASETS[name]


def _read_user_splits(info, data_dir, seed, options):
    """Splits, class names and the resolved DatasetInfo of a user's own files."""
    if data_dir is None:
        raise ConfigError(f"--dataset={info.name} reads your own files: give --data_dir=DIR.")
    if info.name == "text_csv":
        options = options or text_csv.TextCsvOptions()
        train, test, class_names, columns, label = text_csv.load(data_dir, options, seed)
        resolved = dataclasses.replace(info, input_shape=(options.sequence_length,), label_column=label,
                                       text_columns=columns, alphabet=options.alphabet)  # fmt: skip
        return train, test, class_names, resolved
    if info.name == "image_folder":
        loaded = image_folder.load(data_dir, options or image_folder.ImageFolderOptions(), seed)
        train, test, class_names, shape, augmentation = loaded
        return train, test, class_names, dataclasses.replace(info, input_shape=shape, augmentation=augmentation)
    train, test, class_names, schema, label = csv_dataset.load(data_dir, options or csv_dataset.CsvOptions(), seed)
    resolved = dataclasses.replace(info, input_shape=(schema.num_features,), schema=schema, label_column=label)
    return train, test, class_names, resolved


def _read_splits(name, data_dir, download):
    if name in _ADDED_LOADERS:
        return _ADDED_LOADERS[name](data_dir, download)
    if name in ("mnist", "fashion_mnist"):
        return (*images.load_mnist_like(name, data_dir, download), _CLASS_NAMES[name])
    if name == "cifar10":
        return (*images.load_cifar10(data_dir, download), _CLASS_NAMES[name])
    if name == "fruits":
        return images.load_fruits(data_dir)
    if name == "isic":
        return (*images.load_isic(data_dir), _CLASS_NAMES[name])
    if name == "dbpedia":
        return text.load_dbpedia(data_dir)
    return (*adult.load(data_dir), _CLASS_NAMES[name])


def load_dataset(
    name: str,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    label_noise: float = 0.0,
    seed: int = 0,
    download: bool = False,
    options=None,
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
    info = dataset_info(name)
    if info.user_data:
        data_dir = os.path.expanduser(data_dir) if data_dir else None
        train, test, class_names, info = _read_user_splits(info, data_dir, seed, options)
    else:
        data_dir = os.path.expanduser(data_dir or info.default_data_dir)
        train, test, class_names = _read_splits(name, data_dir, download)
    num_classes = len(class_names)
    if label_noise:
        train = with_label_noise(train, label_noise, num_classes, seed)
    train, validation = carve_validation(train, validation_fraction, seed)
    if info.kind == "image":
        augment, preprocess = info.augmentation.augment, info.augmentation.preprocess
    else:
        augment, preprocess = cast_only(info.input_dtype)
    return LoadedDataset(
        name, num_classes, tuple(class_names), train, validation, test, augment, preprocess, info
    )
