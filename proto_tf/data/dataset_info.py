"""`DatasetInfo`: the static facts of one dataset, its kind of data and its loader."""

import dataclasses
import os
from typing import Callable

from proto_tf.data.images import ImageAugmentation
from proto_tf.data.kinds import DataKind, kind_named
from proto_tf.data.tabular import TabularSchema
from proto_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts of a dataset: its kind of data (a `DataKind`, or its name), model
    input shape and dtype, augmentation, the class shares of balanced sampling (ISIC),
    where its files are looked for, and its `loader(data_dir, download) -> (train
    Split, test Split, class names)`. A user's own files (`user_data`) are read by the
    kind instead, and the shape, schema and columns then come from them."""

    name: str
    kind: DataKind
    input_shape: tuple | None  # None: set by the data (a user's own dataset).
    input_dtype: str
    augmentation: ImageAugmentation | None = None
    class_shares: tuple | None = None
    shift_sets: tuple = ()  # Datasets whose test images are its shifted test sets (Fig. 8).
    default_data_dir: str | None = "~/tensorflow_datasets"
    schema: TabularSchema | None = None  # Tabular: the columns a model reads.
    label_column: str | None = None  # Tables, documents: the label's column (optional in inputs to predict).
    text_columns: tuple | None = None  # A user's documents: the columns joined into the text.
    alphabet: str | None = None  # Text: the quantiser's characters (None: DBPedia's).
    user_data: bool = False  # A user's own files: shapes and database sizes follow the data.
    loader: Callable | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if isinstance(self.kind, str):
            object.__setattr__(self, "kind", kind_named(self.kind))

    def read_splits(self, data_dir: str | None = None, seed: int = 0, options=None, download: bool = False) -> tuple:
        """`(train Split, test Split, class names, DatasetInfo)` in stored form; the info
        returned is this one with what a user's files set (shape, schema, columns)."""
        if self.user_data:
            if not data_dir:
                raise ConfigError(f"--dataset={self.name} reads your own files: give --data_dir=DIR.")
            train, test, class_names, found = self.kind.load_user_files(
                self, os.path.expanduser(data_dir), seed, options
            )
            return train, test, class_names, dataclasses.replace(self, **found)
        train, test, class_names = self.loader(os.path.expanduser(data_dir or self.default_data_dir), download)
        return train, test, class_names, self
