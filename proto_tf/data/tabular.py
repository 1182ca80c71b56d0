"""Tables of named columns -> feature vectors: one schema, one Keras layer, one reader.

A `TabularSchema` says what each column is: a numeric column is mapped to
`(f(x) - offset) / scale` (f the identity, log or log1p) and checked against a valid
range; a categorical column becomes a one-hot block over its vocabulary, all zeros for
a missing or unknown value. Adult is such a schema with the paper's fixed transforms
(`adult.SCHEMA`); a user's CSV gets one inferred from its training file
(`infer_schema`): numeric columns standardised with the training mean and standard
deviation, a missing value mapped to the mean with a 0/1 indicator feature beside it
(when the training file had missing values in that column).

`TabularFeatures` applies a schema with TF ops only, so the same layer makes the
training features and runs inside the serving graph.
"""

import dataclasses
import math
import re

import keras
import numpy as np
import tensorflow as tf

from proto_tf.errors import DataError

# Text that means "no value" in a CSV field (compared after stripping, case-insensitively).
MISSING_TOKENS = ("", "?", "na", "n/a", "nan", "null", "none")
# A categorical column with more than this share of values outside its vocabulary is
# refused: its one-hot block would be (almost) all zeros, so the column would be lost.
MAX_UNKNOWN_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class NumericColumn:
    """A numeric column: feature `(f(x) - offset) / scale`, values in `valid_range`.

    `transform` is None, "log" or "log1p". With `missing_indicator`, a missing value
    (NaN at serving) maps to the feature 0 and a second feature is 1; without it, a
    missing value is refused when `allow_missing` is False, else mapped to 0.
    """

    name: str
    offset: float = 0.0
    scale: float = 1.0
    transform: str | None = None
    valid_range: tuple = (-math.inf, math.inf)
    allow_missing: bool = True
    missing_indicator: bool = False


@dataclasses.dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column: a one-hot block over `vocabulary` (stripped strings)."""

    name: str
    vocabulary: tuple


@dataclasses.dataclass(frozen=True)
class TabularSchema:
    """The columns a model reads, in feature order: numeric features (each followed by
    nothing), then the missing indicators, then one block per categorical column.
    `columns` is the order of the columns in the file (the label column excluded)."""

    columns: tuple
    numeric: tuple
    categorical: tuple
    missing_tokens: tuple = MISSING_TOKENS

    @property
    def num_features(self) -> int:
        indicators = sum(column.missing_indicator for column in self.numeric)
        return len(self.numeric) + indicators + sum(len(c.vocabulary) for c in self.categorical)

    def column(self, name):
        return next(c for c in self.numeric + self.categorical if c.name == name)

    def is_numeric(self, name) -> bool:
        return any(column.name == name for column in self.numeric)

    def input_names(self) -> dict:
        """`{column name: serving input name}`: valid, unique TensorFlow names."""
        return input_names(self.columns)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "TabularSchema":
        numeric = tuple(NumericColumn(**dict(c, valid_range=tuple(c["valid_range"]))) for c in value["numeric"])
        categorical = tuple(CategoricalColumn(c["name"], tuple(c["vocabulary"])) for c in value["categorical"])
        return cls(tuple(value["columns"]), numeric, categorical, tuple(value["missing_tokens"]))


@dataclasses.dataclass(frozen=True)
class TableFormat:
    """How files of inputs for a tabular model are read: the schema, the label column
    a file may also hold (ignored), and whether a header row is required (else rows
    may give the columns in the schema's order)."""

    schema: TabularSchema
    label_column: str | None
    header_required: bool

    def to_json(self) -> dict:
        return {
            "schema": self.schema.to_json(),
            "label_column": self.label_column,
            "header_required": self.header_required,
            "inputs": self.schema.input_names(),
        }

    @classmethod
    def from_json(cls, value: dict) -> "TableFormat":
        return cls(TabularSchema.from_json(value["schema"]), value["label_column"], value["header_required"])


def input_names(columns) -> dict:
    """`{column: name}` with each name a valid signature key (letters, digits, `_`,
    not starting with a digit), unique: `capital-gain` -> `capital_gain`,
    `Age (years)` -> `Age_years`, a second `a b` -> `a_b_2`."""
    names, used = {}, set()
    for column in columns:
        name = re.sub(r"[^0-9A-Za-z_]+", "_", column).strip("_") or "column"
        if name[0].isdigit():
            name = f"c_{name}"
        candidate, index = name, 2
        while candidate in used:
            candidate, index = f"{name}_{index}", index + 1
        used.add(candidate)
        names[column] = candidate
    return names


def is_missing(text: str, tokens=MISSING_TOKENS) -> bool:
    return text.strip().lower() in tokens


@keras.saving.register_keras_serializable(package="proto_tf")
class TabularFeatures(keras.layers.Layer):
    """Maps a dict of raw columns (`[B]` each; numbers as float32 with NaN for a missing
    value, categories as strings) to the `[B, schema.num_features]` feature vector."""

    def __init__(self, schema: TabularSchema | dict, **kwargs):
        super().__init__(**kwargs)
        self.schema = schema if isinstance(schema, TabularSchema) else TabularSchema.from_json(schema)
        names = self.schema.input_names()
        self.lookups = {
            column.name: keras.layers.StringLookup(
                vocabulary=list(column.vocabulary),
                num_oov_indices=1,
                output_mode="one_hot",
                name=f"lookup_{names[column.name]}",
            )
            for column in self.schema.categorical
        }
        self.built = True

    def call(self, columns):
        missing = [name for name in self.schema.columns if name not in columns]
        if missing:
            raise ValueError(f"Missing columns: {', '.join(missing)}; expected {self.schema.columns}.")
        values, indicators = [], []
        for column in self.schema.numeric:
            value = tf.cast(columns[column.name], tf.float32)
            absent = tf.math.is_nan(value)
            if column.transform == "log":
                value = tf.math.log(value)
            elif column.transform == "log1p":
                value = tf.math.log1p(value)
            feature = (value - column.offset) / column.scale
            if column.allow_missing:
                feature = tf.where(absent, tf.zeros_like(feature), feature)
            values.append(feature[:, None])
            if column.missing_indicator:
                indicators.append(tf.cast(absent, tf.float32)[:, None])
        blocks = values + indicators
        for column in self.schema.categorical:
            one_hot = self.lookups[column.name](tf.strings.strip(columns[column.name]))
            blocks.append(tf.cast(one_hot[:, 1:], tf.float32))  # Drop the unknown slot.
        return tf.concat(blocks, axis=-1)

    def unknown_fields(self, columns):
        """How many categorical columns of each row hold a value outside the vocabulary
        (a missing value included): `[B]` int32. Such a column is an all-zero block."""
        unknown = [
            self.lookups[column.name](tf.strings.strip(columns[column.name]))[:, 0]
            for column in self.schema.categorical
        ]
        if not unknown:
            return tf.zeros(tf.shape(next(iter(columns.values())))[:1], tf.int32)
        return tf.cast(tf.add_n(unknown), tf.int32)

    def compute_output_shape(self, input_shape):
        return (None, self.schema.num_features)

    def get_config(self):
        config = super().get_config()
        config.update({"schema": self.schema.to_json()})
        return config


def featurize(schema: TabularSchema, columns: dict, batch_size: int = 8192) -> np.ndarray:
    """Feature vectors `[N, num_features]` (float32) of raw columns, in batches."""
    layer = TabularFeatures(schema)
    count = len(next(iter(columns.values())))
    parts = [
        layer({name: column[start : start + batch_size] for name, column in columns.items()}).numpy()
        for start in range(0, count, batch_size)
    ]
    return np.concatenate(parts, axis=0) if parts else np.zeros([0, schema.num_features], np.float32)


# === Reading files ===


def parse_value(schema: TabularSchema, name: str, text: str, where: str):
    """A field as the layer takes it: a float (NaN when missing) for a numeric column,
    a stripped string for a categorical one; a DataError names `where` and what is valid."""
    text = text.strip()
    if not schema.is_numeric(name):
        return text
    column = schema.column(name)
    if is_missing(text, schema.missing_tokens) and column.allow_missing:
        return math.nan
    low, high = column.valid_range
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:  # NaN fails too.
        valid = "a finite number" if math.isinf(low) and math.isinf(high) else f"a number in [{low:g}, {high:g}]"
        missing = (
            f" or a missing value ({', '.join(repr(t) for t in schema.missing_tokens)})" if column.allow_missing else ""
        )
        raise DataError(f"{where}: {text!r} is not {valid}{missing}.")
    return value


def as_arrays(schema: TabularSchema, values: dict) -> dict:
    """Lists of parsed fields -> numpy arrays (float32 numbers, object strings)."""
    return {
        name: np.asarray(column, np.float32 if schema.is_numeric(name) else object) for name, column in values.items()
    }


def unknown_value_counts(schema: TabularSchema, columns: dict) -> dict:
    """`{column: (count, most common unknown values)}` of the categorical values outside
    the vocabulary (missing values not counted), for columns that have any."""
    found = {}
    for column in schema.categorical:
        known = set(column.vocabulary)
        unknown = [
            value
            for value in columns[column.name]
            if value not in known and not is_missing(value, schema.missing_tokens)
        ]
        if unknown:
            kinds, counts = np.unique(np.asarray(unknown, object).astype(str), return_counts=True)
            examples = [str(kinds[i]) for i in np.argsort(-counts, kind="stable")[:3]]
            found[column.name] = (len(unknown), examples)
    return found


def check_vocabulary(path: str, schema: TabularSchema, columns: dict, report=print, header=None) -> None:
    """Reports the unknown categorical values of each column of a file (they become
    all-zero blocks like a missing value) and raises a DataError when a column is
    mostly unknown, naming the column (its position in `header`, the file's column
    names, else in the schema), the counts, examples and the valid values."""
    rows = len(next(iter(columns.values())))
    token = schema.missing_tokens[0] if schema.missing_tokens else ""
    missing_token = token or "an empty field"
    as_missing = f"missing ({token})" if token else "missing values"
    order = list(header) if header is not None else list(schema.columns)
    for name, (count, examples) in unknown_value_counts(schema, columns).items():
        where = f"column {order.index(name) + 1} ({name})"
        shown = ", ".join(repr(value) for value in examples)
        vocabulary = schema.column(name).vocabulary
        valid = ", ".join(vocabulary[:30]) + (f", … ({len(vocabulary)} values)" if len(vocabulary) > 30 else "")
        if count > MAX_UNKNOWN_SHARE * rows:
            raise DataError(
                f"{path}: {where}: {count} of {rows} values are not in its vocabulary (most "
                f"common: {shown}); valid: {valid} (or {missing_token} for a missing value)."
            )
        report(
            f"warning: {path}: {where}: {count} of {rows} values are not in its vocabulary "
            f"(most common: {shown}); they are treated as {as_missing}."
        )


def report_missing(path: str, schema: TabularSchema, columns: dict, report=print) -> None:
    """Reports how many values of each column are missing (one line for the file)."""
    counts = {}
    for name in schema.columns:
        column = columns[name]
        if schema.is_numeric(name):
            count = int(np.isnan(column.astype(np.float32)).sum())
        else:
            count = sum(is_missing(value, schema.missing_tokens) for value in column)
        if count:
            counts[name] = count
    if counts:
        rows = len(next(iter(columns.values())))
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        report(f"{path}: missing values (of {rows} rows): {listed}.")


# A value this many standard deviations from a column's training mean is refused (in
# test files, --database files and serving requests): no real value lies there (every
# training value is within sqrt(n) of them), and an answer for 1e30 would be confident
# nonsense. 1e4 covers training files of up to 1e8 rows.
VALID_STANDARD_DEVIATIONS = 1e4


def infer_schema(
    path: str,
    header: list,
    rows: list,
    categorical: tuple = (),
    numeric: tuple = (),
    max_categories: int = 1000,
    lines: list | None = None,
) -> TabularSchema:
    """The schema of a training file's columns (`header`, `rows` of stripped fields,
    the label column already removed; `lines`: each row's line in the file).

    A column is numeric when every non-missing value is a finite number, else
    categorical; `categorical` / `numeric` name columns to force. Numeric columns are
    standardised with the training mean and standard deviation (1 when constant), accept
    values within `VALID_STANDARD_DEVIATIONS` of them, and get
    a missing indicator when the file has missing values there; categorical
    vocabularies are the sorted values of the file. A column that is entirely missing,
    a forced numeric column holding text, or a categorical column with more than
    `max_categories` values is a DataError naming it.
    """
    for flag, names in (("--categorical_columns", categorical), ("--numeric_columns", numeric)):
        unknown = [name for name in names if name not in header]
        if unknown:
            raise DataError(
                f"{flag}: {path} has no column {', '.join(map(repr, unknown))}; its columns: {', '.join(header)}."
            )
    both = sorted(set(categorical) & set(numeric))
    if both:
        raise DataError(f"--categorical_columns and --numeric_columns both name {', '.join(both)}.")
    numeric_columns, categorical_columns = [], []
    for index, name in enumerate(header):
        texts = [row[index] for row in rows]
        present = [text for text in texts if not is_missing(text)]
        if not present:
            raise DataError(
                f"{path}: column {index + 1} ({name}) is entirely missing (every value is one of "
                f"{', '.join(repr(t) for t in MISSING_TOKENS)}); remove it or fill it in."
            )
        numbers = _as_numbers(present)
        if numbers is None and name not in categorical:
            _refuse_non_finite_numbers(path, index, name, texts, lines)
        if name in numeric and numbers is None:
            bad = next(text for text in present if _as_numbers([text]) is None)
            raise DataError(
                f"--numeric_columns: column {index + 1} ({name}) of {path} holds {bad!r}, not a finite number."
            )
        if numbers is not None and name not in categorical:
            mean, std = float(np.mean(numbers)), float(np.std(numbers))
            scale = std if std > 0 else 1.0
            numeric_columns.append(
                NumericColumn(
                    name,
                    offset=mean,
                    scale=scale,
                    valid_range=(mean - VALID_STANDARD_DEVIATIONS * scale, mean + VALID_STANDARD_DEVIATIONS * scale),
                    missing_indicator=len(present) < len(texts),
                )
            )
        else:
            vocabulary = tuple(sorted(set(present)))
            if len(vocabulary) > max_categories:
                raise DataError(
                    f"{path}: column {index + 1} ({name}) has {len(vocabulary)} distinct values, more "
                    f"than --max_categories={max_categories} for a categorical column: give it in "
                    "--numeric_columns if it is a number, or leave it out with --ignore_columns."
                )
            categorical_columns.append(CategoricalColumn(name, vocabulary))
    return TabularSchema(tuple(header), tuple(numeric_columns), tuple(categorical_columns))


def _refuse_non_finite_numbers(path, index, name, texts, lines):
    """A DataError for a column of numbers of which one is not finite (`inf`, `nan`,
    `1e400`): it would make the column categorical without a word (a test file refuses
    such a value)."""
    parsed = []
    for position, text in enumerate(texts):
        if is_missing(text):
            continue
        try:
            parsed.append((position, float(text)))
        except ValueError:
            return  # Text: a categorical column.
    position = next((p for p, number in parsed if not math.isfinite(number)), None)
    if position is None:
        return
    line = lines[position] if lines is not None else position + 2
    raise DataError(
        f"{path}:{line}: column {index + 1} ({name}): {texts[position]!r} is not a finite number, in a "
        "column of numbers; fix it, mark it missing (e.g. '?'), or give the column in --categorical_columns."
    )


def _as_numbers(texts):
    """The values of `texts` as float64, or None when one is not a finite number."""
    try:
        numbers = np.asarray([float(text) for text in texts], np.float64)
    except ValueError:
        return None
    return numbers if np.isfinite(numbers).all() else None
