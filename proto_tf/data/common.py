"""Containers shared by the dataset loaders, and the error for missing data."""

import csv
import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from proto_tf.errors import DataError, UserError


class MissingDataError(UserError, FileNotFoundError):
    """Data files are missing or unreadable; the message says what, where and how to fix."""


def missing_data(dataset, looked_for, url, flag="--data_dir", detail=""):
    """Builds a MissingDataError naming the files looked for, their source and the flag."""
    files = ", ".join(str(path) for path in looked_for)
    return MissingDataError(
        f"{dataset} data not found{': ' + detail if detail else ''}. Looked for: {files}. "
        f"Download it from {url} and point {flag} at the folder that holds it."
    )


def read_text_lines(path):
    """The lines of a UTF-8 text file (`iterate_text_lines`) as a list."""
    return list(iterate_text_lines(path))


def iterate_text_lines(path):
    """The lines of a UTF-8 text file one at a time, without their line endings (memory
    does not grow with the file).

    Line endings may be LF, CRLF or CR alone (a lone CR ends a line, as in Python's
    universal newlines); a UTF-8 byte-order mark at the start is dropped. A byte that
    is not UTF-8, or a NUL byte, is a DataError naming the file, line and byte column.
    """
    line_number = 0
    with open(path, "rb") as handle:
        for raw in handle:
            if line_number == 0 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            for piece in raw.rstrip(b"\r\n").replace(b"\r\n", b"\n").split(b"\r"):
                line_number += 1
                yield _decoded(piece, path, line_number)


def _decoded(raw, path, line_number):
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}:{line_number}: byte {nul + 1} is a NUL byte (0x00); the file must be UTF-8 text.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}:{line_number}: byte {error.start + 1} ({raw[error.start]:#04x}) is "
            "not UTF-8; the file must be UTF-8 text."
        ) from None


# Fields of any length are read (a long document in one cell): the csv module's default
# limit of 131,072 characters made a 2 MB cell a "not valid CSV" error. Set once; it
# only widens what every reader in the process accepts.
csv.field_size_limit(2**31 - 1)


def csv_rows(path, **reader_options):
    """`(line number, fields)` of each row of a CSV file, streamed; blank lines are
    skipped. Read through `iterate_text_lines` (UTF-8, any line ending, BOM dropped);
    a quoted field may span lines (the row's first line is given). Malformed CSV (a
    quote that is never closed, text after a closing quote) is a DataError naming the
    file and the row's line, never a csv.Error."""
    lines = iterate_text_lines(path)
    reader = csv.reader((line + "\n" for line in lines), strict=True, **reader_options)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError(
                f"{path}:{start}: not valid CSV ({error}); a field that opens a quote must "
                "close it, and only a delimiter may follow the closing quote."
            ) from None
        if row:
            yield start, row
        start = reader.line_num + 1


def require_rows(path, count, expected):
    """Raises a DataError when a data file holds no examples."""
    if count == 0:
        raise DataError(f"{path}: no examples found; expected {expected}.")


def check_labels(path, labels, num_classes):
    """Raises a DataError naming the first label outside [0, num_classes)."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(
            f"{path}: label {labels[bad[0]]} of example {bad[0]} is outside 0..{num_classes - 1} "
            f"({bad.size} such labels)."
        )


@dataclasses.dataclass
class Split:
    """Examples in their stored form (uint8 images, int character codes, float
    feature vectors), int32 labels, and each example's row in its source split."""

    inputs: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __post_init__(self):
        self.labels = np.asarray(self.labels, np.int32)
        self.indices = np.asarray(self.indices, np.int64)
        if not len(self.inputs) == len(self.labels) == len(self.indices):
            raise ValueError(
                f"inputs, labels and indices differ in length: {len(self.inputs)}, "
                f"{len(self.labels)}, {len(self.indices)}."
            )

    def __len__(self):
        return len(self.labels)

    def take(self, positions):
        """The sub-split at `positions`, keeping each example's source index."""
        return Split(self.inputs[positions], self.labels[positions], self.indices[positions])


@dataclasses.dataclass
class LoadedDataset:
    """A dataset ready for training and evaluation.

    `augment(inputs, seed)` maps a batch of stored inputs to model inputs with the
    training augmentation (a stateless function of `seed`, shape [2]);
    `preprocess(inputs)` does the same without augmentation (evaluation, the
    inference database, serving).
    """

    name: str
    num_classes: int
    class_names: tuple
    train: Split
    validation: Split | None
    test: Split
    augment: Callable
    preprocess: Callable
    info: object = None  # The DatasetInfo, with a user's dataset's own shape and schema.
    # A frozen backbone's features (training.features.FeatureSource): the splits then
    # hold its features, and this says how raw inputs become them.
    features: object = None


def cast_only(dtype):
    """`(augment, preprocess)` for data used as stored (text, tabular: Appendix A
    applies no augmentation): both only cast to `dtype`."""

    def preprocess(inputs):
        return tf.cast(inputs, dtype)

    def augment(inputs, seed):
        del seed
        return preprocess(inputs)

    return augment, preprocess


def hold_out(count, fraction, seed, source, unit="rows", report=print):
    """`(kept, held out)` sorted positions of `count` examples of `source`: a fixed-seed
    `fraction` held out as the test split of a user's data without a test file (its
    size reported); a DataError when too few examples are left for both."""
    order = np.random.default_rng(seed).permutation(count)
    size = max(1, int(round(fraction * count)))
    if size >= count:
        raise DataError(f"{source}: {count} {unit} are too few to hold out a test split.")
    report(
        f"No test file or folder beside {source}: held out {size} of its {count} {unit} "
        f"(fixed seed {seed}, --test_fraction={fraction:g}) as the test split."
    )
    return np.sort(order[size:]), np.sort(order[:size])


def carve_validation(split, fraction, seed):
    """Splits off a fixed-seed random `fraction` of `split` as validation data."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return split, None
    order = np.random.default_rng(seed).permutation(len(split))
    size = int(round(fraction * len(split)))
    return split.take(np.sort(order[size:])), split.take(np.sort(order[:size]))
