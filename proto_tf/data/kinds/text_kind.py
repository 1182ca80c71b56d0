"""Texts: DBPedia's documents and a user's CSV of documents, quantised per character."""

import numpy as np
import tensorflow as tf

from proto_tf.data import text, text_csv
from proto_tf.data.common import Split, csv_rows, iterate_text_lines
from proto_tf.data.csv_dataset import label_ids, read_table
from proto_tf.data.kinds.base import DataKind, ServingInputs, batches_of, existing_file
from proto_tf.errors import DataError


class TextKind(DataKind):
    """Character codes `[sequence_length]` of the dataset's alphabet, encoded by the
    VDCNN. A dataset with `text_columns` (a user's) reads CSV files by those header
    columns; DBPedia's rows are `class,"title","content"`."""

    name = "text"
    encoder = "vdcnn"

    def user_options(self, config):
        return text_csv.TextCsvOptions(
            config.text_columns, config.label_column, config.sequence_length, config.alphabet, config.test_fraction
        )

    def load_user_files(self, info, data_dir, seed, options):
        options = options or text_csv.TextCsvOptions()
        train, test, class_names, columns, label = text_csv.load(data_dir, options, seed)
        resolved = dict(
            input_shape=(options.sequence_length,), label_column=label, text_columns=columns, alphabet=options.alphabet
        )
        return train, test, class_names, resolved

    def serving_endpoints(self, info, preprocess):
        """`texts` (strings) through the character quantiser of the dataset."""
        quantizer = text.CharacterQuantizer(info.input_shape[0], info.alphabet)
        inputs = ServingInputs(
            {"texts": tf.TensorSpec([None], tf.string, name="texts")},
            lambda raw: preprocess(quantizer(raw["texts"])),
            layers=(quantizer,),
        )
        return {"": inputs}

    def export_description(self, info):
        return {"text_columns": list(info.text_columns or ()), "label_column": info.label_column}

    def read_inputs(self, path, specs, batch_size, description):
        """A text file with one document per line, or a CSV of documents: by its
        header's text columns (exports of a user's documents), else DBPedia's rows."""
        existing_file(path, "", "a text or CSV file")
        return _text_batches(path, batch_size, tuple(description.get("text_columns") or ()))

    def read_database(self, path, info, class_names):
        """A user's: a CSV with a header holding the model's text and label columns.
        DBPedia's: a CSV like its `train.csv`."""
        existing_file(path, "--database=", "a CSV file")
        quantizer = text.CharacterQuantizer(info.input_shape[0], info.alphabet)
        if info.text_columns:
            texts, labels = _labelled_documents(path, info, class_names)
        else:
            texts, labels = text.read_dbpedia_csv(path)
        return Split(text.quantize(texts, quantizer=quantizer), labels, np.arange(len(labels)))

    def raw_examples(self, info, data_dir, options, seed):
        if not info.user_data:
            train_path, test_path = text.dbpedia_files(data_dir)
            train_texts, train_labels = text.read_dbpedia_csv(train_path)
            test_texts, test_labels = text.read_dbpedia_csv(test_path)
            return {
                "train": np.array(train_texts),
                "test": np.array(test_texts),
                "train_labels": train_labels,
                "test_labels": test_labels,
                "class_names": text.CLASS_NAMES,
            }
        documents = text_csv.read_documents(
            data_dir, options or text_csv.TextCsvOptions(), seed, report=lambda line: None
        )
        test_rows = documents.positions[1]
        return {
            "train": np.array(documents.texts[0], object),
            "train_labels": documents.labels[0],
            "test": np.array([documents.texts[1][i] for i in test_rows], object),
            "test_labels": documents.labels[1][test_rows],
            "class_names": documents.class_names,
        }

    def request(self, examples, raw):
        return {"texts": tf.constant(list(examples))}

    def synthetic_inputs(self, info, size, rng):
        return rng.integers(0, len(info.alphabet or text.ALPHABET) + 1, size=(size, *info.input_shape))


def _labelled_documents(path, info, class_names):
    """Texts and labels of a CSV with a header holding the model's text and label columns."""
    table = read_table(path)
    missing = [name for name in (*info.text_columns, info.label_column) if name not in table.header]
    if missing:
        raise DataError(f"{path}:1: the header lacks {', '.join(missing)}; its columns: {', '.join(table.header)}.")
    class_id = label_ids(class_names)
    labels = []
    for line, row in zip(table.lines, table.rows):
        value = row[table.header.index(info.label_column)]
        label_id = class_id(value)
        if label_id is None:
            raise DataError(
                f"{path}:{line}: label {value!r} is not a class of the model; classes: {', '.join(class_names)}."
            )
        labels.append(label_id)
    return text_csv.joined_texts(table, info.text_columns), labels


def _documents(path, text_columns):
    if path.lower().endswith(".csv") and text_columns:
        table = read_table(path)
        missing = [name for name in text_columns if name not in table.header]
        if missing:
            raise DataError(
                f"{path}:1: the header lacks the text column(s) {', '.join(missing)}; its columns: "
                f"{', '.join(table.header)}."
            )
        yield from zip(table.lines, text_csv.joined_texts(table, text_columns))
    elif path.lower().endswith(".csv"):
        for line_number, row in csv_rows(path):
            if len(row) != 3:
                raise DataError(f'{path}:{line_number}: expected class,"title","content"; got {len(row)} field(s).')
            yield line_number, f"{row[1]} {row[2]}"
    else:
        for line_number, line in enumerate(iterate_text_lines(path), 1):
            if line.strip():
                yield line_number, line


def _text_batches(path, batch_size, text_columns):
    found = False
    for chunk in batches_of(_documents(path, text_columns), batch_size):
        found = True
        yield {"texts": np.asarray([text for _, text in chunk], object)}, [f"{path}:{n}" for n, _ in chunk]
    if not found:
        raise DataError(f"{path}: no documents found.")
