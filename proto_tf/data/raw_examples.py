"""A dataset's raw examples (as files hold them, before preprocessing): what
explanations show and what serving requests are made of."""

import os

import numpy as np

from proto_tf.data.registry import dataset_info


def load_raw(dataset: str, data_dir: str | None, options: object | None = None, seed: int = 0) -> dict:
    """Raw train and test examples, the train ones indexed by their row in the source
    files (the prototypes' `train_row`), the test ones by their test-set position:
    `{"train": raw, "test": raw, "train_labels", "test_labels", "class_names"}` (and the
    `schema` of a table), read by the dataset's kind (`DataKind.raw_examples`).
    `options` and `seed`: how the run read a user's own files."""
    info = dataset_info(dataset)
    if not info.user_data:
        data_dir = data_dir or info.default_data_dir
    return info.kind.raw_examples(info, os.path.expanduser(data_dir), options, seed)


def take(raw: np.ndarray | dict, positions: np.ndarray) -> np.ndarray | dict:
    """The raw examples at `positions` (a dict of columns for Adult)."""
    if isinstance(raw, dict):
        return {name: column[positions] for name, column in raw.items()}
    return raw[positions]
