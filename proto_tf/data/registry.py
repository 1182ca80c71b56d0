"""The seven datasets of Table 1: what each is, and how to load it ready for training."""

import dataclasses
import os

from proto_tf.data import adult, images, text
from proto_tf.data.common import LoadedDataset, carve_validation, cast_only
from proto_tf.data.images import ImageAugmentation
from proto_tf.data.noise import with_label_noise

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
    input_shape: tuple
    input_dtype: str
    augmentation: ImageAugmentation | None = None
    class_shares: tuple | None = None
    default_data_dir: str = "~/tensorflow_datasets"


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
        default_data_dir=_ADULT_DIR,
    ),
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


def class_names(name: str) -> tuple:
    """The class names of dataset `name`, in label order."""
    dataset_info(name)  # Validates the name.
    return _CLASS_NAMES[name]


def dataset_info(name: str) -> DatasetInfo:
    """The DatasetInfo of `name`; a ValueError lists the valid names."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid: {', '.join(DATASETS)}.")
    return DATASETS[name]


def _read_splits(name, data_dir, download):
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

    Returns:
      A LoadedDataset.
    """
    info = dataset_info(name)
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
        name, num_classes, tuple(class_names), train, validation, test, augment, preprocess
    )
