"""A user's own data, from files to a served prediction: --dataset=csv and
--dataset=image_folder, read in the real formats, checked against hand computations,
exported, and predicted from files; bad files give one line naming what is wrong."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from data_files import write_own_images, write_own_table

from proto_tf.analysis.evaluate_run import evaluate_model_dir
from proto_tf.data import csv_dataset, image_folder, load_dataset, tabular, text, text_csv
from proto_tf.errors import ConfigError, DataError
from proto_tf.serving import export, predict
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.trainer import Trainer

TINY = dict(
    train_steps=10,
    batch_size=16,
    train_database_size=32,
    infer_database_size=4096,
    validation_fraction=0.0,
    value_size=8,
    lstm_embedding_size=8,
    resnet_depth=8,
    dense_units=(8,),
    eval_batch_size=64,
    learning_rate=0.01,
    checkpoint_every=10,
)


def test_csv_schema_is_inferred_from_the_training_file_as_by_hand(tmp_path):
    folder = tmp_path / "table"
    folder.mkdir()
    (folder / "train.csv").write_text("a b,kind,n,label\n1,x,3,p\n2,y,,q\n4,x,NA,p\n5,?,7,q\n")
    loaded = load_dataset(
        "csv", str(folder), validation_fraction=0.0, options=csv_dataset.CsvOptions(test_fraction=0.25)
    )
    schema = loaded.info.schema
    assert [c.name for c in schema.numeric] == ["a b", "n"] and [c.name for c in schema.categorical] == ["kind"]
    assert loaded.class_names == ("p", "q") and loaded.info.label_column == "label"
    # Held out: one of the four rows (fixed seed); the schema comes from the other three.
    assert len(loaded.test) == 1 and len(loaded.train) == 3
    rows = np.array([[1, 3], [2, np.nan], [4, np.nan], [5, 7]], float)[loaded.train.indices]
    kinds = np.array(["x", "y", "x", "?"], object)[loaded.train.indices]
    a, n = schema.numeric
    np.testing.assert_allclose([a.offset, a.scale], [rows[:, 0].mean(), rows[:, 0].std()])
    present = rows[~np.isnan(rows[:, 1]), 1]
    assert n.missing_indicator == np.isnan(rows[:, 1]).any()
    np.testing.assert_allclose(n.offset, present.mean())
    assert schema.categorical[0].vocabulary == tuple(sorted({k for k in kinds if k != "?"}))
    # Features by hand: standardised numbers (0 where missing), indicators, one-hot blocks.
    expected = []
    for (x, m), kind in zip(rows, kinds):
        row = [(x - a.offset) / a.scale, 0.0 if np.isnan(m) else (m - n.offset) / n.scale]
        row += [float(np.isnan(m))] if n.missing_indicator else []
        row += [float(kind == v) for v in schema.categorical[0].vocabulary]
        expected.append(row)
    np.testing.assert_allclose(loaded.train.inputs, expected, rtol=1e-6, atol=1e-6)


def test_input_names_are_valid_and_unique():
    names = tabular.input_names(["Age (years)", "income $", "id-code", "3rd", "a b", "a_b", "%"])
    assert names == {
        "Age (years)": "Age_years",
        "income $": "income",
        "id-code": "id_code",
        "3rd": "c_3rd",
        "a b": "a_b",
        "a_b": "a_b_2",
        "%": "column",
    }


def _train(tmp_path, dataset, data_dir, **overrides):
    config = ExperimentConfig(
        dataset=dataset,
        attention="sparsemax",
        data_dir=data_dir,
        model_dir=str(tmp_path / f"run_{dataset}"),
        **dict(TINY, **overrides),
    )
    Trainer(config, verbose=False).train()
    return config


def loaded_schema(config):
    return load_dataset("csv", config.data_dir, validation_fraction=config.validation_fraction).info.schema.numeric


def test_csv_end_to_end_export_serves_raw_rows_and_predict_reads_by_name(tmp_path, capsys):
    data_dir = write_own_table(str(tmp_path / "table"), rows=240, test_rows=80)
    config = _train(tmp_path, "csv", data_dir)
    output = capsys.readouterr().out
    assert "--infer_database_size=4096 is above the 240 training examples: using 240." in output
    assert "train.csv: missing values (of 240 rows): colour " in output
    evaluated = evaluate_model_dir(config.model_dir, str(tmp_path / "evaluation"))
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"))
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    specs = dict(serve.structured_input_signature[1])
    assert {name: spec.dtype for name, spec in specs.items()} == {
        "Age_years": tf.float32,
        "colour": tf.string,
        "income": tf.float32,
        "id_code": tf.float32,
    }
    answer = serve(
        Age_years=tf.constant([70.0, 20.0]),
        colour=tf.constant(["red", "purple"]),
        income=tf.constant([np.nan, 40.0]),
        id_code=tf.constant([1.0, 2.0]),
    )
    assert {name.decode() for name in answer["class_names"].numpy()} <= {"yes", "no"}
    np.testing.assert_array_equal(answer["unknown_categories"].numpy(), [0, 1])  # "purple" is unknown.
    for bad in (np.inf, 1e30):  # 1e30 was answered, at confidence 0.87.
        with pytest.raises(tf.errors.InvalidArgumentError, match="input income holds an infinity or a value outside"):
            serve(
                Age_years=tf.constant([70.0]),
                colour=tf.constant(["red"]),
                income=tf.constant([bad]),
                id_code=tf.constant([1.0]),
            )
    income = next(c for c in loaded_schema(config) if c.name.startswith("income"))
    np.testing.assert_allclose(
        income.valid_range, [income.offset - 1e4 * income.scale, income.offset + 1e4 * income.scale]
    )
    # test.csv without its label column, columns in yet another order: predict gives the
    # evaluation's accuracy exactly.
    with open(os.path.join(data_dir, "test.csv")) as handle:
        rows = list(csv.DictReader(handle))
    order = ["id-code", "colour", "Age (years)", "income $"]
    with open(tmp_path / "new.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(order)
        writer.writerows([[row[name] for name in order] for row in rows])
    summary = predict.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "out.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary["inputs"] == 80
    accuracy = np.mean([r["class_name"] == row["outcome"] for r, row in zip(records, rows)])
    assert accuracy == pytest.approx(evaluated["test"]["accuracy"], abs=1e-12)
    # The export records its kind and table; an export of before that record (the table
    # in assets.extra/proto_tf_table.json) is read the same way.
    described = json.loads(open(os.path.join(path, "assets.extra", "proto_tf_data.json")).read())
    assert described["kind"] == "tabular" and described["table"]["label_column"] == "outcome"
    older = str(tmp_path / "older_export")
    shutil.copytree(path, older)
    os.remove(os.path.join(older, "assets.extra", "proto_tf_data.json"))
    with open(os.path.join(older, "assets.extra", "proto_tf_table.json"), "w") as handle:
        json.dump(described["table"], handle)
    predict.predict_file(older, str(tmp_path / "new.csv"), str(tmp_path / "older.jsonl"))
    assert (tmp_path / "older.jsonl").read_text() == (tmp_path / "out.jsonl").read_text()
    # A file with a header naming a column the model does not know is refused.
    (tmp_path / "bad.csv").write_text("Age (years),colour,income $,zip\n30,red,1,2\n")
    with pytest.raises(
        DataError, match=r"bad.csv:1: the header's columns do not match the model's \(unknown: zip; missing: id-code\)"
    ):
        predict.predict_file(path, str(tmp_path / "bad.csv"), str(tmp_path / "x.jsonl"))
    # Explanations: the prototypes' rows of train.csv, shown as the file holds them.
    from proto_tf.analysis import explain
    from proto_tf.data import raw_examples

    raw = raw_examples.load_raw("csv", data_dir, config.data_options(), config.seed)
    items = explain.explain(path, "csv", raw, [0, 1])
    assert [item["label_name"] for item in items] == [rows[0]["outcome"], rows[1]["outcome"]]
    table = explain.render_text(items[:1], raw, "csv").splitlines()
    assert table[2] == "|  | weight | label | Age (years) | colour | income $ | id-code |"
    with open(os.path.join(data_dir, "train.csv")) as handle:
        train_rows = list(csv.DictReader(handle))
    prototype = items[0]["prototypes"][0]
    source = train_rows[prototype["train_row"]]
    assert table[5].startswith(
        f"| train row {prototype['train_row']} | {prototype['weight']:.3f} | {source['outcome']} | "
        f"{float(source['Age (years)']):g} | {source['colour']} |"
    )
    # The training file is a valid --database (its label column is read by name).
    curated = export.export_model_dir(
        config.model_dir, str(tmp_path / "exports"), database_path=os.path.join(data_dir, "train.csv")
    )
    assert os.path.isfile(os.path.join(curated, "saved_model.pb"))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(label_column="target"),
            r"^--label_column='target': .*train.csv has no such column; its columns: Age \(years\), colour, income \$, id-code, outcome\.$",
        ),
        (
            dict(test_header="Age (years),colour,income,id-code,outcome"),
            r"test.csv:1: its columns differ from .*train.csv's \(missing: income \$; not in train.csv: income\)",
        ),
        (dict(empty_column=True), r"train.csv: column 2 \(colour\) is entirely missing"),
        (dict(max_categories=2), r"train.csv: column 2 \(colour\) has 3 distinct values, more than --max_categories=2"),
        (
            dict(numeric_columns=("colour",)),
            r"--numeric_columns: column 2 \(colour\) of .*train.csv holds '(red|green|blue)', not a finite number",
        ),
        (
            dict(test_label="maybe"),
            r"test.csv:2: column 1 \(outcome\): label 'maybe' is not a class of the training file; classes: no, yes\.",
        ),
    ],
)
def test_csv_mistakes_are_one_line(tmp_path, change, message):
    data_dir = write_own_table(str(tmp_path / "table"), rows=40, test_rows=10)
    train, test = os.path.join(data_dir, "train.csv"), os.path.join(data_dir, "test.csv")
    if "test_header" in change:
        lines = open(test).read().splitlines()
        open(test, "w").write("\n".join([change.pop("test_header")] + lines[1:]) + "\n")
    if change.pop("empty_column", False):
        rows = list(csv.reader(open(train)))
        with open(train, "w", newline="") as handle:
            csv.writer(handle).writerows([rows[0]] + [[r[0], "", *r[2:]] for r in rows[1:]])
    if "test_label" in change:
        rows = list(csv.reader(open(test)))
        rows[1][0] = change.pop("test_label")
        with open(test, "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    options = csv_dataset.CsvOptions(**change)
    with pytest.raises(DataError, match=message):
        load_dataset("csv", data_dir, validation_fraction=0.0, options=options)


def test_csv_unknown_categories_in_the_test_file_are_counted(tmp_path, capsys):
    data_dir = write_own_table(str(tmp_path / "table"), rows=40, test_rows=10)
    test = os.path.join(data_dir, "test.csv")
    rows = list(csv.reader(open(test)))
    colour = rows[0].index("colour")
    rows[1][colour] = rows[2][colour] = "purple"
    with open(test, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    load_dataset("csv", data_dir, validation_fraction=0.0)
    assert (
        f"warning: {test}: column 5 (colour): 2 of 10 values are not in its vocabulary (most common: "
        "'purple'); they are treated as missing values."
    ) in capsys.readouterr().out


def test_own_data_flags_are_refused_for_other_datasets():
    with pytest.raises(
        ConfigError,
        match=r"^--label_column='income' applies to --dataset=csv or text_csv, not --dataset=adult; leave it at None\.$",
    ):
        ExperimentConfig(dataset="adult", label_column="income")
    with pytest.raises(
        ConfigError, match=r"^--image_size=\(28, 28\) applies to --dataset=image_folder, not --dataset=csv"
    ):
        ExperimentConfig(dataset="csv", image_size=(28, 28))
    with pytest.raises(ConfigError, match=r"^--sequence_length=64 must be at least 256"):
        ExperimentConfig(dataset="text_csv", sequence_length=64)
    with pytest.raises(ConfigError, match=r"^--text_columns=\('a',\) applies to --dataset=text_csv"):
        ExperimentConfig(dataset="csv", text_columns=("a",))


def test_image_folder_end_to_end_with_class_names_and_encoded_images(tmp_path):
    data_dir = write_own_images(str(tmp_path / "images"), size=(12, 10))
    loaded = load_dataset("image_folder", data_dir, validation_fraction=0.0)
    assert loaded.class_names == ("cat", "dog") and loaded.info.input_shape == (12, 10, 3)
    assert loaded.info.augmentation.pad == 1
    config = _train(tmp_path, "image_folder", data_dir)
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"))
    loaded_model = tf.saved_model.load(path)
    pixels = loaded.test.inputs[:4]
    by_pixels = loaded_model.signatures["serving_default"](images=tf.constant(pixels))
    assert {n.decode() for n in by_pixels["class_names"].numpy()} <= {"cat", "dog"}
    files = sorted(os.path.join(data_dir, "test", "cat", f) for f in os.listdir(os.path.join(data_dir, "test", "cat")))
    encoded = tf.constant([open(f, "rb").read() for f in files[:4]])
    by_bytes = loaded_model.signatures["image_bytes"](image_bytes=encoded)
    np.testing.assert_allclose(by_bytes["probabilities"].numpy(), by_pixels["probabilities"].numpy(), atol=1e-6)
    evaluated = evaluate_model_dir(config.model_dir, str(tmp_path / "evaluation"))
    summary = predict.predict_file(path, os.path.join(data_dir, "test"), str(tmp_path / "out.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    truth = [os.path.basename(os.path.dirname(r["source"])) for r in records]
    assert summary["inputs"] == 24
    assert np.mean([r["class_name"] == t for r, t in zip(records, truth)]) == pytest.approx(
        evaluated["test"]["accuracy"]
    )


def test_image_folder_grey_sizes_and_mistakes(tmp_path):
    grey = write_own_images(str(tmp_path / "grey"), grey=True, test=False)
    loaded = load_dataset("image_folder", grey, validation_fraction=0.0, seed=3)
    assert loaded.info.input_shape == (12, 10, 1) and len(loaded.test) == 5 and len(loaded.train) == 19
    mixed = write_own_images(str(tmp_path / "mixed"), size=(12, 10))
    tf.io.write_file(os.path.join(mixed, "train", "dog", "big.png"), tf.io.encode_png(np.zeros((20, 20, 3), np.uint8)))
    with pytest.raises(
        DataError,
        match=r"the training images differ in size \(.*cat/0.png is 12x10, .*dog/big.png is 20x20, 2 sizes in all\): give --image_size=H,W",
    ):
        load_dataset("image_folder", mixed, validation_fraction=0.0)
    resized = load_dataset(
        "image_folder", mixed, validation_fraction=0.0, options=image_folder.ImageFolderOptions(image_size=(8, 8))
    )
    assert resized.train.inputs.shape[1:] == (8, 8, 3)
    os.makedirs(os.path.join(mixed, "test", "bird"))
    with pytest.raises(
        DataError, match=r"test: class folder bird is not in the training folder; its classes: cat, dog\."
    ):
        load_dataset(
            "image_folder", mixed, validation_fraction=0.0, options=image_folder.ImageFolderOptions(image_size=(8, 8))
        )


def test_text_csv_end_to_end_by_column_name(tmp_path):
    from data_files import write_own_documents

    data_dir = write_own_documents(str(tmp_path / "docs"))
    loaded = load_dataset(
        "text_csv", data_dir, validation_fraction=0.0, options=text_csv.TextCsvOptions(sequence_length=256)
    )
    assert loaded.class_names == ("music", "sport") and loaded.info.input_shape == (256,)
    assert loaded.info.text_columns == ("title", "body") and loaded.info.label_column == "topic"
    # The quoted newline is kept inside the text: "sport news 0 <body>\nsecond line".
    codes = text.quantize(["sport news 0"], quantizer=text.CharacterQuantizer(256))[0]
    np.testing.assert_array_equal(loaded.train.inputs[0][:12], codes[:12])
    config = _train(
        tmp_path, "text_csv", data_dir, sequence_length=256, vdcnn_first_filters=8, vdcnn_block_filters=(8,) * 8
    )
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"))
    served = tf.saved_model.load(path).signatures["serving_default"](
        texts=tf.constant(["goal team match", "song band"])
    )
    assert {n.decode() for n in served["class_names"].numpy()} <= {"music", "sport"}
    evaluated = evaluate_model_dir(config.model_dir, str(tmp_path / "evaluation"))
    with open(os.path.join(data_dir, "test.csv")) as handle:
        rows = list(csv.DictReader(handle))
    with open(tmp_path / "new.csv", "w", newline="") as handle:  # No label, other order.
        writer = csv.writer(handle)
        writer.writerow(["body", "title"])
        writer.writerows([[row["body"], row["title"]] for row in rows])
    predict.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "out.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 20
    assert np.mean([r["class_name"] == row["topic"] for r, row in zip(records, rows)]) == pytest.approx(
        evaluated["test"]["accuracy"]
    )
    # The training file is a valid --database (text and label columns read by name).
    curated = export.export_model_dir(
        config.model_dir, str(tmp_path / "exports"), database_path=os.path.join(data_dir, "train.csv")
    )
    assert os.path.isfile(os.path.join(curated, "saved_model.pb"))
    (tmp_path / "bad.csv").write_text("title,text\nx,y\n")
    with pytest.raises(
        DataError, match=r"bad.csv:1: the header lacks the text column\(s\) body; its columns: title, text\."
    ):
        predict.predict_file(path, str(tmp_path / "bad.csv"), str(tmp_path / "x.jsonl"))
    with pytest.raises(DataError, match=r"--label_column='label': .*train.csv has no such column"):
        load_dataset(
            "text_csv", data_dir, validation_fraction=0.0, options=text_csv.TextCsvOptions(label_column="label")
        )


def test_a_dataset_added_in_one_module_trains_exports_and_names_its_classes(tmp_path, monkeypatch):
    from proto_tf.data import registry

    # The module registers itself; the registry is restored for the other tests.
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    import toy_dataset

    config = _train(tmp_path, toy_dataset.INFO.name, None, infer_database_size=96)
    path = export.export_model_dir(config.model_dir, str(tmp_path / "exports"))
    served = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant(toy_dataset.load(None, False)[1].inputs[:4])
    )
    assert {name.decode() for name in served["class_names"].numpy()} <= set(toy_dataset.CLASS_NAMES)
    with pytest.raises(ValueError, match="a dataset named 'toy_brightness' exists already"):
        registry.register_dataset(toy_dataset.INFO, toy_dataset.load)


def test_numeric_labels_are_compared_as_numbers(tmp_path):
    # `1` and `1.0` were two classes ('1.0', '1', '2', '3'); docs/own_data.md says numeric
    # labels are numbers: one class each, named by the shortest spelling, in numeric order.
    folder = tmp_path / "table"
    folder.mkdir()
    (folder / "train.csv").write_text("x,label\n1,1\n2,1.0\n3,2\n4,3\n5,10\n6,2.00\n")
    (folder / "test.csv").write_text("x,label\n1,1.00\n2,3.0\n3,1e1\n")
    loaded = load_dataset("csv", str(folder), validation_fraction=0.0)
    assert loaded.class_names == ("1", "2", "3", "10")
    assert loaded.train.labels.tolist() == [0, 0, 1, 2, 3, 1]
    assert loaded.test.labels.tolist() == [0, 2, 3]
    assert csv_dataset.sorted_class_names({"b", "a", "1"}) == ("1", "a", "b")  # Not all numbers: strings.
    assert csv_dataset.sorted_class_names({"nan", "1"}) == ("1", "nan")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "train.csv").write_text("text,label\ngoal,1\nsong,1.0\nteam,2\n")
    (docs / "test.csv").write_text("text,label\nband,2.0\n")
    loaded = load_dataset("text_csv", str(docs), validation_fraction=0.0)
    assert loaded.class_names == ("1", "2") and loaded.train.labels.tolist() == [0, 0, 1]
    assert loaded.test.labels.tolist() == [1]


def test_unclear_flag_values_are_one_line_naming_the_flag(tmp_path):
    import subprocess
    import sys

    from proto_tf.cli import experiment_flags
    from proto_tf.training import config as config_lib

    # Was a ValueError traceback.
    with pytest.raises(
        ConfigError, match=r"^--image_size=a,b must be comma-separated integers, e\.g\. --image_size=28,28\.$"
    ):
        experiment_flags.config_for(["--dataset=image_folder", "--attention=sparsemax", "--image_size=a,b"])
    done = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(os.path.dirname(__file__)), "run", "train.py"),
         "--dataset=image_folder", "--attention=sparsemax", "--image_size=a,b", f"--data_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: --image_size=a,b must be comma-separated integers, e.g. --image_size=28,28."
    )
    # Was accepted: 'a' got two codes.
    with pytest.raises(ConfigError, match=r"^--alphabet='aab' must hold 1 to 255 characters, each once"):
        ExperimentConfig(dataset="text_csv", alphabet="aab")
    # Was blamed on --batch_size=0 (the batch lowered to the 0 examples left).
    config = ExperimentConfig(dataset="csv", validation_fraction=0.999)
    for check in (config_lib.fit_to_data, config_lib.check_against_data):
        with pytest.raises(
            ConfigError, match=r"^--validation_fraction=0.999 leaves no training examples of csv; lower it"
        ):
            check(config, 0)


def test_ignoring_the_label_column_is_refused(tmp_path):
    # Was accepted and silently ignored (the label stayed the label).
    data_dir = write_own_table(str(tmp_path / "table"))
    label = csv_dataset.training_table(data_dir, "csv", None)[2]
    with pytest.raises(DataError, match=rf"^--ignore_columns names '{label}', the label column of .*train.csv"):
        load_dataset("csv", data_dir, options=csv_dataset.CsvOptions(ignore_columns=(label,)))


def test_one_class_is_refused_and_skipped_images_are_said(tmp_path, capsys):
    # A one-class table was a traceback; .tiff/.webp files and empty class folders were
    # skipped without a word.
    folder = tmp_path / "table"
    folder.mkdir()
    (folder / "train.csv").write_text("x,label\n1,a\n2,a\n3,a\n")
    with pytest.raises(
        DataError,
        match=r"train.csv: the label column 'label' holds 1 class\(es\) .*\('a'\); a classifier needs at least two\.",
    ):
        load_dataset("csv", str(folder), validation_fraction=0.0, options=csv_dataset.CsvOptions(test_fraction=0.34))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "train.csv").write_text("text,label\ngoal,a\nsong,a\n")
    (docs / "test.csv").write_text("text,label\nteam,a\n")
    with pytest.raises(DataError, match=r"holds 1 class\(es\)"):
        load_dataset("text_csv", str(docs), validation_fraction=0.0)
    images = write_own_images(str(tmp_path / "images"), per_class=4)
    (tmp_path / "images" / "train" / "cat" / "a.tiff").write_bytes(b"II*\x00")
    (tmp_path / "images" / "train" / "cat" / "b.webp").write_bytes(b"RIFF")
    os.makedirs(tmp_path / "images" / "train" / "bird")
    os.makedirs(tmp_path / "images" / "train" / "dog" / "puppies")
    loaded = load_dataset("image_folder", images, validation_fraction=0.0)
    assert loaded.class_names == ("cat", "dog")
    out = capsys.readouterr().out
    assert "train/dog: folder(s) puppies inside a class folder are not read" in out
    assert "train/cat: 2 file(s) of other types (.tiff, .webp) are skipped" in out
    assert "train/bird holds no images: it is not a class." in out


@pytest.mark.parametrize("value", ["inf", "1e400", "-Infinity"])  # "nan" is a missing-value token.
def test_a_non_finite_number_in_a_numeric_column_is_refused_naming_the_line(tmp_path, value):
    # Was: the column silently became categorical (the test file refused the value).
    folder = tmp_path / "table"
    folder.mkdir()
    (folder / "train.csv").write_text(f"x,colour,label\n1.5,red,a\n2,blue,b\n{value},red,a\n4,?,b\n")
    (folder / "test.csv").write_text("x,colour,label\n2,red,a\n")
    with pytest.raises(
        DataError, match=rf"train.csv:4: column 1 \(x\): '{value}' is not a finite number, in a column of numbers"
    ):
        load_dataset("csv", str(folder), validation_fraction=0.0)
    options = csv_dataset.CsvOptions(categorical_columns=("x",))
    loaded = load_dataset("csv", str(folder), validation_fraction=0.0, options=options)
    assert [c.name for c in loaded.info.schema.categorical] == ["x", "colour"]


def test_long_cells_are_read_and_empty_texts_are_counted(tmp_path, capsys):
    # A 2 MB cell was reported as a quoting error; empty texts trained without a word.
    docs = tmp_path / "docs"
    docs.mkdir()
    long_text = "goal " * 400_000
    (docs / "train.csv").write_text(f'text,label\n"{long_text}",a\n,a\nsong,b\nband,b\n')
    (docs / "test.csv").write_text("text,label\nteam,a\n")
    loaded = load_dataset("text_csv", str(docs), validation_fraction=0.0)
    assert len(loaded.train) == 4
    assert (
        "train.csv: 1 of 4 rows have an empty text (text); they are read as empty documents." in capsys.readouterr().out
    )
    (docs / "test.csv").write_text("text,label\n,a\n")
    with pytest.raises(DataError, match=r"test.csv: every text \(text\) is empty"):
        load_dataset("text_csv", str(docs), validation_fraction=0.0)
