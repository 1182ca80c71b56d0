"""UCI Adult Census Income (Appendix A.3.1): raw columns -> the paper's feature vector.

Categorical columns become one-hot blocks over the vocabulary of `adult.names`
(together a multi-hot vector); a missing value `?` (or any unknown value) gives an
all-zero block. Continuous columns use the paper's fixed transforms. The paper
takes the log of capital gain/loss, which is -inf for the common value 0: this
uses log(1 + x) there, so 0 maps to (0 - 5) / 5 = -1.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from proto_tf.data.common import Split, csv_rows, missing_data, require_rows
from proto_tf.errors import DataError

URL = "https://archive.ics.uci.edu/static/public/2/adult.zip"
TRAIN_FILE, TEST_FILE = "adult.data", "adult.test"
CLASS_NAMES = ("<=50K", ">50K")

COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country",
)  # fmt: skip

# Continuous column -> (offset, scale, log): feature = (f(x) - offset) / scale, with
# f = log for fnlwgt, log1p for the capital columns, identity otherwise.
CONTINUOUS = {
    "age": (50.0, 30.0, None),
    "fnlwgt": (9.0, 3.0, "log"),
    "education-num": (6.0, 6.0, None),
    "capital-gain": (5.0, 5.0, "log1p"),
    "capital-loss": (5.0, 5.0, "log1p"),
    "hours-per-week": (50.0, 50.0, None),
}

# The values a census record can take, for every continuous column; anything outside
# (NaN, infinities, a negative weight or gain, an age of 1e38) is rejected when files
# are read and by the serving graph, never mapped to a number the model was not
# trained on.
VALID_RANGES = {
    "age": (0.0, 130.0),
    "fnlwgt": (1.0, 1e8),
    "education-num": (1.0, 16.0),
    "capital-gain": (0.0, 1e7),
    "capital-loss": (0.0, 1e7),
    "hours-per-week": (0.0, 168.0),
}

CATEGORICAL = {
    "workclass": ("Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov",
                  "State-gov", "Without-pay", "Never-worked"),
    "education": ("Bachelors", "Some-college", "11th", "HS-grad", "Prof-school", "Assoc-acdm",
                  "Assoc-voc", "9th", "7th-8th", "12th", "Masters", "1st-4th", "10th",
                  "Doctorate", "5th-6th", "Preschool"),
    "marital-status": ("Married-civ-spouse", "Divorced", "Never-married", "Separated",
                       "Widowed", "Married-spouse-absent", "Married-AF-spouse"),
    "occupation": ("Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial",
                   "Prof-specialty", "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical",
                   "Farming-fishing", "Transport-moving", "Priv-house-serv", "Protective-serv",
                   "Armed-Forces"),
    "relationship": ("Wife", "Own-child", "Husband", "Not-in-family", "Other-relative",
                     "Unmarried"),
    "race": ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"),
    "sex": ("Female", "Male"),
    "native-country": ("United-States", "Cambodia", "England", "Puerto-Rico", "Canada",
                       "Germany", "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece",
                       "South", "China", "Cuba", "Iran", "Honduras", "Philippines", "Italy",
                       "Poland", "Jamaica", "Vietnam", "Mexico", "Portugal", "Ireland", "France",
                       "Dominican-Republic", "Laos", "Ecuador", "Taiwan", "Haiti", "Columbia",
                       "Hungary", "Guatemala", "Nicaragua", "Scotland", "Thailand", "Yugoslavia",
                       "El-Salvador", "Trinadad&Tobago", "Peru", "Hong", "Holand-Netherlands"),
}  # fmt: skip

NUM_FEATURES = len(CONTINUOUS) + sum(len(v) for v in CATEGORICAL.values())  # 105


@keras.saving.register_keras_serializable(package="proto_tf")
class AdultFeatures(keras.layers.Layer):
    """Maps a dict of raw Adult columns (`[B]` each) to the `[B, 105]` feature vector.

    Continuous features come first in `CONTINUOUS` order, then one block per
    categorical column in `CATEGORICAL` order. Strings are stripped of surrounding
    spaces, as in the UCI files. Everything is TF ops, so the layer can live in a
    serving graph.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lookups = {
            name: keras.layers.StringLookup(
                vocabulary=list(vocabulary), num_oov_indices=1, output_mode="one_hot",
                name=f"lookup_{name.replace('-', '_')}",
            )
            for name, vocabulary in CATEGORICAL.items()
        }
        self.built = True

    def call(self, columns):
        missing = [name for name in COLUMNS if name not in columns]
        if missing:
            raise ValueError(f"Missing Adult columns: {', '.join(missing)}; expected {COLUMNS}.")
        blocks = []
        for name, (offset, scale, log) in CONTINUOUS.items():
            value = tf.cast(columns[name], tf.float32)
            if log == "log":
                value = tf.math.log(value)
            elif log == "log1p":
                value = tf.math.log1p(value)
            blocks.append(((value - offset) / scale)[:, None])
        for name, lookup in self.lookups.items():
            one_hot = lookup(tf.strings.strip(columns[name]))
            blocks.append(tf.cast(one_hot[:, 1:], tf.float32))  # Drop the unknown slot.
        return tf.concat(blocks, axis=-1)

    def unknown_fields(self, columns):
        """How many categorical columns of each row hold a value outside the vocabulary
        (`?` included): `[B]` int32. Such a column is an all-zero block."""
        unknown = [
            lookup(tf.strings.strip(columns[name]))[:, 0] for name, lookup in self.lookups.items()
        ]
        return tf.cast(tf.add_n(unknown), tf.int32)

    def compute_output_shape(self, input_shape):
        return (None, NUM_FEATURES)


def read_adult_csv(path, report=print):
    """Reads an Adult file into `(columns dict of numpy arrays, labels)`.

    Skips blank lines and the test file's `|1x3 Cross validator` header; strips the
    test labels' trailing `.`. Every field is checked: a DataError names the file, the
    line, the column and what is valid (a number in `VALID_RANGES`, a known label,
    UTF-8 text, at least one row). Categorical values outside the vocabulary become
    all-zero blocks like `?`: they are counted per column and `report`ed, and a column
    where they are most of the values is refused (`check_vocabulary`).
    """
    values = {name: [] for name in COLUMNS}
    labels = []
    for line_number, row in csv_rows(path, skipinitialspace=True):
        if row[0].startswith("|"):
            continue
        where = f"{path}:{line_number}"
        if len(row) != len(COLUMNS) + 1:
            raise DataError(
                f"{where}: expected {len(COLUMNS) + 1} comma-separated fields "
                f"({', '.join(COLUMNS)}, income), got {len(row)}."
            )
        for name, value in parse_fields(row, where).items():
            values[name].append(value)
        label = row[-1].strip().rstrip(".")
        if label not in CLASS_NAMES:
            raise DataError(
                f"{where}: column {len(row)} (income): unknown label {row[-1]!r}; "
                f"valid: {', '.join(CLASS_NAMES)}."
            )
        labels.append(CLASS_NAMES.index(label))
    require_rows(path, len(labels), f"rows of {len(COLUMNS) + 1} comma-separated fields")
    columns = {
        name: np.asarray(column, np.float32 if name in CONTINUOUS else object)
        for name, column in values.items()
    }
    check_vocabulary(path, columns, report)
    return columns, np.asarray(labels, np.int32)


# A categorical column with more than this share of values outside its vocabulary is
# refused: its one-hot block would be (almost) all zeros, so the column would be lost.
MAX_UNKNOWN_SHARE = 0.5
MISSING_VALUE = "?"


def unknown_value_counts(columns: dict) -> dict:
    """`{column: (count, most common unknown values)}` of the categorical values outside
    the vocabulary (`?`, Adult's missing value, not counted), for columns that have any."""
    found = {}
    for name, vocabulary in CATEGORICAL.items():
        known = set(vocabulary) | {MISSING_VALUE}
        unknown = [value for value in columns[name] if value not in known]
        if unknown:
            kinds, counts = np.unique(np.asarray(unknown, object).astype(str), return_counts=True)
            examples = [str(kinds[i]) for i in np.argsort(-counts, kind="stable")[:3]]
            found[name] = (len(unknown), examples)
    return found


def check_vocabulary(path: str, columns: dict, report=print) -> None:
    """Reports the unknown categorical values of each column of a file (they become
    all-zero blocks like `?`) and raises a DataError when a column is mostly unknown,
    naming the column, the counts, examples and the valid values."""
    rows = len(columns[COLUMNS[0]])
    for name, (count, examples) in unknown_value_counts(columns).items():
        column = COLUMNS.index(name) + 1
        shown = ", ".join(repr(value) for value in examples)
        if count > MAX_UNKNOWN_SHARE * rows:
            raise DataError(
                f"{path}: column {column} ({name}): {count} of {rows} values are not in its "
                f"vocabulary (most common: {shown}); valid: {', '.join(CATEGORICAL[name])} "
                f"(or {MISSING_VALUE} for a missing value)."
            )
        report(
            f"warning: {path}: column {column} ({name}): {count} of {rows} values are not in "
            f"its vocabulary (most common: {shown}); they are treated as missing ({MISSING_VALUE})."
        )


def parse_fields(row: list[str], where: str) -> dict:
    """The 14 columns of a CSV row: stripped strings, and numbers checked against
    `VALID_RANGES` (a DataError names `where`, the column and the range)."""
    fields = {}
    for column_number, (name, value) in enumerate(zip(COLUMNS, row), 1):
        value = value.strip()
        if name in CONTINUOUS:
            value = parse_number(value, name, f"{where}: column {column_number} ({name})")
        fields[name] = value
    return fields


def parse_number(text: str, name: str, where: str) -> float:
    """`text` as a number of column `name`; a DataError at `where` when it is not one
    in `VALID_RANGES`."""
    low, high = VALID_RANGES[name]
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # Also false for NaN.
        raise DataError(f"{where}: {text!r} is not a number in [{low:g}, {high:g}].")
    return value


def featurize(columns, batch_size=8192):
    """Feature vectors `[N, 105]` (float32) of raw columns, computed in batches."""
    layer = AdultFeatures()
    count = len(next(iter(columns.values())))
    parts = [
        layer({name: column[start:start + batch_size] for name, column in columns.items()}).numpy()
        for start in range(0, count, batch_size)
    ]
    return np.concatenate(parts, axis=0)


def load(data_dir):
    """Loads the train and test splits of `adult.data` / `adult.test` in `data_dir`."""
    paths = [os.path.join(data_dir, name) for name in (TRAIN_FILE, TEST_FILE)]
    if not all(os.path.isfile(path) for path in paths):
        raise missing_data("Adult", paths, URL)
    splits = []
    for path in paths:
        columns, labels = read_adult_csv(path)
        splits.append(Split(featurize(columns), labels, np.arange(len(labels))))
    return splits
