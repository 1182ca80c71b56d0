"""DBPedia (Appendix A.2.1): CSV rows -> character codes of the 69-character alphabet.

Text is lower-cased and quantised per character with Zhang & LeCun's (2015) alphabet
(26 letters, 10 digits, 32 symbols and the new line: 69 characters, codes 1..69).
Every other character, the space included, maps to 0, as does padding: Zhang &
LeCun quantise such characters to all-zero vectors. Texts are truncated or padded
to 448 characters. All TF ops, so the same layer runs in a serving graph.
"""

import csv
import os

import keras
import numpy as np
import tensorflow as tf

from proto_tf.data.common import Split, missing_data, read_text_lines, require_rows
from proto_tf.errors import DataError

URL = "https://github.com/le-scientifique/torchDatasets/raw/master/dbpedia_csv.tar.gz"
SEQUENCE_LENGTH = 448
ALPHABET = tuple(dict.fromkeys("abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+=<>()[]{}\n"))
CLASS_NAMES = (
    "Company",
    "EducationalInstitution",
    "Artist",
    "Athlete",
    "OfficeHolder",
    "MeanOfTransportation",
    "Building",
    "NaturalPlace",
    "Village",
    "Animal",
    "Plant",
    "Album",
    "Film",
    "WrittenWork",
)
assert len(ALPHABET) == 69


@keras.saving.register_keras_serializable(package="proto_tf")
class CharacterQuantizer(keras.layers.Layer):
    """Maps a `[B]` batch of strings to int32 codes `[B, sequence_length]`.

    Invalid UTF-8 is replaced, characters outside the alphabet become 0, longer
    texts are truncated and shorter ones padded with 0.
    """

    def __init__(self, sequence_length=SEQUENCE_LENGTH, alphabet=None, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        # Characters in order, each once; codes 1..len (0: outside it, and padding).
        self.alphabet = "".join(dict.fromkeys(alphabet)) if alphabet else "".join(ALPHABET)
        self.lookup = keras.layers.StringLookup(vocabulary=list(self.alphabet), num_oov_indices=1, name="alphabet")
        self.built = True

    def call(self, texts):
        characters = tf.strings.unicode_split(tf.strings.lower(texts), "UTF-8", errors="replace")[
            :, : self.sequence_length
        ]
        codes = tf.ragged.map_flat_values(self.lookup, characters)
        return tf.cast(codes.to_tensor(default_value=0, shape=[None, self.sequence_length]), tf.int32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.sequence_length)

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length, "alphabet": self.alphabet})
        return config


def read_dbpedia_csv(path):
    """Rows `class,"title","content"` (classes 1-14) -> (texts, 0-based labels).
    The text is the title and the content joined by a space. A DataError names the
    file and line of a row that is not UTF-8, has another field count or class."""
    texts, labels = [], []
    # Lines are split by the CSV reader, not before: quoted contents may hold newlines.
    with open(path, newline="", encoding="utf-8-sig") as handle:  # A leading BOM is dropped.
        reader = csv.reader(handle, strict=True)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError:
                read_text_lines(path)  # Raises a DataError naming the line and byte.
                raise
            except csv.Error as error:
                raise DataError(f"{path}:{reader.line_num}: not valid CSV: {error}.") from None
            if not row:
                continue
            label = row[0].strip()
            if len(row) != 3 or not label.isdigit() or not 1 <= int(label) <= len(CLASS_NAMES):
                raise DataError(
                    f"{path}:{reader.line_num}: expected 3 fields class (1-{len(CLASS_NAMES)}),"
                    f'"title","content"; got {len(row)} field(s) starting {row[:2]!r}.'
                )
            labels.append(int(label) - 1)
            texts.append(f"{row[1]} {row[2]}")
    require_rows(path, len(labels), 'rows class,"title","content"')
    return texts, np.asarray(labels, np.int32)


def quantize(texts, batch_size=8192, quantizer=None):
    """Character codes `[N, sequence_length]` (uint8) of a list of strings, by
    `quantizer` (DBPedia's by default: 448 characters of the 69-character alphabet)."""
    quantizer = quantizer or CharacterQuantizer()
    parts = [
        quantizer(tf.constant(texts[start : start + batch_size])).numpy().astype(np.uint8)
        for start in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros([0, quantizer.sequence_length], np.uint8)


def dbpedia_files(data_dir):
    """Paths of `train.csv` and `test.csv` in `data_dir` or its `dbpedia_csv/` subfolder."""
    for folder in (data_dir, os.path.join(data_dir, "dbpedia_csv")):
        paths = [os.path.join(folder, name) for name in ("train.csv", "test.csv")]
        if all(os.path.isfile(path) for path in paths):
            return paths
    raise missing_data("DBPedia", [os.path.join(data_dir, n) for n in ("train.csv", "test.csv")], URL)


def load_dbpedia(data_dir):
    """Train and test splits from `train.csv` / `test.csv` (see `dbpedia_files`) and the
    class names of `classes.txt` beside them (the built-in names when it is absent)."""
    splits = []
    paths = dbpedia_files(data_dir)
    for path in paths:
        texts, labels = read_dbpedia_csv(path)
        splits.append(Split(quantize(texts), labels, np.arange(len(labels))))
    return (*splits, read_class_names(os.path.join(os.path.dirname(paths[0]), "classes.txt")))


def read_class_names(path):
    """The fourteen class names of DBPedia's `classes.txt` (one per line, in label order),
    or `CLASS_NAMES` when there is no such file."""
    if not os.path.isfile(path):
        return CLASS_NAMES
    names = tuple(line.strip() for line in read_text_lines(path) if line.strip())
    if len(names) != len(CLASS_NAMES):
        raise DataError(f"{path}: expected {len(CLASS_NAMES)} class names, one per line; got {len(names)}.")
    return names
