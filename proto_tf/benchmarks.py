"""Throughput measurements (run by run/benchmark.py, never by tests)."""

import tempfile
import time


from proto_tf.data import candidates
from proto_tf.training import Trainer


def _rate(step, steps, warmup):
    """Steps per second of `step()` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def input_pipeline_rate(dataset, info, batch_size, database_size, steps=50, warmup=5):
    """Training steps per second the input pipeline alone produces (batch, fresh
    candidate database, augmentation), for one process."""
    iterator = iter(
        candidates.training_batches(
            dataset.train, dataset.augment, batch_size, database_size,
            class_shares=info.class_shares,
        )
    )  # fmt: skip
    return _rate(lambda: next(iterator), steps, warmup)


def training_step_rate(config, dataset, steps=10, warmup=2):
    """Training steps per second of the full step (input pipeline included), with
    the Trainer's own distributed step function."""
    with tempfile.TemporaryDirectory() as model_dir:
        config.model_dir = model_dir
        config.train_steps = steps + warmup
        trainer = Trainer(config, dataset=dataset, verbose=False)
        iterator = iter(trainer._distributed_steps(0))
        step_function = trainer._make_step_function()
        return _rate(lambda: float(step_function(iterator)["loss"]), steps, warmup)


