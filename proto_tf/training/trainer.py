"""The training loop: distributed steps, checkpoints that survive a kill, validation,
TensorBoard scalars and a final JSON summary."""

import dataclasses
import json
import os
import shutil
import time
from typing import Callable, Sequence

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from proto_tf import evaluation, json_files
from proto_tf.data import candidates
from proto_tf.data.common import LoadedDataset, Split
from proto_tf.data.registry import dataset_info
from proto_tf.errors import ConfigError, RunDirectoryError, first_line
from proto_tf.training import batchnorm, distribute, features, health, run_directory, summaries
from proto_tf.training import config as config_lib
from proto_tf.training.checkpoints import make_checkpoint, save_checkpoint
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.progress import TRAIN_TAGS, ConsoleProgress, hparams, tagged, validation_tags
from proto_tf.training.run_store import CONFIG_FILE, SUMMARY_FILE, load_experiment_dataset
from proto_tf.work_progress import WorkProgress

BEST_FILE = "best.json"


# The loss, a gradient or a weight became NaN or infinite (kept under its old name).
NonFiniteLossError = health.NonFiniteError


class Trainer:
    """Trains one experiment in `config.model_dir`, resuming from its last checkpoint.

    Args:
      config: an ExperimentConfig.
      dataset: a LoadedDataset; loaded from `config` when None.
      strategy: a tf.distribute strategy; made from `config.strategy` when None.
      verbose: show progress (a bar on a terminal, plain lines otherwise).
      callbacks: Keras callbacks. They get `on_train_begin/end`, `on_train_batch_end`
        at every logged step (the windowed training values) and `on_epoch_end` at every
        validation, with the validation results under `val_<name>` (`val_accuracy`,
        `val_loss`, ...), epoch = validations so far. Setting `model.stop_training`
        (e.g. keras.callbacks.EarlyStopping) ends the run after that step, which then
        counts as finished.
      make_optimizer: a function returning the Keras optimizer; the paper's Adam with
        continuous exponential decay and clipping (`config.build_optimizer`) when None.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        dataset: LoadedDataset | None = None,
        strategy: tf.distribute.Strategy | None = None,
        verbose: bool = True,
        make_optimizer: Callable[[], keras.optimizers.Optimizer] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ):
        self.callbacks = list(callbacks)
        # First: a multi-worker strategy must exist before any TensorFlow op runs.
        self.strategy = strategy or distribute.make_strategy(config.strategy)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        self.dataset = dataset or load_experiment_dataset(config)
        self.info = self.dataset.info or dataset_info(config.dataset)
        config = self.config = config_lib.fit_to_data(config, len(self.dataset.train))
        config_lib.check_against_data(config, len(self.dataset.train))
        self.verbose = verbose
        self.is_chief = distribute.is_chief()
        self.write_dir = (
            config.model_dir
            if self.is_chief
            else os.path.join(config.model_dir, f".worker_{json.loads(os.environ['TF_CONFIG'])['task']['index']}")
        )
        with self.strategy.scope():
            self.model = config_lib.build_model(config, self.info, self.dataset.num_classes)
            self.optimizer = (make_optimizer or (lambda: config_lib.build_optimizer(config, self.model)))()
            self.model.compile(optimizer=self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
            # Cumulative training time over every resumed part of the run.
            self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        checkpoint = make_checkpoint(self.model, self.optimizer, run_state={"train_seconds": self.train_seconds})
        for folder in ("checkpoints", "best"):  # The managers below parse these files.
            run_directory.repair_state_file(os.path.join(self.write_dir, folder))
        self.latest = tf.train.CheckpointManager(checkpoint, os.path.join(self.write_dir, "checkpoints"), max_to_keep=2)
        self.best = tf.train.CheckpointManager(checkpoint, os.path.join(self.write_dir, "best"), max_to_keep=1)
        self.checkpoint = checkpoint
        self.evaluator = evaluation.Evaluator(
            self.model,
            self.dataset.preprocess,
            config.eval_batch_size,
            progress=WorkProgress if verbose and self.is_chief else None,
        )
        self.inference_split = candidates.inference_database(
            self.dataset.train, config.infer_database_size, config.seed, self.info.class_shares
        )
        self._statistics_step = None  # The step BatchNorm statistics were re-estimated at.
        self.restored_path = None  # The checkpoint `restore` resumed from.
        self.last_validation = None  # The latest validation results.
        self.stopped_at = None  # The step a callback stopped training at.

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Restores the newest readable checkpoint, if any; returns its step.

        Checkpoints are found from their files, so a damaged `checkpoint` state file
        never restarts a run from step 0 over its checkpoints; a damaged newest
        checkpoint falls back to the previous one with a warning. When checkpoints
        exist but none can be read, a RunDirectoryError stops the run.
        """
        directory = os.path.join(self.write_dir, "checkpoints")
        paths = run_directory.checkpoint_paths(directory)
        failures = []
        for path in paths:
            try:
                self.checkpoint.restore(path).assert_consumed()
            # Damaged files surface as any of these (IndexError: "Read less bytes").
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
                failures.append(f"{path} ({first_line(error)})")
                continue
            for failure in failures:
                print(f"warning: skipped unreadable checkpoint {failure}; resuming from {path}.")
            self.restored_path = path
            return self.step
        if failures:
            raise RunDirectoryError(
                f"no checkpoint in {directory} can be read: {'; '.join(failures)}. Move that "
                "folder away to train this run from step 0, or train into another --model_dir."
            )
        return 0

    def distributed_steps(self, start: int) -> tf.distribute.DistributedDataset:
        """The distributed dataset of the run's steps from `start` on: each element one
        step's batch and fresh candidate database, split across the replicas."""
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

        return distribute.distribute_steps(self.strategy, global_steps, config.batch_size, config.candidates_per_step)

    def make_step_function(self, results: bool = True) -> Callable:
        """The distributed training step; its logs hold the health checks' values and,
        with `results`, the metrics' means since their last reset."""
        strategy, model = self.strategy, self.model

        def step_with_health(data, alpha):
            return model.train_step_with_alpha(data, alpha, inspect=health.step_health, results=results)

        compiled_step = step_with_health
        if self.config.jit_compile:
            # XLA compiles the per-replica step; the cross-replica reduction stays outside,
            # and so does alpha's draw: XLA's stateless random numbers differ from
            # TensorFlow's for the same seed (tensorflow/tensorflow#121243).
            compiled_step = tf.function(step_with_health, jit_compile=True)

        def replica_step(data):
            return compiled_step(data, model.sample_alpha(model.optimizer.iterations))

        @tf.function
        def train_step(iterator):
            logs = strategy.run(replica_step, args=(next(iterator),))
            reduced = {}
            for name, value in logs.items():
                if name.startswith("first_nonfinite"):
                    # The lowest failing position over this process's replicas (other
                    # workers' non-finite gradients reach the weights checked here).
                    local = strategy.experimental_local_results(value)
                    reduced[name] = tf.reduce_min(tf.stack([tf.identity(v) for v in local]))
                else:
                    reduced[name] = strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            return reduced

        return train_step

    def evaluate(self, split: Split) -> dict:
        """Summary metrics of the current weights on `split`, with the inference database."""
        self.reestimate_batchnorm()
        return self.evaluator.evaluate(split, self.inference_split)

    def reestimate_batchnorm(self) -> None:
        """Sets BatchNorm's moving statistics to those of the current weights over
        `config.batchnorm_batches` training batches (once per step; a fixed seed makes
        them a function of the weights alone)."""
        count = self.config.batchnorm_batches
        if not count or self._statistics_step == self.step:
            return
        with self.strategy.scope():
            batchnorm.reestimate_from_training_split(self.model, self.dataset, self.config, count)
        self._statistics_step = self.step

    def train(self) -> dict:
        """Runs (or resumes) training to `config.train_steps`; returns the summary dict.

        The chief holds the model_dir's lock throughout; a model_dir holding a run made
        with other flags is refused before anything is written; config.json is written
        only after the restore succeeded. A finished run is not trained or evaluated
        again: its summary.json is returned as it is.
        """
        if not self.is_chief:
            return self._train()
        with run_directory.RunLock(self.config.model_dir) as lock:
            if lock.stale_holder:
                print(
                    f"warning: took over the stale lock of {lock.stale_holder} in "
                    f"{self.config.model_dir} (that process is not running)."
                )
            return self._train()

    def _train(self):
        config = self.config
        if self.is_chief:
            run_directory.check_resumable(config.model_dir, config, CONFIG_FILE)
        start = self.restore()
        if start > config.train_steps:
            raise ConfigError(
                f"--train_steps={config.train_steps} is below the step {start} that the run in "
                f"{config.model_dir} has reached; give --train_steps >= {start} to extend it."
            )
        if start == 0:
            # A fine-tuned backbone's features are standardised by the training split's
            # statistics under its pretrained weights (as the frozen path's).
            features.set_feature_scaling(self.model, self.dataset.train)
        finished = run_directory.finished_summary(config.model_dir, SUMMARY_FILE, start, config.train_steps)
        if finished is not None:
            print(f"The run in {config.model_dir} has finished {start} steps; nothing to do.")
            return finished
        if self.is_chief:
            fingerprint = run_directory.data_fingerprint(self.dataset)
            if start:
                stored = run_directory.stored_data_dir(config.model_dir, CONFIG_FILE)
                run_directory.check_same_data(config.model_dir, fingerprint, config.data_dir, stored)
            json_files.write_json(os.path.join(config.model_dir, run_directory.DATA_FILE), fingerprint)
            json_files.write_json(os.path.join(config.model_dir, CONFIG_FILE), dataclasses.asdict(config))
        best_state = run_directory.read_best(self.write_dir, BEST_FILE)
        writers = summaries.summary_writers(config.model_dir) if self.is_chief else {}
        if start:
            print(f"Resuming from step {start} ({self.restored_path}).")
        elif "train" in writers:
            with writers["train"].as_default():  # Once per run: a resumed run has them.
                hparams_api.hparams(hparams(config), trial_id=os.path.basename(os.path.normpath(config.model_dir)))
        if start < config.train_steps:
            best_state = self._run_steps(start, writers, best_state)
        summary = self._final_summary(start, best_state)
        self._cleanup()
        return summary

    def _run_steps(self, start, writers, best_state):
        """Steps `start + 1 .. train_steps` with logging, checkpoints and validation;
        returns the best validation state."""
        config = self.config
        progress = self.progress = ConsoleProgress(config.train_steps, self.verbose)
        iterator = iter(self.distributed_steps(start))
        # Steps between logs skip computing and reducing the metrics' values.
        train_step, logged_step = self.make_step_function(results=False), self.make_step_function()
        monitor = health.HealthMonitor(self.model.trainable_variables, config.divergence_factor)
        warmup = config.matching_warmup_steps  # 0 for the baseline (a config check).
        hub_watch = health.HubWatch(report=print if self.verbose else lambda line: None, after_step=warmup)
        seconds_before, started = float(self.train_seconds.numpy()), time.time()
        window = (time.time(), start)  # Start time and step of the steps/s window.
        save_due = False
        callbacks = keras.callbacks.CallbackList(self.callbacks, model=self.model)
        self.model.stop_training = False
        callbacks.on_train_begin()
        step = start
        for step in range(start + 1, config.train_steps + 1):
            logged = step % config.log_every == 0 or step == config.train_steps
            if step == warmup + 1 and warmup:
                monitor.new_phase()
            logs = (logged_step if logged else train_step)(iterator)
            monitor.check(step, logs, self.latest.latest_checkpoint)
            if logged:
                scalars = {name: float(value) for name, value in logs.items() if name not in _HEALTH_LOGS}
                scalars["steps_per_second"] = (step - window[1]) / (time.time() - window[0])
                # Keras returns the schedule's value at the current step.
                scalars["learning_rate"] = float(tf.identity(self.optimizer.learning_rate))
                summaries.write_scalars(writers, "train", tagged(scalars, TRAIN_TAGS), step)
                progress.train(step, scalars)
                hub_watch.check(step, scalars)
                callbacks.on_train_batch_end(step, scalars)
                for metric in self.model.metrics:
                    metric.reset_state()  # Logged values are means over the window.
                window = (time.time(), step)
            save_due = save_due or step % config.checkpoint_every == 0
            if save_due and monitor.safe_to_save():
                self.train_seconds.assign(seconds_before + time.time() - started)
                save_checkpoint(self.latest, step, self.write_dir)
                save_due = False
            if self.dataset.validation is not None and (step % config.eval_every == 0 or step == config.train_steps):
                best_state = self._validate(step, writers, best_state)
                validation = {f"val_{k}": v for k, v in self.last_validation.items()}
                callbacks.on_epoch_end(step // config.eval_every, validation)
            if self.model.stop_training:
                self.stopped_at = step
                print(f"A callback stopped training at step {step}.")
                break
        callbacks.on_train_end()
        self.reestimate_batchnorm()  # The last checkpoint is what gets evaluated and exported.
        self.train_seconds.assign(seconds_before + time.time() - started)
        save_checkpoint(self.latest, step, self.write_dir)
        return best_state

    def _validate(self, step, writers, best_state):
        result = self.last_validation = self.evaluate(self.dataset.validation)
        summaries.write_scalars(writers, "validation", tagged(result, validation_tags(self.model.uses_database)), step)
        self.progress.validation(step, result)
        if self.info.kind.examples_are_images and self.model.uses_database and "validation" in writers:
            inputs = self.dataset.validation.inputs[:4]
            summaries.write_prototype_images(
                writers["validation"], step, self.model, self.dataset.preprocess, inputs, self.inference_split.inputs
            )
        if best_state is None or result["accuracy"] > best_state["accuracy"]:
            best_state = {"step": step, **result}
            save_checkpoint(self.best, step, self.write_dir)
            if self.is_chief:
                json_files.write_json(os.path.join(self.write_dir, BEST_FILE), best_state)
        return best_state

    def _final_summary(self, start, best_state):
        summary = {
            "config": dataclasses.asdict(self.config),
            "steps": self.step,
            "resumed_from_step": start,
            "train_seconds": round(float(self.train_seconds.numpy()), 2),
            "replicas": self.strategy.num_replicas_in_sync,
            "class_names": list(self.dataset.class_names),
            **({"stopped_by_callback_at": self.stopped_at} if self.stopped_at else {}),
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
            json_files.write_json(os.path.join(self.config.model_dir, SUMMARY_FILE), summary)
        return summary

    def _cleanup(self):
        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)


_HEALTH_LOGS = ("step_loss", "first_nonfinite_gradient", "first_nonfinite_weight")


def train(
    config: ExperimentConfig,
    dataset: LoadedDataset | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains the experiment of `config` (resuming when possible) with optional Keras
    `callbacks`; returns its summary."""
    return Trainer(config, dataset, strategy, verbose, callbacks=callbacks).train()
