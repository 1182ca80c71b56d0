"""The mislabel audit against cleanlab on a run trained with label noise (known flips).

Both methods get the same budget: cleanlab's `find_label_issues` reads out-of-fold
probabilities of the baseline encoder, each fold's model trained with the run's own
flags (attention none) on the other folds; the audit reads the run's prototypes. Each
ranking is scored against the flips the run's `--label_noise` made.
"""

import os
from typing import Callable

import numpy as np

from proto_tf.analysis import out_of_fold
from proto_tf.analysis.audit import flagged_count, leave_one_out_agreement, rank_suspects
from proto_tf.data.common import LoadedDataset, Split
from proto_tf.data.registry import load_dataset
from proto_tf.errors import ConfigError
from proto_tf.evaluation import Evaluator
from proto_tf.training import run_store
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


def out_of_fold_probabilities(
    config: ExperimentConfig, dataset: LoadedDataset, folds: int, work_dir: str, log: Callable[[str], None] = print
) -> np.ndarray:
    """`[N, C]` probabilities of each training example from a baseline trained (with
    the run's flags, attention none) on the other `folds - 1` folds (the audit's folds:
    `out_of_fold.fold_of`)."""
    baseline = dict(attention="none", sparsity_weight=0.0, matching_loss_weight=1.0, joint_encoding=True)
    baseline.update(matching_warmup_steps=0, tied_head_init=False, cosine_scale=0.0)
    probabilities = np.zeros((len(dataset.train), dataset.num_classes), np.float32)
    for fold_config, held_out, _ in out_of_fold.train_folds(config, dataset, folds, work_dir, log, **baseline):
        model = run_store.load_trained_model(fold_config.model_dir, fold_config, dataset, "best")[0]
        predicted = Evaluator(model, dataset.preprocess, config.eval_batch_size).predict(
            out_of_fold.subset(dataset.train, held_out)
        )
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
    model_dir: str,
    folds: int = 3,
    work_dir: str | None = None,
    audited: dict | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Rows `{method, trainings, k, precision, recall}` of the audit and of cleanlab on
    the run in `model_dir`, at k = the number of true flips and at each method's own
    count of flagged examples. cleanlab reads out-of-fold probabilities of the baseline
    trained with the run's flags on the same `folds` as an out-of-fold audit (the same
    budget: `folds` trainings of the run's steps each). When the audit is out-of-fold,
    a third row runs cleanlab on its class masses (the same evidence, cleanlab's
    ranking). `audited`: `audit.audit_run`'s result for the run (else the in-sample
    audit is made here, best checkpoint)."""
    check_comparable(model_dir)
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if audited is None:
        config, dataset, model, _ = run_store.load_run(model_dir)
        found = leave_one_out_agreement(model, dataset.preprocess, dataset.train, dataset.num_classes)
        audited = {
            "order": rank_suspects(found["own_label_mass"], found["class_mass"]),
            "flagged": flagged_count(found["own_label_mass"], found["class_mass"]),
            "folds": 0,
        }
    else:
        config = run_store.read_config(model_dir)
        dataset = run_store.load_experiment_dataset(config, model_dir)
    flips = true_flips(config, dataset.train)
    labels = dataset.train.labels
    work_dir = work_dir or os.path.join(model_dir, "cleanlab")
    probabilities = out_of_fold_probabilities(config, dataset, folds, work_dir, log)

    def cleanlab_ranking(scores):
        # Every example ranked by cleanlab's label quality (lowest first), and how many it flags.
        order = np.argsort(get_label_quality_scores(labels, scores, method="self_confidence"), kind="stable")
        return order, int(find_label_issues(labels, scores).sum())

    audit_name = f"ProtoAttend audit, {audited['folds']}-fold" if audited["folds"] else "ProtoAttend audit, in-sample"
    methods = [(audit_name, audited["folds"] or 1, audited["order"], audited["flagged"])]
    methods.append((f"cleanlab (baseline, {folds}-fold)", folds, *cleanlab_ranking(probabilities)))
    if audited["folds"]:
        mass = np.clip(audited["class_mass"], 1e-6, None)
        methods.append(
            (
                f"cleanlab on ProtoAttend's {audited['folds']}-fold class mass",
                0,
                *cleanlab_ranking(mass / mass.sum(1, keepdims=True)),
            )
        )
    rows = []
    for method, trainings, order, flagged in methods:
        for k in (int(flips.sum()), flagged):
            precision, recall = precision_recall(order, flips, k)
            rows.append({"method": method, "trainings": trainings, "k": k, "precision": precision, "recall": recall})
    return rows


def markdown(rows: list[dict]) -> str:
    """The comparison rows as a Markdown table."""
    lines = ["| method | trainings | k | precision | recall |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {r['method']} | {r['trainings'] or 'its audit'} | {r['k']} | {100 * r['precision']:.1f} % | "
        f"{100 * r['recall']:.1f} % |"
        for r in rows
    ]
    return "\n".join(lines)
