"""BatchNorm statistics for evaluation: re-estimating the moving statistics of fixed
weights ("precise BatchNorm"), and the plain-path accuracy under each kind of statistics.

Training normalises by batch statistics and only tracks moving averages on the side
(momentum 0.997 for the ResNet: a memory of ~330 steps). While the weights still move,
as in any run much shorter than the paper's, those averages describe older weights;
evaluation with them can lose many points (RESULTS.md). Replacing them by the mean of
batch statistics of the final weights removes that error without touching training.
"""

import keras
import numpy as np
import tensorflow as tf


def batchnorm_layers(model):
    """The BatchNormalization layers inside `model` (a layer or a model)."""
    # Keras 3 has no public recursive walk; `layers` lists only direct children.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def random_batches(stored_inputs, preprocess, batch_size, count, seed=0):
    """`count` batches of `batch_size` examples drawn at random (with a fixed `seed`) from
    `stored_inputs`, each mapped to model inputs by `preprocess` (no augmentation)."""
    rng = np.random.default_rng(seed)
    size = len(stored_inputs)
    for _ in range(count):
        indices = rng.choice(size, min(batch_size, size), replace=False)
        yield preprocess(tf.gather(stored_inputs, np.sort(indices)))


def reestimate_statistics(encoder, batches):
    """Sets the moving mean and variance of every BatchNorm layer in `encoder` to the
    mean over `batches` of its batch statistics under the current weights (weights are
    not updated). Returns the number of batches used (0 when there is no BatchNorm).

    Each pass runs in training mode with momentum (k - 1) / k for the k-th batch, so
    Keras' own moving-average update computes the plain mean of the batch statistics.
    Dropout inside `encoder` would be active in these passes.
    """
    layers = batchnorm_layers(encoder)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for count, batch in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = (count - 1) / count
            encoder(batch, training=True)  # Eager: `momentum` is read at every call.
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return count


def reestimate_from_training_split(model, dataset, config, count):
    """Re-estimates the statistics of `model`'s encoder from `count` random batches of
    `dataset`'s training split, each as large as a training step's encoder batch (inputs
    and candidates) of `config`, drawn with `config.seed`. Returns the batches used."""
    batch_size = config.batch_size + config.candidates_per_step
    batches = random_batches(
        dataset.train.inputs, dataset.preprocess, batch_size, count, config.seed
    )
    return reestimate_statistics(model.encoder, batches)


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
