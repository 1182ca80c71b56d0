"""What a kind of data (tables, images, texts) means outside its training loader.

One `DataKind` object per kind, held by each dataset's `DatasetInfo.kind`: serving,
analysis and the command line ask it (its serving signature and preprocessing, how new
inputs and database files are read, how explanations show examples) and never branch on
a dataset's name or kind. A new dataset of an existing kind needs only its loader and
DatasetInfo (`registry.register_dataset`); a new kind of data is one subclass.
"""

import dataclasses
import os
from typing import Callable, Iterator

import numpy as np

from proto_tf.data.common import Split
from proto_tf.errors import DataError

# Written into every export: the kind of data it reads and how its files are read
# (run/predict.py); TF Serving ignores the folder.
EXPORT_DATA_FILE = os.path.join("assets.extra", "proto_tf_data.json")


@dataclasses.dataclass
class ServingInputs:
    """How a signature's raw inputs become model inputs: the named TensorSpecs, the
    graph preprocessing `to_inputs(raw)`, per-instance outputs of the preprocessing
    itself `extra_outputs(raw)`, the layers (lookup tables) the export must track, the
    range each numeric input must lie in (checked in the graph), and the numeric inputs
    where NaN means a missing value (the others must be finite)."""

    signature: dict
    to_inputs: Callable
    extra_outputs: Callable = lambda raw: {}
    layers: tuple = ()
    value_ranges: dict = dataclasses.field(default_factory=dict)  # {input: (low, high)}
    missing_allowed: set = dataclasses.field(default_factory=set)


class DataKind:
    """The interface of a kind of data; one subclass per kind (`KINDS`)."""

    name: str = ""
    encoder: str = ""  # The Appendix A encoder of the kind (a key of config.ENCODERS).
    examples_are_images: bool = False  # Explanations and TensorBoard show pictures.

    def user_options(self, config):
        """How a user's own files of this kind are read, from the run's `config`."""
        raise NotImplementedError

    def load_user_files(self, info, data_dir: str, seed: int, options) -> tuple:
        """`(train Split, test Split, class names, info resolved from the files)`."""
        raise NotImplementedError

    def serving_endpoints(self, info, preprocess) -> dict:
        """`{signature suffix: ServingInputs}` of an export ("" for `serving_default`)."""
        raise NotImplementedError

    def export_description(self, info) -> dict:
        """What run/predict.py needs to read new inputs (JSON, stored in the export)."""
        return {}

    def read_inputs(self, path: str, specs: dict, batch_size: int, description: dict) -> Iterator:
        """Batches `(raw inputs for the signature, source of each input)` of `path`."""
        raise NotImplementedError

    def read_database(self, path: str, info, class_names) -> Split:
        """Labelled examples of `path` in stored form, indexed by their row in the file."""
        raise NotImplementedError

    def raw_examples(self, info, data_dir: str, options, seed: int) -> dict:
        """Raw train and test examples for explanations: `{"train", "test",
        "train_labels", "test_labels", "class_names"}`, train examples placed at their
        prototype index (their row in the source files)."""
        raise NotImplementedError

    def request(self, examples, raw: dict) -> dict:
        """Raw examples (as `raw_examples` holds them) as a `serving_default` call's tensors."""
        raise NotImplementedError

    def reference_features(self, inputs: np.ndarray) -> np.ndarray:
        """Stored inputs as the feature matrix of a scikit-learn reference."""
        raise NotImplementedError(f"no reference for {self.name} data.")

    def synthetic_inputs(self, info, size: int, rng: np.random.Generator) -> np.ndarray:
        """Random inputs in stored form, for timing without the dataset's files."""
        raise ValueError(f"No synthetic {self.name} data; use the real {info.name} files.")

    def __repr__(self):
        return f"DataKind({self.name!r})"


def batches_of(items, batch_size: int):
    """Lists of up to `batch_size` items of the iterable `items`, streamed."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def existing_file(path: str, flag: str, expected: str) -> str:
    """`path` when it is a file; else a DataError naming `flag` and what it should be."""
    if not os.path.isfile(path):
        raise DataError(f"{flag}{path}: no such file; expected {expected}.")
    return path
