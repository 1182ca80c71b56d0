"""Cleaning a training split by an audit's findings: rows left out (`--drop_rows`) or
given another label (`--relabel_rows`), both named by their row in the training file
(what `run/audit.py --drop` / `--relabel` write)."""

import csv
import dataclasses

import numpy as np

from proto_tf.data.common import LoadedDataset
from proto_tf.errors import DataError

DROP_HEADER, RELABEL_HEADER = ["train_row"], ["train_row", "label"]


def write_drop_rows(path_handle, rows) -> None:
    writer = csv.writer(path_handle)
    writer.writerow(DROP_HEADER)
    writer.writerows([int(row)] for row in rows)


def write_relabel_rows(path_handle, rows, labels) -> None:
    writer = csv.writer(path_handle)
    writer.writerow(RELABEL_HEADER)
    writer.writerows([int(row), label] for row, label in zip(rows, labels))


def _read(path: str, header: list, flag: str) -> list:
    try:
        with open(path, newline="") as handle:
            lines = list(csv.reader(handle))
    except OSError as error:
        raise DataError(f"{flag}={path}: cannot be read ({error.strerror}).") from None
    if not lines or [cell.strip() for cell in lines[0]] != header:
        raise DataError(f"{flag}={path}:1: expected the header {','.join(header)} (as run/audit.py writes).")
    return lines[1:]


def _row(text: str, path: str, line: int, flag: str, known: dict) -> int:
    try:
        row = int(text)
    except ValueError:
        raise DataError(f"{flag}={path}:{line}: {text!r} is not a training row number.") from None
    if row not in known:
        raise DataError(f"{flag}={path}:{line}: row {row} is not in the training split.")
    return row


def cleaned(dataset: LoadedDataset, drop_rows: str = "", relabel_rows: str = "") -> LoadedDataset:
    """`dataset` with the training rows of `drop_rows` left out and those of
    `relabel_rows` given their new label (a class name or id); DataErrors name the
    file, line and what is wrong."""
    train = dataset.train
    known = {int(row): position for position, row in enumerate(train.indices)}
    labels = np.array(train.labels)
    if relabel_rows:
        label_of = {name: label for label, name in enumerate(dataset.class_names)}
        label_of.update({str(label): label for label in range(dataset.num_classes)})
        for line, cells in enumerate(_read(relabel_rows, RELABEL_HEADER, "--relabel_rows"), 2):
            if len(cells) != 2 or cells[1] not in label_of:
                raise DataError(
                    f"--relabel_rows={relabel_rows}:{line}: expected train_row,label with a label of "
                    f"{', '.join(dataset.class_names)}."
                )
            labels[known[_row(cells[0], relabel_rows, line, "--relabel_rows", known)]] = label_of[cells[1]]
    keep = np.ones(len(train), bool)
    if drop_rows:
        for line, cells in enumerate(_read(drop_rows, DROP_HEADER, "--drop_rows"), 2):
            if len(cells) != 1:
                raise DataError(f"--drop_rows={drop_rows}:{line}: expected one training row number.")
            keep[known[_row(cells[0], drop_rows, line, "--drop_rows", known)]] = False
    train = dataclasses.replace(train, labels=labels).take(np.flatnonzero(keep))
    return dataclasses.replace(dataset, train=train)
