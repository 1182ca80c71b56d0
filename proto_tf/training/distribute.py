"""Choosing a tf.distribute strategy and feeding it per-replica slices of each step."""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def make_strategy(name="auto"):
    """A strategy by name.

    auto: MirroredStrategy over all GPUs when there are several, else one device.
    one_device: the first GPU, or the CPU. mirrored: all local GPUs (or logical
    CPUs). multi_worker: MultiWorkerMirroredStrategy configured by `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}.")
    if name == "multi_worker":
        # Before anything else: listing devices would start the runtime, and collective
        # ops must be configured before it starts.
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy=multi_worker needs the TF_CONFIG environment variable.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def is_chief():
    """True unless TF_CONFIG names this task a non-chief worker."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    if not task:
        return True
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def distribute_steps(strategy, make_global_steps, batch_size, database_size):
    """Feeds each replica its contiguous slice of every global step.

    `make_global_steps()` returns a dataset of global steps (dicts with `inputs`,
    `labels` sliced by `batch_size` and `candidate_*` sliced by `database_size`).
    Each input pipeline builds the same global steps (they are a function of the
    seed and step) and keeps the slices of its own replicas; the model all-gathers
    the candidate slices, so every replica attends over the whole database.
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas or database_size % replicas:
        raise ValueError(
            f"batch_size ({batch_size}) and train_database_size ({database_size}) must be "
            f"divisible by the number of replicas ({replicas})."
        )
    local_batch, local_database = batch_size // replicas, database_size // replicas

    def dataset_fn(context):
        if replicas == 1:  # The one replica's slice is the whole step.
            return make_global_steps().prefetch(tf.data.AUTOTUNE)
        local_replicas = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local_replicas

        def slices(step):
            def one_slice(replica):
                return {
                    key: value[replica * size : (replica + 1) * size]
                    for key, value in step.items()
                    for size in [local_database if key.startswith("candidate") else local_batch]
                }

            return tf.data.Dataset.range(first, first + local_replicas).map(one_slice)

        return make_global_steps().flat_map(slices).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn)
