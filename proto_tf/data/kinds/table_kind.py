"""Tables: Adult's census rows and a user's CSV, through one schema (`tabular`)."""

import os

import numpy as np
import tensorflow as tf

from proto_tf.data import adult, csv_dataset, tabular
from proto_tf.data.common import Split, csv_rows
from proto_tf.data.kinds.base import DataKind, ServingInputs, batches_of, existing_file
from proto_tf.errors import DataError


class TableKind(DataKind):
    """Rows of named columns (numbers and categories), encoded by the tabular LSTM.
    A dataset's `TableFormat` (schema, label column, whether files have a header)
    says how its rows are read; Adult's files have no header, a user's do."""

    name = "tabular"
    encoder = "lstm"

    def user_options(self, config):
        return csv_dataset.CsvOptions(
            config.label_column,
            config.categorical_columns,
            config.numeric_columns,
            config.ignore_columns,
            config.max_categories,
            config.test_fraction,
        )

    def load_user_files(self, info, data_dir, seed, options):
        train, test, class_names, schema, label = csv_dataset.load(data_dir, options or csv_dataset.CsvOptions(), seed)
        return train, test, class_names, dict(input_shape=(schema.num_features,), schema=schema, label_column=label)

    def serving_endpoints(self, info, preprocess):
        """One input per column (numbers as float32, categories as strings), named by
        `TabularSchema.input_names`, through the dataset's TabularFeatures (which also
        counts unknown category strings: `unknown_categories`)."""
        schema = info.schema
        names = schema.input_names()
        signature = {
            name: tf.TensorSpec([None], tf.float32 if schema.is_numeric(column) else tf.string, name=name)
            for column, name in names.items()
        }
        features = tabular.TabularFeatures(schema)

        def columns(raw):
            return {column: raw[name] for column, name in names.items()}

        inputs = ServingInputs(
            signature,
            lambda raw: preprocess(features(columns(raw))),
            lambda raw: {"unknown_categories": features.unknown_fields(columns(raw))},
            (features,),
            {names[c.name]: c.valid_range for c in schema.numeric},
            {names[c.name] for c in schema.numeric if c.allow_missing},
        )
        return {"": inputs}

    def export_description(self, info):
        return {"table": table_format(info).to_json()}

    def read_inputs(self, path, specs, batch_size, description):
        """A CSV of rows: a header read by name in any column order (required for a
        user's table; Adult's rows also without one), the label column optional."""
        table = tabular.TableFormat.from_json(description["table"]) if "table" in description else adult.TABLE
        existing_file(path, "", "a CSV file")
        return _table_batches(path, table, batch_size)

    def read_database(self, path, info, class_names):
        """Adult: a CSV like `adult.data` (15 columns, the income last). A user's table:
        a CSV with a header holding the model's columns and label column."""
        existing_file(path, "--database=", "a CSV file")
        if table_format(info).header_required:
            return csv_dataset.read_labelled(path, info.schema, info.label_column, class_names)
        columns, labels = adult.read_adult_csv(path)
        return Split(tabular.featurize(info.schema, columns), labels, np.arange(len(labels)))

    def raw_examples(self, info, data_dir, options, seed):
        if table_format(info).header_required:
            tables = csv_dataset.read_tables(
                data_dir, options or csv_dataset.CsvOptions(), seed, report=lambda line: None
            )
            train, train_labels = csv_dataset.raw_columns(tables, 0)
            test, test_labels = csv_dataset.raw_columns(tables, 1)
            class_names, schema = tables.class_names, tables.schema
        else:
            train, train_labels = adult.read_adult_csv(os.path.join(data_dir, adult.TRAIN_FILE))
            test, test_labels = adult.read_adult_csv(os.path.join(data_dir, adult.TEST_FILE))
            class_names, schema = adult.CLASS_NAMES, info.schema
        return {
            "train": train,
            "test": test,
            "train_labels": train_labels,
            "test_labels": test_labels,
            "class_names": class_names,
            "schema": schema,
        }

    def request(self, examples, raw):
        names = raw["schema"].input_names()
        return {names[name]: tf.constant(column) for name, column in examples.items()}

    def reference_features(self, inputs):
        return inputs

    def synthetic_inputs(self, info, size, rng):
        return rng.normal(size=(size, *info.input_shape))


def table_format(info) -> tabular.TableFormat:
    """How files of a tabular dataset's rows are read: a user's need a header."""
    return tabular.TableFormat(info.schema, info.label_column, header_required=info.user_data)


def _header_order(path, row, schema, label_column, required):
    """Positions of `schema.columns` in the rows of a file whose first row is `row`, and
    the header's width; None when `row` is a data row (rows are then read in the
    schema's order). A header is read by name, the columns in any order (by their names
    or their serving input names), the label column allowed and ignored; unknown,
    missing or repeated names are a DataError naming them."""
    aliases = {name: column for column, name in schema.input_names().items()}
    aliases.update({column: column for column in schema.columns})
    names = [field.strip() for field in row]
    mapped = [aliases.get(name, name) for name in names]
    if not set(mapped) & set(schema.columns):
        if required:
            raise DataError(f"{path}:1: expected a header row naming the columns ({', '.join(schema.columns)}).")
        return None
    unknown = [name for name, column in zip(names, mapped) if column not in schema.columns and name != label_column]
    missing = [column for column in schema.columns if column not in mapped]
    repeated = sorted({column for column in mapped if mapped.count(column) > 1})
    if unknown or missing or repeated:
        problems = [
            f"{kind}: {', '.join(found)}"
            for kind, found in (("unknown", unknown), ("missing", missing), ("repeated", repeated))
            if found
        ]
        label = f", and optionally {label_column}" if label_column else ""
        raise DataError(
            f"{path}:1: the header's columns do not match the model's ({'; '.join(problems)}); "
            f"expected {', '.join(schema.columns)} in any order{label}."
        )
    return [mapped.index(column) for column in schema.columns], len(names)


def _table_rows(path, schema, label_column, header_required):
    """`(line number, the fields in schema.columns order)` of each data row."""
    order, count = None, len(schema.columns)
    expected = (count, count + 1) if label_column else (count,)
    for line_number, row in csv_rows(path, skipinitialspace=True):
        if row[0].startswith("|"):
            continue  # The UCI test file's first line.
        if order is None and line_number == 1:
            found = _header_order(path, row, schema, label_column, header_required)
            if found is not None:
                order, width = found
                expected = (width,)
                continue
        if len(row) not in expected:
            layout = (
                f"the {expected[0]} columns of the header"
                if order is not None
                else f"{count} comma-separated fields ({', '.join(schema.columns)})"
                + (f", optionally followed by {label_column}" if label_column else "")
            )
            raise DataError(f"{path}:{line_number}: expected {layout}; got {len(row)}.")
        yield line_number, row if order is None else [row[i] for i in order]


def _table_batches(path, table, batch_size):
    schema, label_column = table.schema, table.label_column
    names = schema.input_names()
    found = False
    rows = _table_rows(path, schema, label_column, table.header_required)
    for chunk in batches_of(rows, batch_size):
        found = True
        columns = {name: [] for name in schema.columns}
        for line_number, row in chunk:
            for number, (name, value) in enumerate(zip(schema.columns, row), 1):
                where = f"{path}:{line_number}: column {number} ({name})"
                columns[name].append(tabular.parse_value(schema, name, value, where))
        raw = {names[name]: array for name, array in tabular.as_arrays(schema, columns).items()}
        yield raw, [f"{path}:{line_number}" for line_number, _ in chunk]
    if not found:
        raise DataError(f"{path}: no rows found; expected rows of {', '.join(schema.columns)}.")
