"""A user's own images: `train/<class>/*` and `test/<class>/*` (PNG, JPEG, GIF, BMP).

`--dataset=image_folder --data_dir=DIR`. Class names are the training subfolders'
names (sorted). The images keep their size when all training images share one
(`--image_size=H,W` resizes every image); they are greyscale when every training image
is, else colour. Without `test/`, a fixed-seed share of the training images is held out
as the test split. Training applies the paper's augmentation (Appendix A.1): zero
padding of about 8 % of the side and a random crop back, optional flips, per-image
standardisation.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from proto_tf.data.common import MissingDataError, Split, hold_out, require_rows
from proto_tf.data.images import IMAGE_EXTENSIONS, ImageAugmentation, decode_image_file
from proto_tf.errors import DataError

TRAIN_FOLDER, TEST_FOLDER = "train", "test"


@dataclasses.dataclass(frozen=True)
class ImageFolderOptions:
    """How a user's image folders are read (flags of the same names)."""

    image_size: tuple = ()  # (height, width); () keeps the training images' own size.
    flip_left_right: bool = False
    flip_up_down: bool = False
    test_fraction: float = 0.2  # Held out of train/ when there is no test/.


def class_files(folder: str, class_names=None) -> dict:
    """`{class: sorted image files}` of `folder/<class>/`; with `class_names`, a class
    subfolder outside them is a DataError naming it."""
    subfolders = sorted(
        d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith(".")
    )
    if class_names is not None:
        unknown = [d for d in subfolders if d not in class_names]
        if unknown:
            raise DataError(
                f"{folder}: class folder{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"{'are' if len(unknown) > 1 else 'is'} not in the training folder; its classes: "
                f"{', '.join(class_names)}."
            )
    found = {}
    for name in subfolders:
        path = os.path.join(folder, name)
        found[name] = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _report_skipped(folder, files_by_class, report):
    """Says what a folder holds that is not read: files of other types (`.tiff`,
    `.webp`, ...) and class folders without images (not classes)."""
    for name, files in files_by_class.items():
        path = os.path.join(folder, name)
        entries = [f for f in os.listdir(path) if not f.startswith(".")]
        others = [
            f for f in entries if os.path.isfile(os.path.join(path, f)) and not f.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if others:
            kinds = sorted({os.path.splitext(f)[1].lower() or "(no extension)" for f in others})
            report(
                f"warning: {path}: {len(others)} file(s) of other types ({', '.join(kinds)}) are skipped; "
                f"images are read from {', '.join(IMAGE_EXTENSIONS)} files."
            )
        nested = sorted(f for f in entries if os.path.isdir(os.path.join(path, f)))
        if nested:
            report(
                f"warning: {path}: folder(s) {', '.join(nested)} inside a class folder are not read "
                "(a class's images are the files directly in its folder)."
            )
        if not files:
            report(f"warning: {path} holds no images: it is not a class.")


def load(data_dir: str, options: ImageFolderOptions = ImageFolderOptions(), seed: int = 0, report=print) -> tuple:
    """`(train Split, test Split, class names, input shape (H, W, C), augmentation)`.
    Split indices count the images in sorted order (class folders, then file names)."""
    train_dir, test_dir = os.path.join(data_dir, TRAIN_FOLDER), os.path.join(data_dir, TEST_FOLDER)
    if not os.path.isdir(train_dir):
        raise MissingDataError(
            f"no {train_dir}: --dataset=image_folder reads DIR/{TRAIN_FOLDER}/<class>/* (and "
            f"DIR/{TEST_FOLDER}/<class>/* when present); give --data_dir=DIR."
        )
    train_files = class_files(train_dir)
    _report_skipped(train_dir, train_files, report)
    class_names = tuple(name for name, files in train_files.items() if files)
    if len(class_names) < 2:
        raise DataError(f"{train_dir}: found {len(class_names)} class folder(s) with images; give at least two.")
    paths, labels = _flatten(train_files, class_names)
    train_images = [decode_image_file(path) for path in paths]
    size = _size(train_images, paths, options.image_size)
    channels = 1 if all(image.shape[-1] == 1 for image in train_images) else 3
    train = Split(_stack(train_images, size, channels), labels, np.arange(len(labels)))
    if os.path.isdir(test_dir):
        test_paths, test_labels = _flatten(class_files(test_dir, class_names), class_names)
        require_rows(test_dir, len(test_paths), "images in <class>/ subfolders")
        images = [decode_image_file(path) for path in test_paths]
        test = Split(_stack(images, size, channels), test_labels, np.arange(len(test_labels)))
    else:
        kept, held = hold_out(len(train), options.test_fraction, seed, train_dir, "images", report)
        test, train = train.take(held), train.take(kept)
    pad = max(1, round(min(size) / 12))  # 2 for 28 pixels, 3 for 32: the paper's padding.
    augmentation = ImageAugmentation(pad, options.flip_left_right, options.flip_up_down)
    return train, test, class_names, (*size, channels), augmentation


def _flatten(files_by_class, class_names):
    paths, labels = [], []
    for label, name in enumerate(class_names):
        for path in files_by_class.get(name, []):
            paths.append(path)
            labels.append(label)
    return paths, np.asarray(labels, np.int32)


def _size(images, paths, image_size):
    if image_size:
        if len(image_size) != 2 or min(image_size) < 1:
            raise DataError(f"--image_size={','.join(map(str, image_size))} must be two positive integers H,W.")
        return int(image_size[0]), int(image_size[1])
    sizes = {}
    for image, path in zip(images, paths):
        sizes.setdefault(tuple(image.shape[:2]), path)
    if len(sizes) > 1:
        (a, first), (b, second) = list(sizes.items())[:2]
        raise DataError(
            f"the training images differ in size ({first} is {a[0]}x{a[1]}, {second} is "
            f"{b[0]}x{b[1]}, {len(sizes)} sizes in all): give --image_size=H,W to resize them all."
        )
    return next(iter(sizes))


def _stack(images, size, channels):
    """uint8 `[N, H, W, channels]`: resized where needed, colour or greyscale."""
    out = np.empty((len(images), *size, channels), np.uint8)
    for i, image in enumerate(images):
        if image.shape[-1] == 4:
            image = image[..., :3]  # Alpha is not part of the picture.
        if channels == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif channels == 1 and image.shape[-1] == 3:
            image = tf.cast(tf.round(tf.image.rgb_to_grayscale(image)), tf.uint8)
        if tuple(image.shape[:2]) != size:
            image = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(image, size), 0, 255)), tf.uint8)
        out[i] = np.asarray(image)
    return out
