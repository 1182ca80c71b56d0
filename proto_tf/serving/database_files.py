"""A prototype database from any labelled data, in the training data's formats: the
rows (or images) of a user's file become the prototypes an export attends over."""

import os

import numpy as np

from proto_tf.data import adult, csv_dataset, images, text, text_csv
from proto_tf.data.common import Split
from proto_tf.data.registry import DatasetInfo
from proto_tf.errors import DataError


def read_database(path: str, info: DatasetInfo, class_names) -> Split:
    """The labelled examples of `path` in stored form, each with its row in the file
    (counted from 0) as its index.

    Adult: a CSV like `adult.data` (15 columns, the income last). A user's table: a CSV
    with a header holding the model's columns and label column. DBPedia: a CSV like
    `train.csv`. Images: a folder with one subfolder per class, named by the class name
    or its label id (0, 1, ...), resized to the model's size.
    """
    if info.kind == "tabular" and info.user_data:
        return csv_dataset.read_labelled(_file(path), info.schema, info.label_column, class_names)
    if info.kind == "tabular":
        columns, labels = adult.read_adult_csv(_file(path))
        return Split(adult.featurize(columns), labels, np.arange(len(labels)))
    if info.kind == "text" and info.user_data:
        return _documents(_file(path), info, class_names)
    if info.kind == "text":
        texts, labels = text.read_dbpedia_csv(_file(path))
        return Split(text.quantize(texts), labels, np.arange(len(labels)))
    return _image_folder(path, info, list(class_names))


def _documents(path, info, class_names):
    """A CSV with a header holding the model's text and label columns."""
    table = csv_dataset.read_table(path)
    missing = [name for name in (*info.text_columns, info.label_column) if name not in table.header]
    if missing:
        raise DataError(f"{path}:1: the header lacks {', '.join(missing)}; its columns: {', '.join(table.header)}.")
    ids = {name: i for i, name in enumerate(class_names)}
    labels = []
    for line, row in zip(table.lines, table.rows):
        value = row[table.header.index(info.label_column)]
        if value not in ids:
            raise DataError(f"{path}:{line}: label {value!r} is not a class of the model; classes: {', '.join(class_names)}.")
        labels.append(ids[value])
    texts = text_csv.joined_texts(table, info.text_columns)
    quantizer = text.CharacterQuantizer(info.input_shape[0], info.alphabet)
    return Split(text.quantize(texts, quantizer=quantizer), labels, np.arange(len(labels)))


def _file(path):
    if not os.path.isfile(path):
        raise DataError(f"--database={path}: no such file.")
    return path


def _image_folder(folder, info, class_names):
    if not os.path.isdir(folder):
        raise DataError(f"--database={folder}: not a folder of class subfolders.")
    subfolders = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    labels_of = {name: label for label, name in enumerate(class_names)}
    labels_of.update({str(label): label for label in range(len(class_names))})
    unknown = [d for d in subfolders if d not in labels_of]
    if unknown or not subfolders:
        raise DataError(
            f"--database={folder}: subfolders must be class names or label ids "
            f"({', '.join(class_names)}); found {', '.join(unknown) or 'none'}."
        )
    pictures, labels = [], []
    size, channels = tuple(info.input_shape[:2]), info.input_shape[-1]
    for name in subfolders:
        for file_name in sorted(os.listdir(os.path.join(folder, name))):
            pictures.append(images.read_image(os.path.join(folder, name, file_name), size, channels))
            labels.append(labels_of[name])
    if not pictures:
        raise DataError(f"--database={folder}: no images in its class subfolders.")
    return Split(np.stack(pictures), np.asarray(labels), np.arange(len(labels)))
