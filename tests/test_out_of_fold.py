"""The out-of-fold audit (run/audit.py --folds=K): confident learning against a NumPy
re-computation by loops, a row never judged by its own fold, the flips found, and a
killed audit that resumes with the folds it has."""

import csv
import os

import numpy as np
import pytest

from proto_tf.analysis import audit, audit_comparison, out_of_fold
from proto_tf.errors import ConfigError
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.run_store import load_experiment_dataset
from proto_tf.training.trainer import Trainer


def confident_learning_by_loops(labels, mass):
    """Northcutt et al. (2021), Eq. 1-2, written as loops: t_j = mean of p_j over the
    examples labelled j; example i counts at argmax_{j: p_ij >= t_j} p_ij."""
    classes = mass.shape[1]
    thresholds = []
    for j in range(classes):
        values = [mass[i, j] for i in range(len(labels)) if labels[i] == j]
        thresholds.append(sum(values) / len(values))
    joint = [[0] * classes for _ in range(classes)]
    flagged = []
    for i, label in enumerate(labels):
        above = [j for j in range(classes) if mass[i, j] >= thresholds[j]]
        if not above:
            flagged.append(False)
            continue
        guess = max(above, key=lambda j: mass[i, j])
        joint[label][guess] += 1
        flagged.append(guess != label)
    return np.array(thresholds), np.array(joint), np.array(flagged)


def test_confident_learning_matches_the_loops():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    mass = rng.dirichlet(np.ones(4) * 0.5, 300)
    mass[np.arange(300), labels] += 0.5  # Mostly agreeing, as a trained model.
    mass /= mass.sum(axis=1, keepdims=True)
    found = out_of_fold.confident_learning(labels, mass)
    thresholds, joint, flagged = confident_learning_by_loops(labels, mass)
    np.testing.assert_allclose(found["thresholds"], thresholds)
    np.testing.assert_array_equal(found["confident_joint"], joint)
    np.testing.assert_array_equal(found["flagged"], flagged)
    assert 0 < flagged.sum() < 300


def test_rankings_by_hand():
    labels = np.array([0, 1, 0, 1])
    mass = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    # Self-confidence: own mass 0.9, 0.4, 0.2, 0.5.
    assert out_of_fold.rank(labels, mass, "self_confidence").tolist() == [2, 1, 3, 0]
    # Margin (own - best other): 0.8, -0.2, -0.6, 0.0.
    assert out_of_fold.rank(labels, mass, "margin").tolist() == [2, 1, 3, 0]
    with pytest.raises(ValueError, match="by must be one of"):
        out_of_fold.rank(labels, mass, "entropy")


def write_clusters(folder, rows=600, seed=0):
    """train.csv and test.csv: three Gaussian clusters in four numeric columns."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 4)) * 2.5
    os.makedirs(folder, exist_ok=True)
    for name, count in (("train.csv", rows), ("test.csv", 150)):
        labels = rng.integers(0, 3, count)
        points = centres[labels] + rng.normal(size=(count, 4))
        with open(os.path.join(folder, name), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["a", "b", "c", "d", "label"])
            writer.writerows([*np.round(p, 4), f"class{label}"] for p, label in zip(points, labels))
    return folder


@pytest.fixture(scope="module")
def noisy_clusters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oof")
    config = ExperimentConfig(
        dataset="csv",
        attention="sparsemax",
        data_dir=write_clusters(str(folder / "data")),
        model_dir=str(folder / "run"),
        label_column="label",
        label_noise=0.2,
        train_steps=150,
        batch_size=32,
        train_database_size=64,
        infer_database_size=256,
        value_size=8,
        lstm_embedding_size=8,
        learning_rate=0.01,
        validation_fraction=0.1,
        checkpoint_every=150,
        eval_every=150,
        deterministic=True,  # The folds retrain to the same weights (the resume test).
    )
    Trainer(config, verbose=False).train()
    return config


@pytest.mark.slow
def test_out_of_fold_audit_finds_the_flips_and_no_row_is_judged_by_its_own_fold(noisy_clusters, tmp_path):
    config = noisy_clusters
    result = audit.audit_run(config.model_dir, str(tmp_path / "audit"), folds=2, log=lambda line: None)
    dataset = load_experiment_dataset(config)
    fold = out_of_fold.fold_of(len(dataset.train), 2, config.seed)
    rows_of = {int(row): position for position, row in enumerate(dataset.train.indices)}
    for record in result["records"]:
        position = rows_of[record["train_row"]]
        assert record["fold"] == fold[position]
        assert record["prototypes"], record
        assert all(fold[rows_of[p["train_row"]]] != fold[position] for p in record["prototypes"])
    flips = audit_comparison.true_flips(config, dataset.train)
    precision, recall = audit_comparison.precision_recall(result["order"], flips, int(flips.sum()))
    # One in five labels flipped: a random ranking has precision 0.2.
    assert precision >= 0.7, (precision, recall)
    flagged = np.array([r["flagged"] for r in result["records"]])
    assert flagged.sum() == result["flagged"] and flips[result["order"][flagged]].mean() >= 0.7
    assert result["mode"].startswith("2-fold out-of-fold, confident learning")
    # The fold runs live with the run, shared by every audit of it: another ranking into
    # another folder trains nothing.
    assert os.path.isdir(os.path.join(config.model_dir, "out_of_fold", "2_folds", "fold1", "checkpoints"))
    said = []
    by_margin = audit.audit_run(config.model_dir, str(tmp_path / "margin"), folds=2, ranking="margin", log=said.append)
    assert all("finished before, reused" in line for line in said) and len(said) == 2
    np.testing.assert_array_equal(by_margin["class_mass"], result["class_mass"])


@pytest.mark.slow
def test_a_killed_out_of_fold_audit_resumes_with_the_folds_it_has(noisy_clusters, tmp_path, monkeypatch):
    config = noisy_clusters
    whole = audit.audit_run(
        config.model_dir, str(tmp_path / "whole"), folds=2, log=lambda line: None, folds_dir=str(tmp_path / "f1")
    )
    calls, train = [], Trainer.train

    def killed_at_the_second_fold(self):
        calls.append(self.config.model_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(self)

    monkeypatch.setattr(Trainer, "train", killed_at_the_second_fold)
    with pytest.raises(KeyboardInterrupt):
        audit.audit_run(
            config.model_dir, str(tmp_path / "killed"), folds=2, log=lambda line: None, folds_dir=str(tmp_path / "f2")
        )
    monkeypatch.setattr(Trainer, "train", train)
    said = []
    resumed = audit.audit_run(
        config.model_dir, str(tmp_path / "killed"), folds=2, log=said.append, folds_dir=str(tmp_path / "f2")
    )
    assert said[0].startswith("fold 1/2: finished before, reused") and said[1].startswith("fold 2/2: training")
    np.testing.assert_array_equal(resumed["order"], whole["order"])
    np.testing.assert_allclose(resumed["class_mass"], whole["class_mass"], atol=1e-6)


def test_folds_of_one_or_an_unknown_ranking_are_refused(noisy_clusters):
    with pytest.raises(ConfigError, match=r"--folds=1 must be 0 \(the in-sample audit\) or at least 2"):
        audit.audit_run(noisy_clusters.model_dir, folds=1)
    with pytest.raises(ConfigError, match="--ranking='entropy' is not valid; valid: self_confidence, margin"):
        audit.audit_run(noisy_clusters.model_dir, folds=2, ranking="entropy")


def test_compare_cleanlab_without_folds_is_one_line(noisy_clusters):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(repo, "run", "audit.py"),
            f"--model_dir={noisy_clusters.model_dir}",
            "--compare_cleanlab",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: --compare_cleanlab needs --folds=K >= 2: cleanlab reads out-of-fold probabilities."
    )


def _tiny_dataset():
    from proto_tf.data.common import LoadedDataset, Split

    split = Split(np.zeros((5, 2), np.float32), np.array([0, 1, 0, 1, 0]), np.array([10, 11, 12, 13, 14]))
    return LoadedDataset("t", 2, ("no", "yes"), split, None, split, None, None, None)


def test_cleaning_drops_and_relabels_the_named_rows_as_by_hand(tmp_path):
    from proto_tf.data import cleaning

    (tmp_path / "drop.csv").write_text("train_row\n11\n14\n")
    (tmp_path / "relabel.csv").write_text("train_row,label\n10,yes\n13,0\n")
    out = cleaning.cleaned(_tiny_dataset(), str(tmp_path / "drop.csv"), str(tmp_path / "relabel.csv"))
    assert out.train.indices.tolist() == [10, 12, 13]
    assert out.train.labels.tolist() == [1, 0, 0]
    assert out.test.labels.tolist() == [0, 1, 0, 1, 0]  # The test split is never cleaned.


@pytest.mark.parametrize(
    "flag, text, message",
    [
        ("drop", "row\n1\n", r"--drop_rows=.*drop.csv:1: expected the header train_row"),
        ("drop", "train_row\n11\nx\n", r"--drop_rows=.*drop.csv:3: 'x' is not a training row number"),
        ("drop", "train_row\n99\n", r"--drop_rows=.*drop.csv:2: row 99 is not in the training split"),
        (
            "relabel",
            "train_row,label\n10,maybe\n",
            r"--relabel_rows=.*relabel.csv:2: expected train_row,label with a label of no, yes",
        ),
    ],
)
def test_bad_cleaning_files_name_file_line_and_what_is_valid(tmp_path, flag, text, message):
    from proto_tf.data import cleaning
    from proto_tf.errors import DataError

    path = tmp_path / f"{flag}.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        cleaning.cleaned(_tiny_dataset(), **{f"{flag}_rows": str(path)})


@pytest.mark.slow
def test_the_audits_drop_list_trains_a_run_without_the_flagged_rows(noisy_clusters, tmp_path):
    import dataclasses

    config = noisy_clusters
    output = str(tmp_path / "audit")
    result = audit.audit_run(config.model_dir, output, folds=2, log=lambda line: None)
    paths = audit.write_cleaning(result, output, drop=True, relabel=True)
    flagged = {r["train_row"] for r in result["records"] if r["flagged"]}
    cleaned_config = dataclasses.replace(config, drop_rows=paths["drop_rows"], model_dir=str(tmp_path / "cleaned"))
    dataset = load_experiment_dataset(config)
    cleaned = load_experiment_dataset(cleaned_config)
    assert set(cleaned.train.indices.tolist()) == set(dataset.train.indices.tolist()) - flagged
    relabelled = load_experiment_dataset(dataclasses.replace(config, relabel_rows=paths["relabel_rows"]))
    suggested = {r["train_row"]: r["suggested_label"] for r in result["records"] if r["flagged"]}
    for row, label in zip(relabelled.train.indices, relabelled.train.labels):
        assert label == suggested.get(int(row), dataset.train.labels[dataset.train.indices.tolist().index(row)])
