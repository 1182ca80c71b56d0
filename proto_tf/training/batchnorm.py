"""BatchNorm statistics for evaluation: re-estimating the moving statistics of fixed
weights ("precise BatchNorm"), and the plain-path accuracy under each kind of statistics.

Training normalises by batch statistics and only tracks moving averages on the side
(momentum 0.9 for the ResNet, the authors' value: a memory of ~10 steps). While the weights still move,
as in any run much shorter than the paper's, those averages describe older weights;
evaluation with them can lose many points (RESULTS.md). Replacing them by the mean of
batch statistics of the final weights removes that error without touching training.
"""

import keras
import numpy as np
import tensorflow as tf

from proto_tf.data import candidates
from proto_tf.data.registry import dataset_info
from proto_tf.errors import ConfigError


def batchnorm_layers(model):
    """The BatchNormalization layers inside `model` (a layer or a model)."""
    # Keras 3 has no public recursive walk; `layers` lists only direct children.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def training_step_batches(dataset, config, count):
    """The encoder batches of the first `count` training steps of `config`: each step's
    inputs and candidates together, with the training augmentation and the step's
    sampling (ISIC's class-balanced batches included), as the encoder saw them."""
    steps = candidates.training_batches(
        dataset.train,
        dataset.augment,
        config.batch_size,
        config.candidates_per_step,
        seed=config.seed,
        num_steps=count,
        class_shares=dataset_info(config.dataset).class_shares,
    )
    for step in steps:
        yield tf.concat([step["inputs"], step["candidate_inputs"]], axis=0)


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
    """Re-estimates the statistics of `model`'s encoder from the encoder batches of the
    first `count` training steps of `config` (`training_step_batches`): a function of
    the weights alone. Returns the batches used. A run on a backbone is refused: its
    BatchNorm layers stay in inference mode (their pretrained statistics)."""
    if config.backbone:
        raise ConfigError(
            f"--batchnorm_batches={count}: the run's encoder is the backbone {config.backbone}, whose "
            "BatchNorm layers keep their pretrained statistics; leave it at 0."
        )
    return reestimate_statistics(model.encoder, training_step_batches(dataset, config, count))


def plain_accuracy(model, inputs, labels, batch_statistics=False, batch_size=192):
    """Accuracy of the plain path (encoder → decision, no attention) on preprocessed
    `inputs`; with `batch_statistics`, BatchNorm normalises each batch by its own
    statistics (training mode, which also moves the moving statistics)."""
    predictions = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        predictions.append(np.argmax(model.plain_logits(batch, training=batch_statistics), axis=-1))
    return float(np.mean(np.concatenate(predictions) == np.asarray(labels)))
