"""tf.train.Checkpoint objects that really hold every weight of a Keras 3 model.

Keras 3 keeps sublayers stored in Python lists (ResNet blocks, VDCNN convolutions) in
its own tracked lists, which `tf.train.Checkpoint` does not see: checkpointing the
model object saves only the layers held in plain attributes, and restoring silently
leaves the rest at their initial values. So checkpoints here hold the variables
themselves, keyed by their position in `model.weights` / `optimizer.variables`: an
order fixed by the architecture, unlike Keras' auto-generated layer names, which
depend on what else the process created. A different architecture fails to restore
on the first shape that differs.
"""

import tensorflow as tf


def _by_position(variables):
    return {f"variable_{index:05d}": variable for index, variable in enumerate(variables)}


def make_checkpoint(model, optimizer=None):
    """A tf.train.Checkpoint of all of `model.weights` (trainable or not, e.g. batch-norm
    statistics) and, when given, all of the optimizer's variables (step, slots)."""
    objects = {"model": _by_position(model.weights)}
    if optimizer is not None:
        objects["optimizer"] = _by_position(optimizer.variables)
    return tf.train.Checkpoint(**objects)
