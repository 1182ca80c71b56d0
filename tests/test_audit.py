"""The mislabel audit against NumPy references and hand counts, and the command."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from data_files import write_adult
from references import softmax

from proto_tf import ProtoAttend
from proto_tf.analysis import audit, audit_comparison
from proto_tf.data import Split
from proto_tf.data.noise import corrupt_labels
from proto_tf.errors import ConfigError
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.run_store import load_experiment_dataset
from proto_tf.training.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_each_example_attends_over_the_others_only():
    rng = np.random.default_rng(0)
    model = ProtoAttend(keras.layers.Dense(6), 3, "softmax", attention_size=4, value_size=5)
    model.build((None, 3))
    split = Split(rng.normal(size=(11, 3)).astype("float32"), rng.integers(0, 3, 11), np.arange(11) + 100)
    found = audit.leave_one_out_agreement(model, lambda x: x, split, 3, top_k=4, batch_size=4)
    queries, keys, _ = (t.numpy() for t in model.encode(split.inputs))
    logits = queries @ keys.T / 2.0  # sqrt(attention_size 4)
    np.fill_diagonal(logits, -np.inf)  # Not itself.
    weights = softmax(logits)
    class_mass = weights @ np.eye(3)[split.labels]
    np.testing.assert_allclose(found["class_mass"], class_mass, atol=1e-5)
    np.testing.assert_allclose(found["own_label_mass"], class_mass[np.arange(11), split.labels], atol=1e-5)
    assert not (found["prototype_rows"] == np.arange(11)[:, None]).any()
    np.testing.assert_array_equal(found["prototype_rows"][:, 0], np.argmax(weights, axis=1))
    np.testing.assert_allclose(found["prototype_weights"], -np.sort(-weights, axis=1)[:, :4], atol=1e-5)


def test_ranking_flagging_and_scores_by_hand():
    own = np.array([0.9, 0.1, 0.4, 0.1, 0.6])
    class_mass = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.1, 0.5], [0.4, 0.6]])
    # Least weight on the own label first; of the two at 0.1, the one whose top class is stronger.
    assert audit.rank_suspects(own, class_mass).tolist() == [1, 3, 2, 4, 0]
    assert audit.flagged_count(own, class_mass) == 3  # Rows 1, 2 and 3: another class outweighs the own label.
    flips = np.array([False, True, True, False, False])
    assert audit_comparison.precision_recall(np.array([1, 3, 2, 4, 0]), flips, 2) == (0.5, 0.5)
    assert audit_comparison.precision_recall(np.array([1, 3, 2, 4, 0]), flips, 3) == (2 / 3, 1.0)


def test_true_flips_are_the_labels_the_noise_changed(tmp_path):
    config = ExperimentConfig(
        dataset="adult", data_dir=write_adult(str(tmp_path / "adult")), label_noise=0.3, seed=5, model_dir="unused"
    )
    dataset = load_experiment_dataset(config)
    clean = load_experiment_dataset(ExperimentConfig(dataset="adult", data_dir=config.data_dir, model_dir="unused"))
    # Independent reference: the noise applied to the whole file's labels, read at the train rows.
    all_clean = np.concatenate([clean.train.labels, clean.validation.labels])
    rows = np.concatenate([clean.train.indices, clean.validation.indices])
    by_row = np.empty(rows.max() + 1, np.int32)
    by_row[rows] = all_clean
    noisy = corrupt_labels(by_row, 0.3, 2, seed=5)
    expected = noisy[dataset.train.indices] != by_row[dataset.train.indices]
    flips = audit_comparison.true_flips(config, dataset.train)
    np.testing.assert_array_equal(flips, expected)
    assert 0 < flips.sum() < len(flips)


def _trained_adult_run(folder, **overrides):
    """A finished tiny sparsemax run on written Adult files; its config."""
    config = ExperimentConfig(
        **{
            "dataset": "adult",
            "attention": "sparsemax",
            "data_dir": write_adult(str(folder / "adult")),
            "model_dir": str(folder / "run"),
            "train_steps": 4,
            "batch_size": 8,
            "train_database_size": 16,
            "infer_database_size": 40,
            "validation_fraction": 0.2,
            "lstm_embedding_size": 8,
            "checkpoint_every": 2,
            "eval_every": 2,
            **overrides,
        }
    )
    Trainer(config, verbose=False).train()
    return config


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    return _trained_adult_run(tmp_path_factory.mktemp("audit"), label_noise=0.2)


def test_audit_command_writes_every_example_ranked_and_refuses_a_baseline(noisy_run, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "run", "audit.py"), f"--model_dir={noisy_run.model_dir}", "--show=3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "flagged (more weight on another class than on the own label)" in result.stdout
    folder = os.path.join(noisy_run.model_dir, "audit")
    with open(os.path.join(folder, "audit.csv")) as handle:
        rows = list(csv.DictReader(handle))
    dataset = load_experiment_dataset(noisy_run)
    assert sorted(int(r["train_row"]) for r in rows) == sorted(dataset.train.indices.tolist())
    masses = [float(r["own_label_mass"]) for r in rows]
    assert masses == sorted(masses) and [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    with open(os.path.join(folder, "audit.jsonl")) as handle:
        first = json.loads(handle.readline())
    assert first["train_row"] == int(rows[0]["train_row"]) and first["label_name"] in ("<=50K", ">50K")
    assert all(p["train_row"] != first["train_row"] for p in first["prototypes"])
    assert os.path.isfile(os.path.join(folder, "audit.png")) and os.path.isfile(os.path.join(folder, "audit.pdf"))
    baseline = _trained_adult_run(tmp_path, attention="none", train_steps=2)
    with pytest.raises(
        ConfigError, match=r"^--model_dir=.* is a baseline run: the audit needs a model with prototypes\.$"
    ):
        audit.audit_run(baseline.model_dir)  # A ConfigError: one line on the command line.


def test_comparison_needs_known_flips(noisy_run, tmp_path):
    import shutil

    clean = shutil.copytree(noisy_run.model_dir, tmp_path / "clean")
    config = json.loads((clean / "config.json").read_text())
    (clean / "config.json").write_text(json.dumps({**config, "label_noise": 0.0}))  # As if trained without.
    with pytest.raises(ConfigError, match=r"^--compare_cleanlab: .* was trained without --label_noise, so no flips"):
        audit_comparison.compare_with_cleanlab(str(clean))


def test_comparison_with_cleanlab_scores_both_rankings(noisy_run, tmp_path):
    pytest.importorskip("cleanlab")
    rows = audit_comparison.compare_with_cleanlab(noisy_run.model_dir, folds=2, work_dir=str(tmp_path / "folds"))
    flips = audit_comparison.true_flips(noisy_run, load_experiment_dataset(noisy_run).train)
    assert [r["method"] for r in rows] == ["ProtoAttend audit, in-sample"] * 2 + ["cleanlab (baseline, 2-fold)"] * 2
    assert [r["trainings"] for r in rows] == [1, 1, 2, 2]
    assert rows[0]["k"] == rows[2]["k"] == int(flips.sum())
    for row in rows:
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    assert os.path.isdir(tmp_path / "folds" / "fold0") and os.path.isdir(tmp_path / "folds" / "fold1")
    # The command passes its audit in (not made twice): the same audit rows.
    audited = audit.audit_run(noisy_run.model_dir, str(tmp_path / "audit"))
    again = audit_comparison.compare_with_cleanlab(noisy_run.model_dir, 2, str(tmp_path / "folds2"), audited)
    assert again[:2] == rows[:2]
    # An out-of-fold audit: cleanlab's baseline on the same folds, and cleanlab on its class mass.
    out_of_fold = audit.audit_run(noisy_run.model_dir, str(tmp_path / "oof"), folds=2, log=lambda line: None)
    compared = audit_comparison.compare_with_cleanlab(noisy_run.model_dir, 2, str(tmp_path / "folds"), out_of_fold)
    assert [r["method"] for r in compared][::2] == [
        "ProtoAttend audit, 2-fold",
        "cleanlab (baseline, 2-fold)",
        "cleanlab on ProtoAttend's 2-fold class mass",
    ]
    assert compared[2:4] == rows[2:4]  # The same fold runs (reused): the same baseline probabilities.


def test_comparison_without_cleanlab_installed_is_one_line(noisy_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)  # As if not installed.
    with pytest.raises(ConfigError, match=r'^--compare_cleanlab needs cleanlab: pip install "proto_tf\[compare\]"\.$'):
        audit_comparison.compare_with_cleanlab(noisy_run.model_dir)
