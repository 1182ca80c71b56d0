"""Predictions for a user's new inputs from an export: JSON Lines that agree with the
evaluation of the same model, and clear errors for unreadable inputs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from data_files import write_mnist

from proto_tf.analysis.evaluate_run import evaluate_model_dir
from proto_tf.data import images
from proto_tf.errors import ConfigError, DataError
from proto_tf.serving import export, predict
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    train_steps=3,
    batch_size=16,
    train_database_size=32,
    infer_database_size=256,
    validation_fraction=0.0,
    value_size=8,
    lstm_embedding_size=8,
    resnet_depth=8,
    dense_units=(8,),
    eval_batch_size=512,
    learning_rate=0.01,
)


def test_predict_on_the_real_adult_test_file_gives_the_evaluation_accuracy(tmp_path):
    config = ExperimentConfig(
        dataset="adult",
        attention="sparsemax",
        model_dir=str(tmp_path / "run"),
        data_dir=os.path.join(REPO, "data", "adult"),
        **TINY,
    )
    Trainer(config, verbose=False).train()
    evaluated = evaluate_model_dir(config.model_dir, str(tmp_path / "evaluation"), "last")
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"), checkpoint="last")
    # adult.test without its labels (the header line and the trailing income column go).
    labels, unlabelled = [], []
    with open(os.path.join(REPO, "data", "adult", "adult.test")) as handle:
        for line in handle:
            fields = line.rstrip("\n").split(", ")
            if len(fields) == 15:
                labels.append(fields[-1].rstrip("."))
                unlabelled.append(", ".join(fields[:-1]))
    (tmp_path / "new.csv").write_text("\n".join(unlabelled) + "\n")
    summary = predict.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "out.jsonl"), batch_size=4096)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary["inputs"] == len(records) == len(labels) == 16281
    assert sum(summary["per_class"].values()) == 16281 and summary["abstained_share"] == 0
    accuracy = np.mean([r["class_name"] == label for r, label in zip(records, labels)])
    assert accuracy == pytest.approx(evaluated["test"]["accuracy"], abs=1e-9)
    first = records[0]
    assert first["source"].endswith("new.csv:1") and set(first) >= {"class_id", "confidence", "prototypes"}
    assert set(first["prototypes"][0]) == {"database_row", "weight", "label", "label_name"}
    # Abstaining: every instance below a threshold of 1 that it does not reach.
    summary = predict.predict_file(
        path, str(tmp_path / "new.csv"), str(tmp_path / "abstain.jsonl"), confidence_threshold=1.0, batch_size=8192
    )
    abstaining = [json.loads(line) for line in (tmp_path / "abstain.jsonl").read_text().splitlines()]
    share = np.mean([r["confidence"] < 1.0 for r in records])
    assert summary["abstained_share"] == pytest.approx(share)
    assert all((r["class_id"] == -1) == r["abstained"] for r in abstaining)
    with pytest.raises(ConfigError, match=r"--confidence_threshold=1.5 must be in \[0, 1\]"):
        predict.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "x.jsonl"), 1.5)
    (tmp_path / "bad.csv").write_text(unlabelled[0] + "\n" + ", ".join(["nan"] + unlabelled[1].split(", ")[1:]) + "\n")
    with pytest.raises(DataError, match=r"bad.csv:2: column 1 \(age\): 'nan' is not a number"):
        predict.predict_file(path, str(tmp_path / "bad.csv"), str(tmp_path / "x.jsonl"))


def test_predict_on_an_image_folder_resizes_and_names_unreadable_files(tmp_path):
    data_dir = str(tmp_path / "mnist")
    write_mnist(data_dir, train=80, test=16)
    config = ExperimentConfig(
        dataset="mnist",
        attention="softmax",
        data_dir=data_dir,
        model_dir=str(tmp_path / "run"),
        **dict(TINY, infer_database_size=40),
    )
    Trainer(config, verbose=False).train()
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"), checkpoint="last")
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    tf.io.write_file(str(folder / "a.png"), tf.io.encode_png(rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)))
    tf.io.write_file(str(folder / "b.png"), tf.io.encode_png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    summary = predict.predict_file(path, str(folder), str(tmp_path / "out.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary["inputs"] == 2 and [os.path.basename(r["source"]) for r in records] == ["a.png", "b.png"]
    # The 28x28 grayscale image is predicted as the export predicts it directly.
    image = tf.io.decode_png(tf.io.read_file(str(folder / "a.png")))[None]
    loaded = tf.saved_model.load(path)
    direct = loaded.signatures["serving_default"](images=image)
    assert records[0]["class_id"] == int(direct["class_ids"][0])
    np.testing.assert_allclose(records[0]["probabilities"], direct["probabilities"][0].numpy(), atol=1e-6)
    # The same images as encoded bytes (TF Serving's {"b64": ...} convention): decoded and
    # resized in the graph, answered as the pixels are.
    encoded = tf.constant([tf.io.read_file(str(folder / name)).numpy() for name in ("a.png", "b.png")])
    from_bytes = loaded.signatures["image_bytes"](image_bytes=encoded)
    pixels = np.stack([images.read_image(str(folder / "a.png"), 28), images.read_image(str(folder / "b.png"), 28)])
    gray = tf.cast(tf.round(tf.image.rgb_to_grayscale(pixels)), tf.uint8)
    from_pixels = loaded.signatures["serving_default"](images=gray)
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(), from_pixels["probabilities"].numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["image_bytes"](image_bytes=tf.constant([b"not an image"]))
    (folder / "c.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"c.png: not a readable PNG, JPEG, GIF or BMP image"):
        predict.predict_file(path, str(folder), str(tmp_path / "out.jsonl"))


def test_text_inputs_one_document_per_line_or_dbpedia_csv(tmp_path):
    specs = {"texts": tf.TensorSpec([None], tf.string)}
    (tmp_path / "docs.txt").write_text("first document\n\nsecond, with a comma\n")
    batches = list(predict.read_inputs(str(tmp_path / "docs.txt"), specs, batch_size=1))
    assert [list(raw["texts"]) for raw, _ in batches] == [["first document"], ["second, with a comma"]]
    assert [sources for _, sources in batches] == [[f"{tmp_path / 'docs.txt'}:1"], [f"{tmp_path / 'docs.txt'}:3"]]
    (tmp_path / "new.csv").write_text('3,"Title","Some content"\n')
    raw, sources = next(predict.read_inputs(str(tmp_path / "new.csv"), specs, batch_size=8))
    assert list(raw["texts"]) == ["Title Some content"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt: no documents found"):
        next(predict.read_inputs(str(tmp_path / "empty.txt"), specs, batch_size=8))


def test_readme_custom_export_example_runs_and_serves_without_proto_tf(tmp_path):
    import re
    import subprocess
    import sys

    with open(os.path.join(REPO, "docs", "serving.md")) as handle:
        readme = handle.read()
    blocks = {
        name: re.search(rf"\(`{name}`\):\s*```python\n(.*?)```", readme, re.S).group(1)
        for name in ("train_and_export.py", "query.py")
    }
    for name, code in blocks.items():
        (tmp_path / name).write_text(code)
    trained = subprocess.run(
        [sys.executable, "train_and_export.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    served = subprocess.run(
        [sys.executable, "query.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=""),
    )
    assert served.returncode == 0, served.stderr[-3000:]
    assert served.stdout.strip().splitlines()[-1].startswith("[b'first'] [")


@pytest.fixture(scope="module")
def adult_export(tmp_path_factory):
    """A tiny Adult run and its export, with adult.test's rows as a CSV of new people."""
    from data_files import write_adult

    folder = tmp_path_factory.mktemp("adult_predict")
    data_dir = write_adult(str(folder / "data"), train_rows=200, test_rows=300)
    config = ExperimentConfig(
        dataset="adult",
        attention="sparsemax",
        model_dir=str(folder / "run"),
        data_dir=data_dir,
        **dict(TINY, infer_database_size=64),
    )
    Trainer(config, verbose=False).train()
    path = export.export_model_dir(config.model_dir, str(folder / "exports"), checkpoint="last")
    lines = [line.rstrip(".") for line in open(os.path.join(data_dir, "adult.test")).read().splitlines()[1:]]
    return path, config.model_dir, lines


def _predictions(path):
    return [json.loads(line) for line in open(path).read().splitlines()]


def test_a_header_is_read_by_name_in_any_column_order(tmp_path, adult_export):
    from proto_tf.data import adult

    path, _, lines = adult_export
    rows = [[field.strip() for field in line.split(",")] for line in lines]
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(", ".join(row[:14]) for row in rows) + "\n")
    predict.predict_file(path, str(plain), str(tmp_path / "plain.jsonl"))
    # The same rows under a header that lists the columns (and the income) in reverse
    # order, with `_` for `-`: every prediction must be the same.
    names = [name.replace("-", "_") for name in adult.COLUMNS] + ["income"]
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text(",".join(reversed(names)) + "\n" + "\n".join(",".join(reversed(row)) for row in rows) + "\n")
    predict.predict_file(path, str(shuffled), str(tmp_path / "shuffled.jsonl"))
    expected, got = _predictions(tmp_path / "plain.jsonl"), _predictions(tmp_path / "shuffled.jsonl")
    assert len(got) == len(expected) == 300
    for a, b in zip(expected, got):
        assert (a["class_id"], a["probabilities"], a["prototypes"]) == (
            b["class_id"],
            b["probabilities"],
            b["prototypes"],
        )
    # A header with an unknown and a missing column names both.
    bad = tmp_path / "bad_header.csv"
    bad.write_text(",".join(names[:-2] + ["country"]) + "\n" + "\n".join(",".join(row[:14]) for row in rows[:3]) + "\n")
    with pytest.raises(
        DataError,
        match=r"bad_header.csv:1: the header's columns do not match the model's "
        r"\(unknown: country; missing: native-country\)",
    ):
        predict.predict_file(path, str(bad), str(tmp_path / "x.jsonl"))


def test_a_failing_run_leaves_an_existing_output_as_it_was(tmp_path, adult_export):
    path, _, lines = adult_export
    output = tmp_path / "out.jsonl"
    output.write_text("earlier predictions\n")
    bad = tmp_path / "bad.csv"
    # 299 good rows, then a bad one: nothing may be written over the earlier output.
    bad.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:299]) + "\nnot, a, row\n")
    with pytest.raises(DataError, match=r"bad.csv:300: expected 14 comma-separated fields"):
        predict.predict_file(path, str(bad), str(output), batch_size=64)
    with pytest.raises(DataError, match="missing.csv: no such file"):
        predict.predict_file(path, str(tmp_path / "missing.csv"), str(output))
    assert output.read_text() == "earlier predictions\n"
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "out.jsonl"]  # No temporary file left.
    # The input as its own output is refused before anything is written.
    good = tmp_path / "good.csv"
    good.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:5]) + "\n")
    content = good.read_bytes()
    with pytest.raises(ConfigError, match=r"--output=.*good.csv is the --inputs file"):
        predict.predict_file(path, str(good), str(good))
    assert good.read_bytes() == content
    with pytest.raises(ConfigError, match=r"--output=.* is a folder"):
        predict.predict_file(path, str(good), str(tmp_path))
    with pytest.raises(ConfigError, match=r"the folder .*nowhere does not exist"):
        predict.predict_file(path, str(good), str(tmp_path / "nowhere" / "out.jsonl"))


def test_saved_model_flag_names_what_was_given_instead(tmp_path, adult_export):
    path, model_dir, lines = adult_export
    good = tmp_path / "good.csv"
    good.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:5]) + "\n")
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(ConfigError, match=r"is a training run \(it holds config.json\); give it as --model_dir="):
        predict.predict_file(model_dir, str(good), out)
    with pytest.raises(ConfigError, match=r"holds versions 1; give one version folder, e.g. --saved_model=.*/1\."):
        predict.predict_file(os.path.dirname(path), str(good), out)
    with pytest.raises(ConfigError, match=r"is not a SavedModel folder"):
        predict.predict_file(str(tmp_path), str(good), out)


def test_batch_size_above_the_export_limit_names_the_flag(tmp_path, adult_export):
    _, model_dir, lines = adult_export
    path = export.export_model_dir(model_dir, str(tmp_path / "exports"), checkpoint="last", max_batch_size=8)
    (tmp_path / "new.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:20]) + "\n")
    with pytest.raises(
        ConfigError,
        match=r"^--batch_size=16 is above the 8 inputs this export answers per call; lower --batch_size to <= 8\.$",
    ):
        predict.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "out.jsonl"), batch_size=16)
    assert (
        predict.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "out.jsonl"), batch_size=8)["inputs"] == 20
    )


def test_a_full_disk_while_writing_predictions_is_one_line(tmp_path, adult_export, monkeypatch):
    import errno

    path, _, lines = adult_export
    (tmp_path / "new.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:5]) + "\n")
    output = tmp_path / "out.jsonl"
    output.write_text("earlier predictions\n")

    def full_disk(record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predict.json, "dumps", full_disk)
    with pytest.raises(
        ConfigError,
        match=r"^--output=.*out.jsonl: could not write the predictions \(No space left on device\); an existing output is left as it was\.$",
    ):
        predict.predict_file(path, str(tmp_path / "new.csv"), str(output))
    assert output.read_text() == "earlier predictions\n"
    assert sorted(os.listdir(tmp_path)) == ["new.csv", "out.jsonl"]


def test_a_link_planted_at_the_old_temporary_name_is_never_written_through(tmp_path, adult_export):
    # The temporary file had a predictable name (.<output>.tmp-<pid>): a link planted
    # there made a run overwrite the file it pointed to, and the output a link to it.
    path, _, lines = adult_export
    (tmp_path / "new.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:5]) + "\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    os.symlink(victim, tmp_path / f".out.jsonl.tmp-{os.getpid()}")
    predict.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "out.jsonl"))
    assert victim.read_text() == "not yours\n"
    assert not os.path.islink(tmp_path / "out.jsonl")
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
