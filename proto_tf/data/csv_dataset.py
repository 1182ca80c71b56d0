"""A user's own table: `train.csv` and `test.csv` with a header row, any columns.

`--dataset=csv --data_dir=DIR [--label_column=NAME]`. Column types, vocabularies and
standardisation come from the training file (`tabular.infer_schema`); the test file is
read by column name with the training file's schema. Without `test.csv`, a fixed-seed
share of `train.csv` is held out as the test split (the schema then comes from the
rest). The label values are the class names.
"""

import dataclasses
import math
import os
from typing import Callable

import numpy as np

from proto_tf.data import tabular
from proto_tf.data.common import MissingDataError, Split, csv_rows, hold_out
from proto_tf.errors import DataError

TRAIN_FILE, TEST_FILE = "train.csv", "test.csv"


@dataclasses.dataclass(frozen=True)
class CsvOptions:
    """How a user's table is read (flags of the same names)."""

    label_column: str | None = None  # None: the last column.
    categorical_columns: tuple = ()
    numeric_columns: tuple = ()
    ignore_columns: tuple = ()
    max_categories: int = 1000
    test_fraction: float = 0.2  # Held out of train.csv when there is no test.csv.


@dataclasses.dataclass
class Table:
    """A CSV file read as text: its header (stripped names) and rows, each row with the
    line it starts on."""

    path: str
    header: list
    rows: list
    lines: list

    def column(self, name):
        index = self.header.index(name)
        return [row[index] for row in self.rows]


def read_table(path: str) -> Table:
    """The header and rows of a CSV file with a header row; every row must have the
    header's number of fields (a DataError names the line)."""
    rows, lines, header = [], [], None
    for line_number, row in csv_rows(path, skipinitialspace=True):
        row = [field.strip() for field in row]
        if header is None:
            header = row
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated or "" in header:
                raise DataError(
                    f"{path}:1: the header needs a unique, non-empty name per column; "
                    f"{'repeated: ' + ', '.join(repeated) if repeated else 'a name is empty'}."
                )
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{line_number}: expected the header's {len(header)} fields; got {len(row)}.")
        rows.append(row)
        lines.append(line_number)
    if header is None or not rows:
        raise DataError(f"{path}: no rows found; expected a header row and at least one data row.")
    return Table(path, header, rows, lines)


def load(data_dir: str, options: CsvOptions = CsvOptions(), seed: int = 0, report=print) -> tuple:
    """`(train Split, test Split, class names, schema, label column)` of the tables in
    `data_dir`. Split indices are the rows' positions in `train.csv` (data rows from 0)
    or in `test.csv`."""
    tables = read_tables(data_dir, options, seed, report)
    splits = []
    for table, chosen in tables.parts:
        columns, labels = _parse(table, chosen, tables.schema, tables.label, tables.class_names)
        tabular.report_missing(table.path, tables.schema, columns, report)
        tabular.check_vocabulary(table.path, tables.schema, columns, report, table.header)
        splits.append(Split(tabular.featurize(tables.schema, columns), labels, chosen))
    return splits[0], splits[1], tables.class_names, tables.schema, tables.label


@dataclasses.dataclass
class Tables:
    """The files of a user's table, read: `parts` is `(table, row positions)` of the
    training and the test split, with the schema from the training split."""

    parts: tuple
    schema: tabular.TabularSchema
    label: str
    class_names: tuple


def training_table(data_dir: str, dataset: str, label_column: str | None) -> tuple:
    """`(train.csv read, the path of test.csv, the label column)` of a user's folder: the
    label is the last column unless named."""
    train_path, test_path = (os.path.join(data_dir, name) for name in (TRAIN_FILE, TEST_FILE))
    if not os.path.isfile(train_path):
        raise MissingDataError(
            f"no {train_path}: --dataset={dataset} reads DIR/{TRAIN_FILE} (and DIR/{TEST_FILE} when "
            "present), each with a header row; give --data_dir=DIR."
        )
    train = read_table(train_path)
    label = label_column or train.header[-1]
    if label not in train.header:
        raise DataError(
            f"--label_column={label!r}: {train_path} has no such column; its columns: {', '.join(train.header)}."
        )
    return train, test_path, label


def read_tables(data_dir: str, options: CsvOptions = CsvOptions(), seed: int = 0, report=print) -> Tables:
    """The tables of `data_dir`, the rows of each split and the schema inferred from
    the training split (see `load`)."""
    train, test_path, label = training_table(data_dir, "csv", options.label_column)
    train_path = train.path
    features = [name for name in train.header if name != label and name not in options.ignore_columns]
    unknown = [name for name in options.ignore_columns if name not in train.header]
    if unknown:
        raise DataError(
            f"--ignore_columns: {train_path} has no column {', '.join(map(repr, unknown))}; its columns: {', '.join(train.header)}."
        )
    if label in options.ignore_columns:
        raise DataError(
            f"--ignore_columns names {label!r}, the label column of {train_path}: it cannot be left out; "
            "choose the label with --label_column and ignore feature columns only."
        )
    if not features:
        raise DataError(f"{train_path}: no feature columns besides the label column {label!r}.")
    positions = np.arange(len(train.rows))
    if os.path.isfile(test_path):
        test = read_table(test_path)
        _check_same_columns(train, test, label, options.ignore_columns)
        train_positions, test_positions = positions, np.arange(len(test.rows))
    else:
        test = train
        train_positions, test_positions = hold_out(
            len(positions), options.test_fraction, seed, train_path, "rows", report
        )
    training_rows = [[train.rows[i][train.header.index(name)] for name in features] for i in train_positions]
    schema = tabular.infer_schema(
        train_path,
        features,
        training_rows,
        options.categorical_columns,
        options.numeric_columns,
        options.max_categories,
        lines=[train.lines[i] for i in train_positions],
    )
    class_names = _class_names(train, label, train_positions)
    require_two_classes(train.path, label, class_names)
    return Tables(((train, train_positions), (test, test_positions)), schema, label, class_names)


def raw_columns(tables: Tables, split: int) -> tuple:
    """`(columns as the serving graph takes them, labels)` of every row of a split's
    file (split 0: train.csv, whose rows prototypes are numbered by; 1: the test rows)."""
    table, chosen = tables.parts[split]
    rows = np.arange(len(table.rows)) if split == 0 else chosen
    return _parse(table, rows, tables.schema, tables.label, tables.class_names, labels_required=split == 1)


def _check_same_columns(train, test, label, ignored):
    missing = [name for name in train.header if name not in test.header and name not in ignored]
    extra = [name for name in test.header if name not in train.header]
    if missing or extra:
        parts = [
            f"{kind}: {', '.join(names)}"
            for kind, names in (("missing", missing), ("not in train.csv", extra))
            if names
        ]
        raise DataError(
            f"{test.path}:1: its columns differ from {train.path}'s ({'; '.join(parts)}); "
            f"expected {', '.join(train.header)} in any order."
        )
    del label


def _class_names(table, label, positions):
    """The sorted label values of the training rows (numbers in numeric order)."""
    index = table.header.index(label)
    values = {table.rows[i][index] for i in positions}
    for i in positions:
        if tabular.is_missing(table.rows[i][index]):
            raise DataError(
                f"{table.path}:{table.lines[i]}: the label ({label}) is missing; every training row needs one."
            )
    return sorted_class_names(values)


def require_two_classes(path: str, label: str, class_names: tuple) -> None:
    """A DataError when the training rows hold fewer than two classes: there is nothing
    to tell apart (the model would have one output and always be right)."""
    if len(class_names) < 2:
        raise DataError(
            f"{path}: the label column {label!r} holds {len(class_names)} class(es) in the training rows "
            f"({', '.join(map(repr, class_names))}); a classifier needs at least two."
        )


def sorted_class_names(values) -> tuple:
    """Label values as class names in label order. Where every value is a finite number,
    labels are numbers: `1` and `1.0` are one class (named by its shortest spelling), in
    numeric order; else each distinct string is a class, sorted."""
    values = list(values)
    numbers = _as_numbers(values)
    if numbers is None:
        return tuple(sorted(values))
    spellings = {}
    for value, number in zip(values, numbers):
        spellings.setdefault(number, set()).add(value)
    return tuple(min(names, key=lambda name: (len(name), name)) for _, names in sorted(spellings.items()))


def label_ids(class_names) -> Callable[[str], int | None]:
    """The class id of a label value (None: not a class), numbers compared as numbers
    when the classes are numbers (`sorted_class_names`)."""
    ids = {name: i for i, name in enumerate(class_names)}
    numbers = _as_numbers(class_names)
    by_number = None if numbers is None else {number: i for i, number in enumerate(numbers)}

    def lookup(value):
        if value in ids or by_number is None:
            return ids.get(value)
        number = _as_numbers([value])
        return None if number is None else by_number.get(number[0])

    return lookup


def _as_numbers(values):
    """The values as finite floats, or None when one of them is not such a number."""
    values = list(values)
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        return None
    return numbers if values and all(math.isfinite(number) for number in numbers) else None


def _parse(table, positions, schema, label, class_names, labels_required=True):
    label_index = table.header.index(label)
    indices = {name: table.header.index(name) for name in schema.columns}
    values = {name: [] for name in schema.columns}
    labels = []
    class_id = label_ids(class_names)
    for i in positions:
        row, line = table.rows[i], table.lines[i]
        for name in schema.columns:
            where = f"{table.path}:{line}: column {indices[name] + 1} ({name})"
            values[name].append(tabular.parse_value(schema, name, row[indices[name]], where))
        value = row[label_index]
        label_id = class_id(value)
        if label_id is None and not labels_required:
            labels.append(-1)  # A row whose label the training split never had.
            continue
        if label_id is None:
            shown = ", ".join(class_names[:20]) + (", …" if len(class_names) > 20 else "")
            raise DataError(
                f"{table.path}:{line}: column {label_index + 1} ({label}): label {value!r} is not a "
                f"class of the training file; classes: {shown}."
            )
        labels.append(label_id)
    return tabular.as_arrays(schema, values), np.asarray(labels, np.int32)


def read_labelled(path: str, schema: tabular.TabularSchema, label_column: str, class_names) -> Split:
    """The rows of a CSV file with a header holding a model's columns and its label
    column (any order; other columns are refused), featurised with the model's schema;
    indices are the rows' positions in the file."""
    table = read_table(path)
    expected = set(schema.columns) | {label_column}
    missing = [name for name in schema.columns + (label_column,) if name not in table.header]
    extra = [name for name in table.header if name not in expected]
    if missing or extra:
        parts = [f"{kind}: {', '.join(names)}" for kind, names in (("missing", missing), ("unknown", extra)) if names]
        raise DataError(
            f"{path}:1: the header's columns do not match the model's ({'; '.join(parts)}); expected "
            f"{', '.join(schema.columns)} and {label_column}, in any order."
        )
    positions = np.arange(len(table.rows))
    columns, labels = _parse(table, positions, schema, label_column, tuple(class_names))
    tabular.check_vocabulary(path, schema, columns, header=table.header)
    return Split(tabular.featurize(schema, columns), labels, positions)
