"""The training loop: distributed steps, checkpoints that survive a kill, validation,
TensorBoard scalars and a final JSON summary."""

import dataclasses
import json
import math
import os
import shutil
import time

import keras
import tensorflow as tf

from proto_tf import config as config_lib
from proto_tf import batchnorm, distribute, evaluation
from proto_tf.checkpoints import make_checkpoint
from proto_tf.data import candidates
from proto_tf.data.registry import dataset_info, load_dataset

SUMMARY_FILE = "summary.json"
BEST_FILE = "best.json"
CONFIG_FILE = "config.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def load_experiment_dataset(config):
    """The dataset named by `config`, with its label noise and validation split."""
    return load_dataset(
        config.dataset,
        config.data_dir,
        validation_fraction=config.validation_fraction,
        label_noise=config.label_noise,
        seed=config.seed,
        download=config.download,
    )


class Trainer:
    """Trains one experiment in `config.model_dir`, resuming from its last checkpoint.

    Args:
      config: an ExperimentConfig.
      dataset: a LoadedDataset; loaded from `config` when None.
      strategy: a tf.distribute strategy; made from `config.strategy` when None.
      verbose: show a progress bar.
      make_optimizer: a function returning the Keras optimizer; the paper's Adam with
        staircase decay and clipping (`config.build_optimizer`) when None.
    """

    def __init__(self, config, dataset=None, strategy=None, verbose=True, make_optimizer=None):
        self.config = config
        self.info = dataset_info(config.dataset)
        # First: a multi-worker strategy must exist before any TensorFlow op runs.
        self.strategy = strategy or distribute.make_strategy(config.strategy)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        self.dataset = dataset or load_experiment_dataset(config)
        self.verbose = verbose
        self.is_chief = distribute.is_chief()
        self.write_dir = config.model_dir if self.is_chief else os.path.join(
            config.model_dir, f".worker_{json.loads(os.environ['TF_CONFIG'])['task']['index']}"
        )
        with self.strategy.scope():
            self.model = config_lib.build_model(config, self.info, self.dataset.num_classes)
            self.optimizer = (make_optimizer or (lambda: config_lib.build_optimizer(config)))()
            self.model.compile(optimizer=self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
        checkpoint = make_checkpoint(self.model, self.optimizer)
        self.latest = tf.train.CheckpointManager(
            checkpoint, os.path.join(self.write_dir, "checkpoints"), max_to_keep=2
        )
        self.best = tf.train.CheckpointManager(
            checkpoint, os.path.join(self.write_dir, "best"), max_to_keep=1
        )
        self.checkpoint = checkpoint
        self.evaluator = evaluation.Evaluator(
            self.model, self.dataset.preprocess, config.eval_batch_size
        )
        self.inference_split = candidates.inference_database(
            self.dataset.train, config.infer_database_size, config.seed, self.info.class_shares
        )
        self._statistics_step = None  # The step BatchNorm statistics were re-estimated at.

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def restore(self):
        """Restores the last checkpoint, if any; returns the step it was taken at."""
        if self.latest.latest_checkpoint:
            self.checkpoint.restore(self.latest.latest_checkpoint).assert_consumed()
        return self.step

    def _distributed_steps(self, start):
        config = self.config

        def global_steps():
            return candidates.training_batches(
                self.dataset.train,
                self.dataset.augment,
                config.batch_size,
                config.candidates_per_step,
                seed=config.seed,
                start_step=start,
                num_steps=config.train_steps - start,
                class_shares=self.info.class_shares,
            )

        return distribute.distribute_steps(
            self.strategy, global_steps, config.batch_size, config.candidates_per_step
        )

    def _make_step_function(self):
        strategy, model = self.strategy, self.model
        replica_step = model.train_step
        if self.config.jit_compile:
            # XLA compiles the per-replica step; the cross-replica reduction stays outside,
            # and so does alpha's draw: XLA's stateless random numbers differ from
            # TensorFlow's for the same seed (tensorflow/tensorflow#121243).
            compiled_step = tf.function(model.train_step_with_alpha, jit_compile=True)

            def replica_step(data):
                return compiled_step(data, model.sample_alpha(model.optimizer.iterations))

        @tf.function
        def train_step(iterator):
            logs = strategy.run(replica_step, args=(next(iterator),))
            return {
                name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in logs.items()
            }

        return train_step

    def evaluate(self, split):
        """Summary metrics of the current weights on `split`, with the inference database."""
        self.reestimate_batchnorm()
        return self.evaluator.evaluate(split, self.inference_split)

    def reestimate_batchnorm(self):
        """Sets BatchNorm's moving statistics to those of the current weights over
        `config.batchnorm_batches` training batches (once per step; a fixed seed makes
        them a function of the weights alone)."""
        count = self.config.batchnorm_batches
        if not count or self._statistics_step == self.step:
            return
        with self.strategy.scope():
            batchnorm.reestimate_from_training_split(self.model, self.dataset, self.config, count)
        self._statistics_step = self.step

    def train(self):
        """Runs (or resumes) training to `config.train_steps`; returns the summary dict."""
        config = self.config
        if self.is_chief:
            os.makedirs(config.model_dir, exist_ok=True)
            with open(os.path.join(config.model_dir, CONFIG_FILE), "w") as handle:
                json.dump(dataclasses.asdict(config), handle, indent=2)
        start = self.restore()
        best_state = self._read_best()
        writers = self._summary_writers()
        if start:
            print(f"Resuming from step {start} ({self.latest.latest_checkpoint}).")
        started = time.time()
        if start < config.train_steps:
            best_state = self._run_steps(start, writers, best_state)
        train_seconds = time.time() - started if start < config.train_steps else 0.0
        summary = self._final_summary(train_seconds, start, best_state)
        self._cleanup()
        return summary

    def _run_steps(self, start, writers, best_state):
        """Steps `start + 1 .. train_steps` with logging, checkpoints and validation;
        returns the best validation state."""
        config = self.config
        progress = keras.utils.Progbar(config.train_steps, verbose=1 if self.verbose else 0)
        iterator = iter(self._distributed_steps(start))
        train_step = self._make_step_function()
        window = (time.time(), start)  # Start time and step of the steps/s window.
        for step in range(start + 1, config.train_steps + 1):
            logs = train_step(iterator)
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"Loss is {loss} at step {step}; stopping. The last good checkpoint "
                    f"({self.latest.latest_checkpoint}) is kept: lower --learning_rate "
                    "or --clip_value and run again to resume from it."
                )
            if step % config.log_every == 0 or step == config.train_steps:
                scalars = {name: float(value) for name, value in logs.items()}
                scalars["steps_per_second"] = (step - window[1]) / (time.time() - window[0])
                # Keras returns the schedule's value at the current step.
                scalars["learning_rate"] = float(tf.identity(self.optimizer.learning_rate))
                self._write(writers, "train", scalars, step)
                progress.update(step, [(k, scalars[k]) for k in ("loss", "steps_per_second")])
                for metric in self.model.metrics:
                    metric.reset_state()  # Logged values are means over the window.
                window = (time.time(), step)
            if step % config.checkpoint_every == 0:
                self.latest.save(checkpoint_number=step)
            if self.dataset.validation is not None and (
                step % config.eval_every == 0 or step == config.train_steps
            ):
                best_state = self._validate(step, writers, best_state)
        self.reestimate_batchnorm()  # The last checkpoint is what gets evaluated and exported.
        self.latest.save(checkpoint_number=config.train_steps)
        return best_state

    def _validate(self, step, writers, best_state):
        result = self.evaluate(self.dataset.validation)
        self._write(writers, "validation", result, step)
        if self.info.kind == "image" and not self.model.is_baseline and "validation" in writers:
            self._write_prototype_images(writers["validation"], step)
        if best_state is None or result["accuracy"] > best_state["accuracy"]:
            best_state = {"step": step, **result}
            self.best.save(checkpoint_number=step)
            if self.is_chief:
                with open(os.path.join(self.write_dir, BEST_FILE), "w") as handle:
                    json.dump(best_state, handle, indent=2)
        return best_state

    def _write_prototype_images(self, writer, step, examples=4, prototypes=3):
        """Validation images next to their top prototypes (the database is set)."""
        inputs = self.dataset.validation.inputs[:examples]
        weights = self.model(self.dataset.preprocess(inputs), training=False)["weights"]
        top = tf.math.top_k(weights, k=min(prototypes, weights.shape[-1]))
        rows = []
        for image, indices in zip(inputs, top.indices.numpy()):
            rows.append(tf.concat([image] + [self.inference_split.inputs[i] for i in indices], axis=1))
        description = "; ".join(
            "weights " + ", ".join(f"{w:.2f}" for w in row) for row in top.values.numpy()
        )
        with writer.as_default(step=step):
            tf.summary.image(
                "input_and_prototypes", tf.stack(rows), max_outputs=examples, description=description
            )

    def _final_summary(self, train_seconds, start, best_state):
        summary = {
            "config": dataclasses.asdict(self.config),
            "steps": self.step,
            "resumed_from_step": start,
            "train_seconds": round(train_seconds, 2),
            "replicas": self.strategy.num_replicas_in_sync,
            "test_last": self.evaluate(self.dataset.test),
        }
        if best_state is not None:
            summary["best_validation"] = best_state
            if best_state["step"] == self.step:
                summary["test_best"] = summary["test_last"]
            else:
                self.checkpoint.restore(self.best.latest_checkpoint).assert_consumed()
                summary["test_best"] = self.evaluate(self.dataset.test)
        if self.is_chief:
            with open(os.path.join(self.config.model_dir, SUMMARY_FILE), "w") as handle:
                json.dump(summary, handle, indent=2, default=str)
        return summary

    def _read_best(self):
        path = os.path.join(self.write_dir, BEST_FILE)
        if os.path.exists(path):
            with open(path) as handle:
                return json.load(handle)
        return None

    def _summary_writers(self):
        if not self.is_chief:
            return {}
        return {
            name: tf.summary.create_file_writer(os.path.join(self.config.model_dir, "logs", name))
            for name in ("train", "validation")
        }

    @staticmethod
    def _write(writers, name, scalars, step):
        if name not in writers:
            return
        with writers[name].as_default(step=step):
            for key, value in scalars.items():
                if isinstance(value, (int, float)):  # Skips None (e.g. no wrong decisions).
                    tf.summary.scalar(key, value)
            writers[name].flush()

    def _cleanup(self):
        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)


def train(config, dataset=None, strategy=None, verbose=True):
    """Trains the experiment of `config` (resuming when possible); returns its summary."""
    return Trainer(config, dataset, strategy, verbose).train()


def read_config(model_dir):
    """The ExperimentConfig a run in `model_dir` was trained with."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {CONFIG_FILE} in {model_dir}: is it a run/train.py model_dir?")
    with open(path) as handle:
        values = json.load(handle)
    return config_lib.ExperimentConfig(**values)


def load_trained_model(model_dir, config, dataset, checkpoint="best"):
    """The model of an experiment with `config`, from the `best` checkpoint in
    `model_dir` (the last one when there is no best) or its `last` checkpoint."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}.")
    model = config_lib.build_model(config, dataset_info(config.dataset), dataset.num_classes)
    path = None
    if checkpoint == "best":
        path = tf.train.latest_checkpoint(os.path.join(model_dir, "best"))
    path = path or tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if path is None:
        raise FileNotFoundError(f"No checkpoint under {model_dir}/best or {model_dir}/checkpoints.")
    # Only the model: the optimizer's variables in the checkpoint are not needed.
    make_checkpoint(model).restore(path).expect_partial().assert_existing_objects_matched()
    return model, path


def load_run(model_dir, checkpoint="best", data_dir=None):
    """`(config, dataset, model, checkpoint_path)` of a run in `model_dir`, its data
    read from `data_dir` when given (else from where the run read it)."""
    config = read_config(model_dir)
    if data_dir is not None:
        config.data_dir = data_dir
    dataset = load_experiment_dataset(config)
    model, path = load_trained_model(model_dir, config, dataset, checkpoint)
    return config, dataset, model, path
