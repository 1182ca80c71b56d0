"""Datasets of the paper (Table 1) as in-memory splits plus tf.data pipelines that
sample a fresh candidate database at every training step."""

from proto_tf.data.candidates import evaluation_batches, inference_database, training_batches
from proto_tf.data.common import LoadedDataset, MissingDataError, Split
from proto_tf.data.noise import corrupt_labels
from proto_tf.data.registry import DATASETS, DatasetInfo, class_names, dataset_info, load_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "LoadedDataset",
    "MissingDataError",
    "Split",
    "class_names",
    "corrupt_labels",
    "dataset_info",
    "evaluation_batches",
    "inference_database",
    "load_dataset",
    "training_batches",
]
