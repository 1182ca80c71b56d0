"""A user's own documents: `train.csv` (and `test.csv`) with a header row, a text column
(or several, joined by a space as DBPedia's title and content) and a label column.

`--dataset=text_csv --data_dir=DIR [--text_columns=NAME] [--label_column=NAME]`. The
label is the last column unless named; the text is every other column unless named.
Texts are quantised per character as DBPedia's (`text.CharacterQuantizer`: its
69-character alphabet and length 448 by default, `--alphabet` and
`--sequence_length`). Without `test.csv`, a fixed-seed share of `train.csv` is held out.
"""

import dataclasses
import os

import numpy as np

from proto_tf.data import text
from proto_tf.data.common import Split, hold_out
from proto_tf.data.csv_dataset import label_ids, read_table, require_two_classes, sorted_class_names, training_table
from proto_tf.errors import DataError


@dataclasses.dataclass(frozen=True)
class TextCsvOptions:
    """How a user's documents are read (flags of the same names)."""

    text_columns: tuple = ()  # (): every column but the label.
    label_column: str | None = None  # None: the last column.
    sequence_length: int = text.SEQUENCE_LENGTH
    alphabet: str = "".join(text.ALPHABET)
    test_fraction: float = 0.2


@dataclasses.dataclass
class Documents:
    """Both splits' texts and labels (`texts[0]` / `labels[0]`: every row of train.csv,
    which prototypes are numbered by), the rows of each split, and the class names."""

    texts: tuple
    labels: tuple
    positions: tuple
    class_names: tuple
    text_columns: tuple
    label_column: str


def read_documents(data_dir: str, options: TextCsvOptions = TextCsvOptions(), seed: int = 0, report=print) -> Documents:
    """The documents of `data_dir` (see the module docstring)."""
    train, test_path, label = training_table(data_dir, "text_csv", options.label_column)
    train_path = train.path
    columns = tuple(options.text_columns) or tuple(name for name in train.header if name != label)
    unknown = [name for name in columns if name not in train.header]
    if unknown or label in columns or not columns:
        raise DataError(
            f"--text_columns={','.join(columns)}: give columns of {train_path} other than the label "
            f"{label!r}; its columns: {', '.join(train.header)}."
        )
    tables = [train]
    if os.path.isfile(test_path):
        test = read_table(test_path)
        missing = [name for name in (*columns, label) if name not in test.header]
        if missing:
            raise DataError(
                f"{test_path}:1: the header lacks {', '.join(missing)}; its columns: {', '.join(test.header)}."
            )
        tables.append(test)
    texts = [joined_texts(table, columns) for table in tables]
    for table, table_texts in zip(tables, texts):
        empty = sum(not text.strip() for text in table_texts)
        if empty == len(table_texts):
            raise DataError(f"{table.path}: every text ({', '.join(columns)}) is empty; there is nothing to read.")
        if empty:
            report(
                f"warning: {table.path}: {empty} of {len(table_texts)} rows have an empty text "
                f"({', '.join(columns)}); they are read as empty documents."
            )
    values = [[row[table.header.index(label)] for row in table.rows] for table in tables]
    everything = np.arange(len(train.rows))
    if len(tables) == 2:
        train_rows, test_rows = everything, np.arange(len(tables[1].rows))
    else:
        train_rows, test_rows = hold_out(len(everything), options.test_fraction, seed, train_path, "rows", report)
        texts.append(texts[0])
        values.append(values[0])
        tables.append(train)
    class_names = sorted_class_names({values[0][i] for i in train_rows})
    require_two_classes(train.path, label, class_names)
    class_id = label_ids(class_names)
    labels, training = [], set(train_rows.tolist())
    for split, (table, rows) in enumerate(zip(tables, (everything, test_rows))):
        split_labels = np.full(len(values[split]), -1, np.int32)
        for i in rows:
            value = values[split][i]
            label_id = class_id(value)
            if label_id is None:
                if split == 0 and i not in training:
                    continue  # A held-out row's label the training split does not have.
                raise DataError(
                    f"{table.path}:{table.lines[i]}: label {value!r} is not a class of the training "
                    f"rows; classes: {', '.join(class_names[:20])}."
                )
            split_labels[i] = label_id
        labels.append(split_labels)
    return Documents(tuple(texts), tuple(labels), (train_rows, test_rows), class_names, columns, label)


def joined_texts(table, columns) -> list:
    """Each row's text: the fields of `columns` (present in the header) joined by a space."""
    positions = [table.header.index(name) for name in columns]
    return [" ".join(row[i] for i in positions) for row in table.rows]


def load(data_dir: str, options: TextCsvOptions = TextCsvOptions(), seed: int = 0, report=print) -> tuple:
    """`(train Split, test Split, class names, text columns, label column)`; inputs are
    character codes, indices the rows' positions in their file."""
    documents = read_documents(data_dir, options, seed, report)
    quantizer = text.CharacterQuantizer(options.sequence_length, options.alphabet)
    splits = []
    for split, rows in enumerate(documents.positions):
        chosen = [documents.texts[split][i] for i in rows]
        codes = text.quantize(chosen, quantizer=quantizer)
        splits.append(Split(codes, documents.labels[split][rows], rows))
    return splits[0], splits[1], documents.class_names, documents.text_columns, documents.label_column
