"""The store of past runs: reading a run directory's flags, data, checkpoints and
status, and loading a trained run, for every command that works on a finished (or
unfinished) run. Training itself is `trainer.Trainer`."""

import dataclasses
import os

import tensorflow as tf

from proto_tf import json_files
from proto_tf.data import cleaning
from proto_tf.data.common import LoadedDataset
from proto_tf.data.registry import dataset_info, load_dataset
from proto_tf.errors import RunDirectoryError, first_line
from proto_tf.training import config as config_lib
from proto_tf.training import features, run_directory
from proto_tf.training.checkpoints import make_checkpoint
from proto_tf.training.config import ExperimentConfig

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"


def load_experiment_dataset(config: ExperimentConfig, model_dir: str | None = None) -> LoadedDataset:
    """The dataset named by `config`, with its label noise and validation split; with
    a frozen `--backbone`, as the backbone's features (cached in `model_dir`, default
    the config's); with a fine-tuned one, as pixels the backbone prepares itself."""
    dataset = load_dataset(
        config.dataset,
        config.data_dir,
        validation_fraction=config.validation_fraction,
        label_noise=config.label_noise,
        seed=config.seed,
        download=config.download,
        options=config.data_options(),
    )
    if config.drop_rows or config.relabel_rows:
        dataset = cleaning.cleaned(dataset, config.drop_rows, config.relabel_rows)
    if config.backbone_trainable:
        dataset = features.for_fine_tuning(dataset)
    elif config.backbone:
        dataset = features.with_backbone_features(dataset, config, model_dir or config.model_dir)
    return dataset


def read_config(model_dir: str) -> ExperimentConfig:
    """The ExperimentConfig a run in `model_dir` was trained with (fields added since
    take their defaults)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunDirectoryError(f"no {CONFIG_FILE} in {model_dir}: is it a run/train.py model_dir?")
    values = json_files.read_json(path, f"the flags the run in {model_dir} was trained with")
    known = {field.name for field in dataclasses.fields(config_lib.ExperimentConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RunDirectoryError(
            f"{path} has fields this version does not know ({', '.join(unknown)}): it was "
            "written by another version of proto_tf."
        )
    return config_lib.ExperimentConfig(**values)


def load_trained_model(
    model_dir: str, config: ExperimentConfig, dataset: LoadedDataset, checkpoint: str = "best"
) -> tuple:
    """The model of an experiment with `config`, from the `best` checkpoint in
    `model_dir` (the last one when there is no best) or its `last` checkpoint.

    Checkpoints are found from their files (a damaged state file does not matter); an
    unreadable one is skipped with a warning naming it, for the next newest: a damaged
    best checkpoint falls back to the last good one of `checkpoints/`. No readable
    checkpoint is a RunDirectoryError."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}.")
    model = config_lib.build_model(config, dataset.info or dataset_info(config.dataset), dataset.num_classes)
    folders = (["best"] if checkpoint == "best" else []) + ["checkpoints"]
    candidates = [
        path for folder in folders for path in run_directory.checkpoint_paths(os.path.join(model_dir, folder))
    ]
    failures = []
    for path in candidates:
        try:
            # Only the model: the optimizer's variables in the checkpoint are not needed.
            make_checkpoint(model).restore(path).expect_partial().assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
            failures.append(path)
            print(f"warning: skipped unreadable checkpoint {path} ({first_line(error)}).")
            continue
        if failures:
            print(f"warning: using {path} instead.")
        return model, path
    if failures:
        raise RunDirectoryError(
            f"no checkpoint of {model_dir} can be read ({', '.join(failures)}): the run's files "
            "are damaged; train it again into another --model_dir."
        )
    raise RunDirectoryError(
        f"{model_dir} holds no checkpoint (nothing under {model_dir}/best or "
        f"{model_dir}/checkpoints): train the run first (run/train.py --model_dir={model_dir})."
    )


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """How far a run in a model_dir got: `finished` (its summary.json says so), the
    step of its newest checkpoint and the steps it was asked for."""

    finished: bool
    step: int
    train_steps: int

    def describe(self) -> str:
        state = "finished" if self.finished else "no final summary.json"
        return f"newest checkpoint at step {self.step} of {self.train_steps}; {state}"


def checkpoint_step(path: str) -> int:
    """The step number of a checkpoint prefix `.../ckpt-<step>`."""
    return int(path.rsplit("-", 1)[1])


def run_status(model_dir: str) -> RunStatus:
    """The RunStatus of the run in `model_dir` (its config.json must be readable)."""
    config = read_config(model_dir)
    paths = run_directory.checkpoint_paths(os.path.join(model_dir, "checkpoints"))
    step = checkpoint_step(paths[0]) if paths else 0
    finished = False
    path = os.path.join(model_dir, SUMMARY_FILE)
    if os.path.isfile(path):
        try:
            summary = json_files.read_json(path, "the run's final results")
        except RunDirectoryError:
            summary = {}
        finished = summary.get("steps") == step and (
            step == config.train_steps or summary.get("stopped_by_callback_at") == step
        )
    return RunStatus(finished, step, config.train_steps)


def unfinished_warning(model_dir: str, checkpoint_path: str) -> str | None:
    """The line a command on the run in `model_dir` prints when the run has not
    finished: which checkpoint it uses instead of the finished run's (None if finished)."""
    status = run_status(model_dir)
    if status.finished:
        return None
    return (
        f"warning: the run in {model_dir} is unfinished ({status.describe()}); using {checkpoint_path} "
        f"(step {checkpoint_step(checkpoint_path)}), not a finished run's checkpoint."
    )


def load_run(model_dir: str, checkpoint: str = "best", data_dir: str | None = None) -> tuple:
    """`(config, dataset, model, checkpoint_path)` of a run in `model_dir`, its data
    read from `data_dir` when given (else from where the run read it). Data other than
    the run trained on (its data.json: a replaced train.csv, another folder) is a
    RunDirectoryError: the standardisation, classes and database rebuilt from it would
    not be the run's."""
    config = read_config(model_dir)
    run_data_dir = config.data_dir
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir)
    dataset = load_experiment_dataset(config, model_dir)
    run_directory.check_same_data(model_dir, run_directory.data_fingerprint(dataset), config.data_dir, run_data_dir)
    model, path = load_trained_model(model_dir, config, dataset, checkpoint)
    return config, dataset, model, path
