"""What the prototypes say of a label: each example's attention mass per class over a
database of labelled examples (itself left out), and its strongest prototypes."""

from typing import Callable

import numpy as np
import tensorflow as tf

from proto_tf import blockwise
from proto_tf.data.candidates import evaluation_batches
from proto_tf.data.common import Split
from proto_tf.model import ProtoAttend
from proto_tf.work_progress import WorkProgress, tracked


def leave_one_out_agreement(
    model: ProtoAttend, preprocess: Callable, split: Split, num_classes: int, top_k: int = 5, batch_size: int = 256
) -> dict:
    """Each example of `split` attends over all of `split` but itself (its own entry
    masked out of the softmax/sparsemax): its `own_label_mass` (the attention weight on
    prototypes of its own label), `class_mass [N, C]`, and its `top_k` prototypes as
    positions in `split` (`prototype_rows`, `prototype_weights`)."""
    return attention_agreement(model, preprocess, split, split, num_classes, top_k, batch_size, exclude_self=True)


def attention_agreement(
    model: ProtoAttend,
    preprocess: Callable,
    queries: Split,
    database: Split,
    num_classes: int,
    top_k: int = 5,
    batch_size: int = 256,
    exclude_self: bool = False,
) -> dict:
    """Each example of `queries` attends over `database` (with `exclude_self`, the two
    are one split and an example's own entry is masked out): its `own_label_mass`,
    `class_mass [N, C]` and its `top_k` prototypes as positions in `database`."""
    encode = tf.function(lambda x: model.encode(x, training=False), reduce_retracing=True)

    def encoded(split, what):
        batches = tracked(
            evaluation_batches(split, preprocess, batch_size),
            WorkProgress(f"encoding {what}", len(split)),
            lambda batch: batch[1].shape[0],
        )
        return model.encode_batches((inputs for inputs, _ in batches), encode)

    # One encoder pass per split (the queries are N x d_att).
    database_queries, keys, values = encoded(database, "the prototype database")
    query_vectors = database_queries if exclude_self else encoded(queries, "the examples audited")[0]
    one_hot = tf.one_hot(tf.constant(np.asarray(database.labels, np.int32)), num_classes)
    k = min(top_k, len(database) - (1 if exclude_self else 0))

    @tf.function(reduce_retracing=True)
    def attend(batch_queries, start):
        mask = None
        if exclude_self:
            rows = start + tf.range(tf.shape(batch_queries)[0])
            mask = tf.range(tf.shape(keys)[0])[None, :] != rows[:, None]  # Not itself.
        _, weights = model.prototype_attention(batch_queries, keys, values, mask)
        top_weights, top_rows = blockwise.top_k(weights, k)
        return tf.matmul(weights, one_hot), top_weights, top_rows

    starts = range(0, len(queries), batch_size)
    progress = WorkProgress("auditing the training labels", len(queries))
    class_mass, top_weights, top_rows = [], [], []
    for start in tracked(starts, progress, lambda start: min(batch_size, len(queries) - start)):
        mass, weights, rows = attend(query_vectors[start : start + batch_size], tf.constant(start, tf.int32))
        class_mass.append(mass.numpy())
        top_weights.append(weights.numpy())
        top_rows.append(rows.numpy())
    class_mass = np.concatenate(class_mass)
    own = class_mass[np.arange(len(queries)), np.asarray(queries.labels)]
    return {
        "own_label_mass": own,
        "class_mass": class_mass,
        "prototype_rows": np.concatenate(top_rows),
        "prototype_weights": np.concatenate(top_weights),
    }
