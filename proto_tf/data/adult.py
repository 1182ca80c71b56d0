"""UCI Adult Census Income (Appendix A.3.1): raw columns -> the paper's feature vector.

Categorical columns become one-hot blocks over the vocabulary of `adult.names`
(together a multi-hot vector); a missing value `?` (or any unknown value) gives an
all-zero block. Continuous columns use the paper's fixed transforms. The paper
takes the log of capital gain/loss, which is -inf for the common value 0: this
uses log(1 + x) there, so 0 maps to (0 - 5) / 5 = -1.
"""

import os

import numpy as np

from proto_tf.data import tabular
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

MISSING_VALUE = "?"

# The paper's fixed transforms and vocabularies as a tabular schema: the generic CSV
# path (proto_tf.data.tabular) makes Adult's features, in the same order as Appendix
# A.3.1 (continuous columns first, then one block per categorical column).
SCHEMA = tabular.TabularSchema(
    columns=COLUMNS,
    numeric=tuple(
        tabular.NumericColumn(name, offset, scale, transform, VALID_RANGES[name], allow_missing=False)
        for name, (offset, scale, transform) in CONTINUOUS.items()
    ),
    categorical=tuple(tabular.CategoricalColumn(name, vocabulary) for name, vocabulary in CATEGORICAL.items()),
    missing_tokens=(MISSING_VALUE,),
)
NUM_FEATURES = SCHEMA.num_features  # 105
# Files of new people for predictions: Adult's columns with or without a header row.
TABLE = tabular.TableFormat(SCHEMA, "income", header_required=False)


def read_adult_csv(path, report=print):
    """Reads an Adult file into `(columns dict of numpy arrays, labels)`.

    Skips blank lines and the test file's `|1x3 Cross validator` header; strips the
    test labels' trailing `.`. Every field is checked: a DataError names the file, the
    line, the column and what is valid (a number in `VALID_RANGES`, a known label,
    UTF-8 text, at least one row). Categorical values outside the vocabulary become
    all-zero blocks like `?`: they are counted per column and `report`ed, and a column
    where they are most of the values is refused (`tabular.check_vocabulary`).
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
                f"{where}: column {len(row)} (income): unknown label {row[-1]!r}; valid: {', '.join(CLASS_NAMES)}."
            )
        labels.append(CLASS_NAMES.index(label))
    require_rows(path, len(labels), f"rows of {len(COLUMNS) + 1} comma-separated fields")
    columns = tabular.as_arrays(SCHEMA, values)
    tabular.check_vocabulary(path, SCHEMA, columns, report)
    return columns, np.asarray(labels, np.int32)


def parse_fields(row: list[str], where: str) -> dict:
    """The 14 columns of a CSV row: stripped strings, and numbers checked against
    `VALID_RANGES` (a DataError names `where`, the column and the range)."""
    return {
        name: tabular.parse_value(SCHEMA, name, value, f"{where}: column {number} ({name})")
        for number, (name, value) in enumerate(zip(COLUMNS, row), 1)
    }


def featurize(columns, batch_size=8192):
    """Feature vectors `[N, 105]` (float32) of raw columns, computed in batches."""
    return tabular.featurize(SCHEMA, columns, batch_size)


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
