"""Training throughput: the input pipeline, the training step against a bare Keras
loop and the authors' TF1 graph (run by run/benchmark.py, never by tests)."""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from proto_tf.analysis import step_profile
from proto_tf.data import Split, candidates, class_names, dataset_info
from proto_tf.data.common import LoadedDataset, cast_only
from proto_tf.errors import ConfigError
from proto_tf.training import config as config_lib
from proto_tf.training import health, trainer


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
            dataset.train,
            dataset.augment,
            batch_size,
            database_size,
            class_shares=info.class_shares,
        )
    )
    return _rate(lambda: next(iterator), steps, warmup)


def training_step_rate(config, dataset, steps=10, warmup=2):
    """Training steps per second of the full step (input pipeline included), as the
    Trainer takes it between logs (`trainer_step`)."""
    with tempfile.TemporaryDirectory() as model_dir:
        return _rate(trainer_step(config, dataset, steps + warmup, model_dir), steps, warmup)


def bare_step(config, dataset, steps):
    """The floor the trainer is measured against: a function running one training step
    of the same model (forward pass, loss, gradient, clipping, Adam update) in one
    tf.function, fed by the same input pipeline, with nothing around it (no
    distribution strategy, metrics, health checks or logs); it returns the loss."""
    keras.utils.set_random_seed(config.seed)
    info = dataset.info or dataset_info(config.dataset)
    config = config_lib.fit_to_data(config, len(dataset.train), report=lambda line: None)
    model = config_lib.build_model(config, info, dataset.num_classes)
    optimizer = config_lib.build_optimizer(config)
    optimizer.build(model.trainable_variables)
    iterator = iter(
        candidates.training_batches(
            dataset.train,
            dataset.augment,
            config.batch_size,
            config.candidates_per_step,
            seed=config.seed,
            num_steps=steps,
            class_shares=info.class_shares,
        )
    )
    variables = model.trainable_variables

    @tf.function
    def step():
        data = next(iterator)
        with tf.GradientTape() as tape:
            outputs = model.forward_train(data, model.sample_alpha(optimizer.iterations))
            loss = model.loss_terms(data["labels"], outputs)["loss"]
            if model.losses:
                loss += tf.add_n(model.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return lambda: float(step())


def trainer_step(config, dataset, steps, model_dir):
    """A function running one step as `Trainer.train` does between its logs: the
    distributed step function (without the metrics' values), then the health monitor's
    check of its logs."""
    config = dataclasses.replace(config, model_dir=model_dir, train_steps=steps)
    run_trainer = trainer.Trainer(config, dataset=dataset, verbose=False)
    iterator = iter(run_trainer.distributed_steps(0))
    step_function = run_trainer.make_step_function(results=False)
    monitor = health.HealthMonitor(run_trainer.model.trainable_variables, config.divergence_factor)
    counter = iter(range(1, steps + 1))

    def step():
        logs = step_function(iterator)
        monitor.check(next(counter), logs, None)
        return float(logs["step_loss"])  # "loss" is the mean since the last log.

    return step


def trainer_against_bare(config, dataset, steps=20, warmup=3):
    """Seconds per step of the trainer's step and of `bare_step`, timed one step each in
    turn (so the machine's drifts reach both alike): medians `(trainer, bare)`."""
    with tempfile.TemporaryDirectory() as model_dir:
        steps_made = {
            "trainer": trainer_step(config, dataset, steps + warmup, model_dir),
            "bare": bare_step(config, dataset, steps + warmup),
        }
        times = {name: [] for name in steps_made}
        for round_ in range(steps + warmup):
            for name, step in steps_made.items():
                start = time.perf_counter()
                step()
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    return float(np.median(times["trainer"])), float(np.median(times["bare"]))


def against_authors_graph(config, dataset, authors_code, rounds=3, steps=20, warmup=5):
    """The trainer's step, `bare_step` and the authors' TF1 graph (`authors_graph`, in
    its own process) at `config`'s batch, database, ResNet depth and decay interval, on
    `dataset`'s training images: rounds of `steps` steps of each in turn (the other two
    wait), then a kernel profile of 5 steps of each. Returns `{name: {"seconds",
    "page_faults", "system_seconds", "kernels"}}` for "authors", "bare" and "trainer",
    the first three the medians over rounds (`step_profile.resource_use`)."""
    if not config.dataset.endswith("mnist"):
        raise ConfigError(
            f"--suite=authors times the authors' Fashion-MNIST graph; --dataset={config.dataset} "
            "is not a 28x28 grey image set (valid: fashion_mnist, mnist)."
        )
    rows = {"authors": [], "trainer": [], "bare": []}
    with tempfile.TemporaryDirectory() as folder:
        data_file = os.path.join(folder, "train.npz")
        np.savez(data_file, images=dataset.train.inputs[..., 0], labels=dataset.train.labels)
        command = [
            sys.executable,
            "-m",
            "proto_tf.analysis.authors_graph",
            f"--authors_code={authors_code}",
            f"--data={data_file}",
            f"--batch_size={config.batch_size}",
            f"--candidates={config.train_database_size}",
            f"--depth={config.resnet_depth}",
            f"--decay_every={config.decay_steps}",
            f"--normalization={config.attention}",
            f"--steps={steps}",
            f"--warmup={warmup}",
        ]
        # This process's environment, TF_CPU_ALLOCATOR_USE_BFC included: both steps run
        # with the same allocator.
        environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        total = rounds * steps + warmup + 5
        ours = {
            "trainer": trainer_step(config, dataset, total, os.path.join(folder, "run")),
            "bare": bare_step(config, dataset, total),
        }
        for step in ours.values():
            for _ in range(warmup):
                step()
        with subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=environment,
        ) as authors:

            def ask(request):
                if request:
                    authors.stdin.write(request + "\n")
                    authors.stdin.flush()
                line = authors.stdout.readline()
                if not line:
                    raise RuntimeError(
                        "the authors' graph stopped; run `TF_USE_LEGACY_KERAS=1 "
                        f"{' '.join(command)}` to see why (it needs `pip install --no-deps tf-keras==2.21.0`)."
                    )
                return json.loads(line)

            ask(None)  # Built and warmed up.
            for _ in range(rounds):
                rows["authors"].append(ask("time"))
                for name, step in ours.items():
                    rows[name].append(step_profile.resource_use(step, steps))
            kernels = {"authors": ask("profile")}
            authors.stdin.close()
        kernels.update({name: step_profile.profile_steps(step, 5) for name, step in ours.items()})
    return {
        name: {**{key: float(np.median([row[key] for row in values])) for key in values[0]}, "kernels": kernels[name]}
        for name, values in rows.items()
    }


def training_step_seconds(config, dataset, steps=10, dtype_policy="float32"):
    """Seconds per training step of `config` with the Keras `dtype_policy` (e.g.
    "mixed_bfloat16"); the global policy is restored afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy)
    try:
        return 1.0 / training_step_rate(config, dataset, steps)
    finally:
        keras.config.set_dtype_policy(previous)


def synthetic_dataset(config, size=4096, seed=0):
    """A dataset of random examples in the stored form of `config.dataset`, for timing
    when its files are absent (a step's cost does not depend on the data's content).
    Tabular and text datasets only."""
    info = dataset_info(config.dataset)
    rng = np.random.default_rng(seed)
    inputs = info.kind.synthetic_inputs(info, size, rng)
    num_classes = len(class_names(config.dataset))
    split = Split(inputs.astype(info.input_dtype), rng.integers(0, num_classes, size), np.arange(size))
    augment, preprocess = cast_only(info.input_dtype)
    return LoadedDataset(
        config.dataset, num_classes, class_names(config.dataset), split, None, split, augment, preprocess
    )
