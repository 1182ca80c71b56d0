"""TensorBoard files of a run: scalars of training and validation, and validation
images beside their top prototypes."""

import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf


def summary_writers(model_dir: str) -> dict:
    """The run's writers by name (`train`, `validation`), under `model_dir/logs`."""
    return {
        name: tf.summary.create_file_writer(os.path.join(model_dir, "logs", name)) for name in ("train", "validation")
    }


def write_scalars(writers: dict, name: str, scalars: dict, step: int) -> None:
    """Writes `scalars` with writer `name` (nothing where it has none: a worker)."""
    if name not in writers:
        return
    with writers[name].as_default(step=step):
        for key, value in scalars.items():  # Numbers only: `progress.tagged` drops None.
            tf.summary.scalar(key, value)
        writers[name].flush()


def write_prototype_images(
    writer,
    step: int,
    model: keras.Model,
    preprocess: Callable,
    inputs: np.ndarray,
    database_inputs: np.ndarray,
    prototypes: int = 3,
) -> None:
    """Each of the images `inputs` beside its top `prototypes` of the model's database
    (set, with `database_inputs` its images), with their weights as the description."""
    weights = model(preprocess(inputs), training=False)["weights"]
    top = tf.math.top_k(weights, k=min(prototypes, weights.shape[-1]))
    rows = []
    for image, indices in zip(inputs, top.indices.numpy()):
        rows.append(tf.concat([image] + [database_inputs[i] for i in indices], axis=1))
    description = "; ".join("weights " + ", ".join(f"{w:.2f}" for w in row) for row in top.values.numpy())
    with writer.as_default(step=step):
        tf.summary.image("input_and_prototypes", tf.stack(rows), max_outputs=len(inputs), description=description)
