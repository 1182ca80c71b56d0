import matplotlib.image
import numpy as np
import pytest
from data_files import write_mnist

from proto_tf.analysis import explain
from proto_tf.data import adult, raw_examples
from proto_tf.serving import export
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.trainer import Trainer


def test_explanations_from_a_saved_model(tmp_path):
    data_dir = str(tmp_path / "mnist")
    write_mnist(data_dir, train=60, test=12)
    config = ExperimentConfig(
        dataset="mnist",
        attention="sparsemax",
        data_dir=data_dir,
        model_dir=str(tmp_path / "run"),
        train_steps=2,
        batch_size=8,
        train_database_size=16,
        infer_database_size=30,
        validation_fraction=0.0,
        value_size=8,
        resnet_depth=8,
        dense_units=(8,),
        eval_batch_size=32,
    )
    Trainer(config, verbose=False).train()
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"), checkpoint="last")
    raw = raw_examples.load_raw("mnist", data_dir)
    items = explain.explain(path, "mnist", raw, list(range(12)), batch_size=5)
    assert [item["test_row"] for item in items] == list(range(12))
    names = raw["class_names"]
    for item in items:
        assert item["label"] == raw["test_labels"][item["test_row"]]
        assert item["label_name"] == names[item["label"]]
        assert item["shown_weight"] == pytest.approx(sum(p["weight"] for p in item["prototypes"]))
        assert 0 < item["shown_weight"] <= 1 + 1e-5
        for prototype in item["prototypes"]:
            assert raw["train_labels"][prototype["train_row"]] == prototype["label"]
            assert prototype["label_name"] == names[prototype["label"]]
    wrong = explain.misclassified(items)
    assert len(wrong) == sum(item["prediction"] != item["label"] for item in items)
    assert all(p["label"] != item["label"] for item in wrong for p in item["prototypes"])
    png, pdf = explain.render_images(items[:3], raw, str(tmp_path / "grid.png"), caption=explain.MISCLASSIFIED_NOTE)
    assert matplotlib.image.imread(png).shape[0] > 600  # 300 dpi.
    with open(pdf, "rb") as handle:
        content = handle.read()
    # Fonts embedded as TrueType (Type 42), never Type 3 (which some venues refuse).
    assert content[:5] == b"%PDF-" and b"/FontFile2" in content and b"/Type3" not in content


def test_adult_explanation_is_a_table_with_the_weight_share():
    raw = {
        "class_names": ("<=50K", ">50K"),
        "schema": adult.SCHEMA,
        "test": {name: np.array([1.0 if name in adult.CONTINUOUS else "x"], dtype=object) for name in adult.COLUMNS},
        "train": {
            name: np.array([2.0, 3.0] if name in adult.CONTINUOUS else ["a", "b"], dtype=object)
            for name in adult.COLUMNS
        },
    }
    item = {
        "test_row": 0,
        "label": 0,
        "label_name": "<=50K",
        "prediction": 1,
        "prediction_name": ">50K",
        "confidence": 0.75,
        "shown_weight": 0.3,
        "prototypes": [
            {"train_row": 1, "weight": 0.2, "label": 1, "label_name": ">50K"},
            {"train_row": 0, "weight": 0.1, "label": 0, "label_name": "<=50K"},
        ],
    }
    lines = explain.render_text([item], raw, "adult").splitlines()
    assert "carry 30.0 % of the attention weight" in lines[0]
    header = lines[2].split(" | ")
    assert header[1:4] == ["weight", "label", "age"] and lines[2].endswith("native-country |")
    assert lines[4].startswith("| test row 0 |  | <=50K | 1 | x |")
    assert lines[5].startswith("| train row 1 | 0.200 | >50K | 3 | b |")
    assert lines[6].startswith("| train row 0 | 0.100 | <=50K | 2 | a |")
    assert len(lines[5].split(" | ")) == len(header)


def test_explain_command_writes_per_model_and_leaves_no_temporary_export(tmp_path):
    import os
    import subprocess
    import sys

    from data_files import write_adult

    config = ExperimentConfig(
        dataset="adult",
        attention="sparsemax",
        data_dir=write_adult(str(tmp_path / "adult")),
        model_dir=str(tmp_path / "run"),
        train_steps=2,
        batch_size=8,
        train_database_size=16,
        infer_database_size=30,
        validation_fraction=0.0,
        value_size=8,
        lstm_embedding_size=8,
    )
    Trainer(config, verbose=False).train()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(repo, "run", "explain.py"),
            f"--model_dir={config.model_dir}",
            "--examples=0,1",
            "--scan=60",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TMPDIR=str(temporary)),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.listdir(temporary) == []
    folder = tmp_path / "run" / "explanations"
    table = (folder / "prototypes.md").read_text()
    assert "| weight | label | age |" in table and "of the attention weight" in table
    import json

    saved = json.loads((folder / "explanations.json").read_text())
    assert set(saved["examples"][0]) >= {"test_row", "label_name", "prediction_name", "shown_weight", "prototypes"}
    assert set(saved["examples"][0]["prototypes"][0]) == {"train_row", "weight", "label", "label_name"}
