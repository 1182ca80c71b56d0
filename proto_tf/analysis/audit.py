"""Mislabel audit: training examples whose own label disagrees with the labels of the
prototypes they attend to, each attending over the rest of the training split."""

import csv
import json
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from proto_tf import blockwise
from proto_tf.analysis.plots import plot_agreement
from proto_tf.data.candidates import evaluation_batches
from proto_tf.data.common import Split
from proto_tf.errors import ConfigError
from proto_tf.json_files import make_output_folder, write_atomically
from proto_tf.model import ProtoAttend
from proto_tf.training import run_store
from proto_tf.work_progress import WorkProgress, tracked

AUDIT_CSV, AUDIT_JSONL, AUDIT_PNG = "audit.csv", "audit.jsonl", "audit.png"


def leave_one_out_agreement(
    model: ProtoAttend, preprocess: Callable, split: Split, num_classes: int, top_k: int = 5, batch_size: int = 256
) -> dict:
    """Each example of `split` attends over all of `split` but itself (its own entry
    masked out of the softmax/sparsemax): its `own_label_mass` (the attention weight on
    prototypes of its own label), `class_mass [N, C]`, and its `top_k` prototypes as
    rows of `split` (`prototype_rows`, `prototype_weights`)."""
    # One encoder pass: every example's query, key and value (the queries are N x d_att).
    batches = tracked(
        evaluation_batches(split, preprocess, batch_size),
        WorkProgress("encoding the training split", len(split)),
        lambda batch: batch[1].shape[0],
    )
    encode = tf.function(lambda x: model.encode(x, training=False), reduce_retracing=True)
    queries, keys, values = model.encode_batches((inputs for inputs, _ in batches), encode)
    one_hot = tf.one_hot(tf.constant(np.asarray(split.labels, np.int32)), num_classes)
    k = min(top_k, len(split) - 1)

    @tf.function(reduce_retracing=True)
    def attend(batch_queries, start):
        rows = start + tf.range(tf.shape(batch_queries)[0])
        mask = tf.range(tf.shape(keys)[0])[None, :] != rows[:, None]  # Not itself.
        _, weights = model.prototype_attention(batch_queries, keys, values, mask)
        top_weights, top_rows = blockwise.top_k(weights, k)
        return tf.matmul(weights, one_hot), top_weights, top_rows

    starts = range(0, len(split), batch_size)
    progress = WorkProgress("auditing the training labels", len(split))
    class_mass, top_weights, top_rows = [], [], []
    for start in tracked(starts, progress, lambda start: min(batch_size, len(split) - start)):
        mass, weights, rows = attend(queries[start : start + batch_size], tf.constant(start, tf.int32))
        class_mass.append(mass.numpy())
        top_weights.append(weights.numpy())
        top_rows.append(rows.numpy())
    class_mass = np.concatenate(class_mass)
    own = class_mass[np.arange(len(split)), np.asarray(split.labels)]
    return {
        "own_label_mass": own,
        "class_mass": class_mass,
        "prototype_rows": np.concatenate(top_rows),
        "prototype_weights": np.concatenate(top_weights),
    }


def rank_suspects(own_label_mass: np.ndarray, class_mass: np.ndarray) -> np.ndarray:
    """Positions from the most to the least suspect: least weight on the own label
    first; ties broken by the larger weight on the most-attended other class."""
    return np.lexsort((-class_mass.max(axis=1), own_label_mass))


def audit_run(model_dir: str, output_dir: str | None = None, checkpoint: str = "best", top_k: int = 5) -> dict:
    """Audits the training labels of the run in `model_dir` (as it trained on them,
    label noise included) and writes `audit.csv`, `audit.jsonl` (every training example,
    most suspect first) and `audit.png` to `output_dir` (default `<model_dir>/audit`).
    Returns the paths, the ranking (`order`: positions in the training split) and its
    `records`."""
    config, dataset, model, checkpoint_path = run_store.load_run(model_dir, checkpoint)
    warning = run_store.unfinished_warning(model_dir, checkpoint_path)
    if warning:
        print(warning)
    if not model.uses_database:
        raise ConfigError(f"--model_dir={model_dir} is a baseline run: the audit needs a model with prototypes.")
    split = dataset.train
    found = leave_one_out_agreement(
        model, dataset.preprocess, split, dataset.num_classes, top_k, config.eval_batch_size
    )
    order = rank_suspects(found["own_label_mass"], found["class_mass"])
    output_dir = output_dir or os.path.join(model_dir, "audit")
    make_output_folder(output_dir)
    records = [_record(found, split, dataset.class_names, position, rank) for rank, position in enumerate(order, 1)]
    paths = {
        "csv": write_atomically(os.path.join(output_dir, AUDIT_CSV), lambda handle: _write_csv(handle, records)),
        "jsonl": write_atomically(
            os.path.join(output_dir, AUDIT_JSONL),
            lambda handle: handle.writelines(json.dumps(record) + "\n" for record in records),
        ),
        "png": plot_agreement(found["own_label_mass"], os.path.join(output_dir, AUDIT_PNG)),
    }
    return {
        "checkpoint": checkpoint_path,
        "order": order,
        "flagged": flagged_count(found["own_label_mass"], found["class_mass"]),
        "records": records,
        **paths,
    }


def flagged_count(own_label_mass: np.ndarray, class_mass: np.ndarray) -> int:
    """Examples whose prototypes put more weight on another class than on their own label."""
    return int((class_mass.max(axis=1) > own_label_mass).sum())


def _record(found, split, class_names, position, rank):
    label = int(split.labels[position])
    suggested = int(np.argmax(found["class_mass"][position]))
    rows = found["prototype_rows"][position]
    weights = found["prototype_weights"][position]
    return {
        "rank": rank,
        "train_row": int(split.indices[position]),
        "label": label,
        "label_name": class_names[label],
        "own_label_mass": round(float(found["own_label_mass"][position]), 6),
        "suggested_label": suggested,
        "suggested_name": class_names[suggested],
        "suggested_mass": round(float(found["class_mass"][position, suggested]), 6),
        "prototypes": [
            {
                "train_row": int(split.indices[row]),
                "weight": round(float(weight), 6),
                "label": int(split.labels[row]),
                "label_name": class_names[int(split.labels[row])],
            }
            for row, weight in zip(rows, weights)
            if weight > 0
        ],
    }


def _write_csv(handle, records):
    columns = [
        "rank",
        "train_row",
        "label",
        "label_name",
        "own_label_mass",
        "suggested_label",
        "suggested_name",
        "suggested_mass",
        "prototype_rows",
        "prototype_weights",
    ]
    writer = csv.writer(handle)
    writer.writerow(columns)
    for record in records:
        prototypes = record["prototypes"]
        writer.writerow(
            [record[name] for name in columns[:-2]]
            + [" ".join(str(p["train_row"]) for p in prototypes), " ".join(str(p["weight"]) for p in prototypes)]
        )
