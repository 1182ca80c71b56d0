"""BatchNorm moving statistics: how far they are from the batch statistics, and
re-estimating them for fixed weights."""

import numpy as np
import tensorflow as tf


def plain_accuracy(model, inputs, labels, batch_statistics=False, batch_size=192):
    """Accuracy of the plain path (encoder → decision, no attention) on preprocessed
    `inputs`; with `batch_statistics`, BatchNorm normalises each batch by its own
    statistics (training mode, which also moves the moving statistics)."""
    predictions = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        if model.is_baseline:
            features = model.encoder(batch, training=batch_statistics)
        else:
            features = model.encode(batch, training=batch_statistics)[2]  # The values.
        predictions.append(np.argmax(model.decision(features), axis=-1))
    return float(np.mean(np.concatenate(predictions) == np.asarray(labels)))


def reestimate_statistics(model, inputs, steps, batch_size=192, seed=0):
    """Moves BatchNorm's moving statistics towards those of the current weights: `steps`
    forward passes in training mode over random batches of preprocessed `inputs`, with
    no weight update. Dropout, if any, is active during these passes only."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = tf.gather(inputs, rng.integers(0, len(inputs), batch_size))
        model.encoder(batch, training=True)
