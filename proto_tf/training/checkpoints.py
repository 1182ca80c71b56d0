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

import os

import tensorflow as tf

from proto_tf.errors import RunDirectoryError, first_line
from proto_tf.training import run_directory


def _by_position(variables):
    return {f"variable_{index:05d}": variable for index, variable in enumerate(variables)}


def random_states(model):
    """The states of the model's random seed generators (dropout masks): not weights,
    but a resumed run needs them to draw the masks an uninterrupted one would."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def make_checkpoint(model, optimizer=None, run_state=None):
    """A tf.train.Checkpoint of all of `model.weights` (trainable or not, e.g. batch-norm
    statistics), the model's random states and, when given, all of the optimizer's
    variables (step, slots) and a dict of other run-state variables (e.g. the
    cumulative training time)."""
    objects = {"model": _by_position(model.weights), "random": _by_position(random_states(model))}
    if optimizer is not None:
        objects["optimizer"] = _by_position(optimizer.variables)
    if run_state:
        objects["run"] = dict(run_state)
    return tf.train.Checkpoint(**objects)


def save_checkpoint(manager: tf.train.CheckpointManager, step: int, write_dir: str) -> None:
    """Saves a checkpoint of `step`; a full disk or an unwritable folder stops the run
    with one line saying that the earlier checkpoints (in `write_dir`) are intact."""
    try:
        manager.save(checkpoint_number=step)
    except (
        tf.errors.ResourceExhaustedError,
        tf.errors.PermissionDeniedError,
        tf.errors.UnavailableError,
        OSError,
    ) as error:
        kept = run_directory.checkpoint_paths(os.path.join(write_dir, "checkpoints"))
        raise RunDirectoryError(
            f"could not save the checkpoint of step {step} in {manager.directory} "
            f"({first_line(error)}). The earlier checkpoints are intact "
            f"({', '.join(os.path.basename(p) for p in kept) or 'none yet'}): free space "
            "(or fix the folder) and run the same command again to resume exactly from "
            f"{os.path.basename(kept[0]) if kept else 'step 0'}."
        ) from None
