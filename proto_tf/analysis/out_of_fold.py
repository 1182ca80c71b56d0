"""The out-of-fold audit and confident learning's thresholds.

The in-sample audit judges each training example with a model trained on that very
label (it has learnt the noise). Here the training split is cut into K folds; K
ProtoAttend models are each trained with the run's own flags on the other folds, and
each held-out example attends over a database of the other folds only: its class mass
over those prototypes is evidence from a model that never saw its label. Each fold's
run lives in `work_dir/fold<k>` and resumes like any run, so a killed audit continues
with the folds it has.

Ranking and flagging follow confident learning (Northcutt, Jiang & Chuang, 2021): the
threshold of class j is the mean mass on j of the examples labelled j; an example is
counted in the confident joint at the class of largest mass among those at or above
their threshold, and flagged when that class is not its label.
"""

import dataclasses
import os
from typing import Callable

import numpy as np

from proto_tf.analysis.agreement import attention_agreement
from proto_tf.data.common import LoadedDataset, Split
from proto_tf.training import run_store, trainer
from proto_tf.training.config import ExperimentConfig

RANKINGS = ("self_confidence", "margin")


def fold_of(count: int, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each of `count` examples: a fixed-seed even split."""
    return np.random.default_rng(seed).permutation(count) % folds


def subset(split: Split, positions: np.ndarray) -> Split:
    return Split(split.inputs[positions], split.labels[positions], split.indices[positions])


def train_folds(
    config: ExperimentConfig,
    dataset: LoadedDataset,
    folds: int,
    work_dir: str,
    log: Callable[[str], None] = print,
    **overrides,
) -> list:
    """`[(fold config, held-out positions, kept positions)]`: one run per fold, trained
    with `config`'s flags (and `overrides`) on the other folds into `work_dir/fold<k>`;
    a finished fold is reused, an unfinished one resumes from its last checkpoint."""
    assignment = fold_of(len(dataset.train), folds, config.seed)
    trained = []
    for fold in range(folds):
        held_out, kept = np.flatnonzero(assignment == fold), np.flatnonzero(assignment != fold)
        fold_config = dataclasses.replace(config, model_dir=os.path.join(work_dir, f"fold{fold}"), **overrides)
        status = os.path.join(fold_config.model_dir, run_store.SUMMARY_FILE)
        reused = os.path.isfile(status) and run_store.run_status(fold_config.model_dir).finished
        log(
            f"fold {fold + 1}/{folds}: "
            + (
                f"finished before, reused ({fold_config.model_dir})."
                if reused
                else f"training on the other {len(kept):,} examples into {fold_config.model_dir}"
            )
        )
        fold_trainer = trainer.Trainer(
            fold_config, dataclasses.replace(dataset, train=subset(dataset.train, kept)), verbose=False
        )
        fold_trainer.train()
        trained.append((fold_config, held_out, kept))
    return trained


def out_of_fold_evidence(
    config: ExperimentConfig,
    dataset: LoadedDataset,
    folds: int,
    work_dir: str,
    top_k: int = 5,
    log: Callable[[str], None] = print,
) -> dict:
    """Each training example's `class_mass [N, C]` over the prototypes of the other
    folds (ProtoAttend trained there), its `top_k` prototypes (`prototype_rows`:
    positions in the training split, never of its own fold) and `fold`."""
    train = dataset.train
    class_mass = np.zeros((len(train), dataset.num_classes), np.float32)
    rows = np.full((len(train), top_k), -1, np.int64)
    weights = np.zeros((len(train), top_k), np.float32)
    assignment = fold_of(len(train), folds, config.seed)
    for fold_config, held_out, kept in train_folds(config, dataset, folds, work_dir, log):
        model, _ = run_store.load_trained_model(fold_config.model_dir, fold_config, dataset)
        found = attention_agreement(
            model,
            dataset.preprocess,
            subset(train, held_out),
            subset(train, kept),
            dataset.num_classes,
            top_k,
            config.eval_batch_size,
        )
        class_mass[held_out] = found["class_mass"]
        width = found["prototype_rows"].shape[1]
        rows[held_out, :width] = kept[found["prototype_rows"]]  # Positions in the training split.
        weights[held_out, :width] = found["prototype_weights"]
    own = class_mass[np.arange(len(train)), train.labels]
    return {
        "own_label_mass": own,
        "class_mass": class_mass,
        "prototype_rows": rows,
        "prototype_weights": weights,
        "fold": assignment,
    }


def confident_learning(labels: np.ndarray, class_mass: np.ndarray) -> dict:
    """Confident learning on out-of-fold class masses: per-class `thresholds [C]` (the
    mean mass on class j of the examples labelled j), the `confident_joint [C, C]`
    (rows: given label, columns: the class of largest mass among those at or above
    their threshold), and `flagged [N]`: counted off the diagonal."""
    labels = np.asarray(labels, np.int64)
    num_classes = class_mass.shape[1]
    thresholds = np.array(
        [class_mass[labels == j, j].mean() if np.any(labels == j) else 1.0 for j in range(num_classes)]
    )
    confident = class_mass >= thresholds[None, :] - 1e-12  # Float slack: an example at its class's mean counts.
    masked = np.where(confident, class_mass, -np.inf)
    counted = confident.any(axis=1)
    guess = np.argmax(masked, axis=1)
    joint = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(joint, (labels[counted], guess[counted]), 1)
    return {"thresholds": thresholds, "confident_joint": joint, "flagged": counted & (guess != labels)}


def rank(labels: np.ndarray, class_mass: np.ndarray, by: str = "self_confidence") -> np.ndarray:
    """Positions from the most to the least suspect: by `self_confidence` (least mass on
    the given label first; ties by the largest mass on another class) or by `margin`
    (the given label's mass minus the largest other, smallest first)."""
    if by not in RANKINGS:
        raise ValueError(f"by must be one of {RANKINGS}, got {by!r}.")
    labels = np.asarray(labels, np.int64)
    own = class_mass[np.arange(len(labels)), labels]
    others = class_mass.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    strongest_other = others.max(axis=1)
    if by == "self_confidence":
        return np.lexsort((-strongest_other, own))
    return np.lexsort((own, own - strongest_other))
