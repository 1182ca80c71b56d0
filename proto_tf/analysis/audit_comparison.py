"""The mislabel audit against cleanlab on a run trained with label noise (known flips).

Both methods get the same budget: cleanlab's `find_label_issues` reads out-of-fold
probabilities of the baseline encoder, each fold's model trained with the run's own
flags (attention none) on the other folds; the audit reads the run's prototypes. Each
ranking is scored against the flips the run's `--label_noise` made.
"""

import dataclasses
import os

import numpy as np

from proto_tf.analysis.audit import flagged_count, leave_one_out_agreement, rank_suspects
from proto_tf.data.common import LoadedDataset, Split
from proto_tf.data.registry import load_dataset
from proto_tf.errors import ConfigError
from proto_tf.evaluation import Evaluator
from proto_tf.training import run_store, trainer
from proto_tf.training.config import ExperimentConfig


def true_flips(config: ExperimentConfig, train: Split) -> np.ndarray:
    """True where the run's training label differs from the file's (the injected noise)."""
    clean = load_dataset(
        config.dataset, config.data_dir, validation_fraction=0.0, seed=config.seed, options=config.data_options()
    ).train
    by_row = np.full(int(clean.indices.max()) + 1, -1, np.int64)
    by_row[clean.indices] = clean.labels
    return np.asarray(train.labels) != by_row[np.asarray(train.indices)]


def precision_recall(ranked: np.ndarray, flips: np.ndarray, k: int) -> tuple[float, float]:
    """Precision and recall of the first `k` positions of `ranked` against `flips`."""
    found = int(flips[np.asarray(ranked[:k], np.int64)].sum())
    return found / max(k, 1), found / max(int(flips.sum()), 1)


def _subset(split: Split, positions: np.ndarray) -> Split:
    return Split(split.inputs[positions], split.labels[positions], split.indices[positions])


def out_of_fold_probabilities(
    config: ExperimentConfig, dataset: LoadedDataset, folds: int, work_dir: str
) -> np.ndarray:
    """`[N, C]` probabilities of each training example from a baseline trained (with
    the run's flags, attention none) on the other `folds - 1` folds."""
    baseline = dataclasses.replace(
        config, attention="none", sparsity_weight=0.0, matching_loss_weight=1.0, joint_encoding=True
    )
    train = dataset.train
    fold_of = np.random.default_rng(config.seed).permutation(len(train)) % folds
    probabilities = np.zeros((len(train), dataset.num_classes), np.float32)
    for fold in range(folds):
        held_out, kept = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
        fold_config = dataclasses.replace(baseline, model_dir=os.path.join(work_dir, f"fold{fold}"))
        fold_trainer = trainer.Trainer(
            fold_config, dataclasses.replace(dataset, train=_subset(train, kept)), verbose=False
        )
        fold_trainer.train()
        model = run_store.load_trained_model(fold_config.model_dir, fold_config, dataset, "best")[0]
        predicted = Evaluator(model, dataset.preprocess, config.eval_batch_size).predict(_subset(train, held_out))
        probabilities[held_out] = predicted["probabilities"]
    return probabilities


def check_comparable(model_dir: str) -> None:
    """A ConfigError unless the run in `model_dir` has known flips (`--label_noise`) and
    cleanlab is installed: checked before any work."""
    if not run_store.read_config(model_dir).label_noise:
        raise ConfigError(
            f"--compare_cleanlab: {model_dir} was trained without --label_noise, so no flips are known to score against."
        )
    try:  # An optional extra.
        import cleanlab.filter  # noqa: F401
    except ImportError:
        raise ConfigError('--compare_cleanlab needs cleanlab: pip install "proto_tf[compare]".') from None


def compare_with_cleanlab(
    model_dir: str, folds: int = 3, work_dir: str | None = None, audited: dict | None = None
) -> list[dict]:
    """Rows `{method, k, precision, recall}` of the audit and of cleanlab on the run in
    `model_dir`, at k = the number of true flips and at each method's own count of
    flagged examples (the audit flags an example whose prototypes put more weight on
    another class than on its own label). `audited`: `audit.audit_run`'s result for the
    run, when the audit has been made already (else it is made here, best checkpoint)."""
    check_comparable(model_dir)
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if audited is None:
        config, dataset, model, _ = run_store.load_run(model_dir)
        found = leave_one_out_agreement(model, dataset.preprocess, dataset.train, dataset.num_classes)
        audit_order = rank_suspects(found["own_label_mass"], found["class_mass"])
        audit_flagged = flagged_count(found["own_label_mass"], found["class_mass"])
    else:
        config = run_store.read_config(model_dir)
        dataset = run_store.load_experiment_dataset(config)
        audit_order, audit_flagged = audited["order"], audited["flagged"]
    flips = true_flips(config, dataset.train)
    probabilities = out_of_fold_probabilities(config, dataset, folds, work_dir or os.path.join(model_dir, "cleanlab"))
    labels = dataset.train.labels
    # Every example ranked by cleanlab's label quality (lowest first), and how many it flags.
    cleanlab_order = np.argsort(
        get_label_quality_scores(labels, probabilities, method="self_confidence"), kind="stable"
    )
    cleanlab_flagged = int(find_label_issues(labels, probabilities).sum())
    rows = []
    for method, order, flagged in (
        ("ProtoAttend audit", audit_order, audit_flagged),
        (f"cleanlab (baseline, {folds}-fold)", cleanlab_order, cleanlab_flagged),
    ):
        for k in (int(flips.sum()), flagged):
            precision, recall = precision_recall(order, flips, k)
            rows.append({"method": method, "k": k, "precision": precision, "recall": recall})
    return rows


def markdown(rows: list[dict]) -> str:
    """The comparison rows as a Markdown table."""
    lines = ["| method | k | precision | recall |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['k']} | {100 * r['precision']:.1f} % | {100 * r['recall']:.1f} % |" for r in rows]
    return "\n".join(lines)
