"""Exported SavedModels: same outputs as the in-memory model when loaded without
proto_tf, graph contents TF Serving can run, and clear errors for bad requests."""

import dataclasses
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from export_checks import TINY, assert_same, raw_test_inputs, session_call, train_and_export

from proto_tf import ProtoAttend
from proto_tf.errors import ConfigError
from proto_tf.serving import export, sharding, warmup

LOADER = r"""
import sys
import keras
import numpy as np
import tensorflow as tf
path, inputs_file, outputs_file, signature = sys.argv[1:5]
loaded = tf.saved_model.load(path)
raw = dict(np.load(inputs_file))
feed = {k: tf.constant(v.astype(object) if v.dtype.kind == "U" else v) for k, v in raw.items()}
feed = {k: tf.cast(v, tf.string) if v.dtype == tf.string else v for k, v in feed.items()}
outputs = loaded.signatures[signature](**feed)
np.savez(outputs_file, **{k: v.numpy().astype(str) if v.dtype == tf.string else v.numpy()
                          for k, v in outputs.items()})
assert not any(name.startswith("proto_tf") for name in sys.modules), "proto_tf was imported"
"""


def _expected(trainer, stored_inputs, top_k=5):
    model = trainer.model
    out = model(trainer.dataset.preprocess(stored_inputs), training=False)
    top = tf.math.top_k(out["weights"], k=top_k)
    return {
        "class_ids": np.argmax(out["logits"].numpy(), -1),
        "probabilities": tf.nn.softmax(out["logits"]).numpy(),
        "confidence": out["confidence"].numpy(),
        "prototype_weights": top.values.numpy(),
        "prototype_indices": tf.gather(model.database.indices, top.indices).numpy(),
    }


def _rows_variables(path, rows):
    """How many variables of the SavedModel at `path` have `rows` rows."""
    listed = tf.train.list_variables(os.path.join(path, "variables", "variables"))
    return sum(1 for _, shape in listed if shape and shape[0] == rows)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "dbpedia", "adult"])  # One per worker.
def test_exports_match_the_in_memory_model_in_a_process_without_proto_tf(tmp_path, dataset):
    trainer, path, data_dir = train_and_export(tmp_path, dataset)
    assert path == str(tmp_path / "exports" / f"{dataset}_sparsemax" / "1")
    # The database is stored once: its keys, values, labels and indices (it was twice:
    # an export layer's copy and the model's own variables).
    assert _rows_variables(path, TINY["infer_database_size"]) == 4, dataset
    raw, stored = raw_test_inputs(dataset, trainer, data_dir)
    np.savez(tmp_path / "inputs.npz", **raw)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOADER,
            path,
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "outputs.npz"),
            "serving_default",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=""),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(tmp_path / "outputs.npz"))
    # TF Serving's loading path (a TF1 session over the serve MetaGraph) agrees.
    session = session_call(path, "serving_default", raw)
    assert set(session) == set(served), dataset
    for key, value in served.items():
        assert_same(session[key], value, f"{dataset} {key}")
    names = trainer.dataset.class_names
    assert list(served["class_names"]) == [names[i] for i in served["class_ids"]], dataset
    assert [list(row) for row in served["prototype_label_names"]] == [
        [names[i] for i in row] for row in served["prototype_labels"]
    ], dataset
    # TF Serving's warm-up requests: the first test examples, which its loading path answers.
    if warmup.serving_protos_available():
        requests = warmup.read_warmup_requests(path)
        assert [len(next(iter(r.values()))) for r in requests] == [1, min(8, len(trainer.dataset.test))]
        expected_request, _ = raw_test_inputs(dataset, trainer, data_dir, count=8)
        for name, value in requests[1].items():
            got = np.char.decode(value.astype(bytes)) if value.dtype.kind in "OS" else value
            np.testing.assert_array_equal(got, expected_request[name], err_msg=f"{dataset} {name}")
        answered = session_call(path, "serving_default", requests[1])
        np.testing.assert_array_equal(answered["class_ids"][:6], served["class_ids"], err_msg=dataset)
    # The in-memory model attends over the same database as the export.
    trainer.evaluator.set_database(trainer.inference_split)
    expected = _expected(trainer, stored)
    np.testing.assert_array_equal(served["class_ids"], expected["class_ids"], err_msg=dataset)
    for key in ("probabilities", "confidence", "prototype_weights"):
        np.testing.assert_allclose(served[key], expected[key], atol=1e-5, err_msg=f"{dataset} {key}")
    # Ties in weights may order equal-weight prototypes differently: compare as sets.
    for served_row, expected_row, weights in zip(
        served["prototype_indices"], expected["prototype_indices"], expected["prototype_weights"]
    ):
        positive = weights > 0
        assert set(served_row[positive]) == set(expected_row[positive]), dataset


@pytest.fixture(scope="module")
def adult_export(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("adult_export")
    trainer, path, data_dir = train_and_export(tmp_path, "adult")
    return trainer, path, data_dir, tmp_path


def test_graph_has_no_python_ops_and_cli_lists_the_signature(adult_export):
    _, path, _, _ = adult_export
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    ops = set()
    for graph in saved_model.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    assert ops and not {op for op in ops if "PyFunc" in op}
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in (
        "serving_default",
        "abstain",
        "tensorflow/serving/predict",
        "hours_per_week",
        "native_country",
        "class_ids",
        "confidence",
        "prototype_indices",
        "prototype_weights",
        "prototype_labels",
        "probabilities",
        "confidence_threshold",
    ):
        assert name in shown.stdout, name


def test_outputs_are_consistent_and_abstain_follows_the_threshold(adult_export):
    trainer, path, data_dir, _ = adult_export
    loaded = tf.saved_model.load(path)
    raw, _ = raw_test_inputs("adult", trainer, data_dir, count=20)
    feed = {k: tf.constant(v) for k, v in raw.items()}
    out = loaded.signatures["serving_default"](**feed)
    weights = out["prototype_weights"].numpy()
    assert (weights >= 0).all() and (weights.sum(-1) <= 1 + 1e-5).all()
    confidence = out["confidence"].numpy()
    assert ((confidence >= 0) & (confidence <= 1 + 1e-6)).all()
    train = trainer.dataset.train
    labels_by_index = dict(zip(train.indices, train.labels))
    for indices, labels in zip(out["prototype_indices"].numpy(), out["prototype_labels"].numpy()):
        assert [labels_by_index[i] for i in indices] == list(labels)
    threshold = np.full([20], np.median(confidence), np.float32)
    abstaining = loaded.signatures["abstain"](**feed, confidence_threshold=tf.constant(threshold))
    abstained = abstaining["abstained"].numpy()
    np.testing.assert_array_equal(abstained, confidence < threshold)
    np.testing.assert_array_equal(abstaining["class_ids"].numpy(), np.where(abstained, -1, out["class_ids"].numpy()))


def test_bad_requests_get_clear_errors_and_text_is_always_answered(tmp_path, adult_export):
    trainer, path, data_dir, _ = adult_export
    serve = tf.saved_model.load(path).signatures["serving_default"]
    raw, _ = raw_test_inputs("adult", trainer, data_dir, count=2)
    feed = {k: tf.constant(v) for k, v in raw.items()}
    with pytest.raises(TypeError, match="native_country"):
        serve(**{k: v for k, v in feed.items() if k != "native_country"})
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serve(**dict(feed, age=tf.constant(["old", "young"])))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        serve(**{k: v[:0] for k, v in feed.items()})

    mnist_trainer, mnist_path, _ = train_and_export(tmp_path, "mnist", attention="softmax")
    images = tf.saved_model.load(mnist_path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[2,32,32,1\].*\[\?,28,28,1\]"):
        images(images=tf.zeros([2, 32, 32, 1], tf.uint8))
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError), match="uint8"):
        images(images=tf.zeros([2, 28, 28, 1], tf.float32))
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError), match="28"):
        images(images=tf.zeros([28, 28, 1], tf.uint8))
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError), match="empty batch"):
        images(images=tf.zeros([0, 28, 28, 1], tf.uint8))

    _, text_path, _ = train_and_export(tmp_path, "dbpedia", attention="softmax")
    texts = tf.saved_model.load(text_path).signatures["serving_default"]
    odd = tf.constant(["caf\u00e9 \u65e5\u672c \U0001f600", "x" * 100_000, "", b"\xff\xfe invalid utf-8"])
    out = texts(texts=odd)
    assert out["class_ids"].shape == (4,) and np.isfinite(out["probabilities"].numpy()).all()
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError), match=r"\[\?\]"):
        texts(texts=tf.constant([["two", "dims"]]))


def test_versions_increase_and_baseline_exports(tmp_path):
    trainer, first, _ = train_and_export(tmp_path, "adult", attention="none")
    second = export.export_model_dir(trainer.config.model_dir, str(tmp_path / "exports"), checkpoint="last")
    assert first.endswith(os.path.join("adult_baseline", "1")) or first.endswith("1")
    assert second.endswith("2")
    outputs = tf.saved_model.load(second).signatures["serving_default"].structured_outputs
    assert set(outputs) == {"class_ids", "class_names", "probabilities", "unknown_categories"}


def test_memory_estimate_and_description_by_hand(tmp_path):
    model = ProtoAttend(keras.layers.Dense(3), 2, "softmax", attention_size=4, value_size=5)
    model.build((None, 2))
    model.set_database(np.zeros((10, 4), "float32"), np.zeros((10, 5), "float32"), np.arange(10) % 2)
    estimate = warmup.memory_estimate(model, model.database, max_batch_size=6, stream_above=100, block_size=4)
    weights = 4 * sum(int(np.prod(v.shape)) for v in model.weights)
    # keys 10x4 and values 10x5 float32, labels int32, indices int64; dense [6, 10] logits and weights.
    assert estimate == {"weights": weights, "database": 160 + 200 + 40 + 80, "per_request": 2 * 4 * 6 * 10}
    streamed = warmup.memory_estimate(model, model.database, max_batch_size=6, stream_above=5, block_size=4)
    assert streamed["per_request"] == 2 * 4 * 6 * 4  # Blocks of 4 rows.
    # Streamed, a database smaller than a block is one block of its own size (was told
    # 4096 MB per request for 4,096 prototypes streamed in blocks of 65,536).
    small_database = warmup.memory_estimate(model, model.database, max_batch_size=6, stream_above=5, block_size=64)
    assert small_database["per_request"] == 2 * 4 * 6 * 10
    (tmp_path / "saved_model.pb").write_bytes(b"x" * 2**20)
    line = warmup.describe(str(tmp_path), estimate, 10, 6, None)
    assert line.startswith("The export is 1.0 MB on disk; expected memory when served: about 0.0 MB")
    assert "a database of 10 prototypes), plus 0.0 MB per request of 6 instances." in line
    assert line.endswith("No TF Serving warm-up requests (they need `pip install --no-deps tensorflow-serving-api`).")


def test_a_runs_shards_exported_by_flag_merge_to_its_whole_export(adult_export):
    # run/export.py --shard=I/N: each export holds its part of the run's database (with
    # the whole's prototype indices) and serves `shard_answer`; merged, the whole export.
    trainer, path, data_dir, tmp_path = adult_export
    model_dir = trainer.config.model_dir
    raw, _ = raw_test_inputs("adult", trainer, data_dir, count=8)
    feed = {k: tf.constant(v) for k, v in raw.items()}
    expected = {k: v.numpy() for k, v in tf.saved_model.load(path).signatures["serving_default"](**feed).items()}
    answers = []
    for n in range(3):
        shard_path = export.export_model_dir(
            model_dir, str(tmp_path / "shards"), f"shard{n}", checkpoint="last", shard=f"{n}/3"
        )
        loaded = tf.saved_model.load(shard_path)
        served = loaded.signatures[export.SHARD_SIGNATURE](**feed)
        answers.append(sharding.answer_from_outputs({k: v.numpy() for k, v in served.items()}, f"shard {n}"))
    merged = sharding.merge_answers(answers, trainer.config.attention, trainer.model.num_classes)
    np.testing.assert_allclose(tf.nn.softmax(merged["logits"]).numpy(), expected["probabilities"], atol=1e-5)
    np.testing.assert_allclose(merged["confidence"], expected["confidence"], atol=1e-5)
    np.testing.assert_allclose(merged["prototype_weights"], expected["prototype_weights"], atol=1e-5)
    shown = expected["prototype_weights"] > 1e-4
    np.testing.assert_array_equal(merged["prototype_indices"][shown], expected["prototype_indices"][shown])
    with pytest.raises(ConfigError, match=r"--shard=0/100000: a database of \d+ prototypes cannot make 100000"):
        export.export_model_dir(model_dir, str(tmp_path / "shards"), "too_many", checkpoint="last", shard="0/100000")


@pytest.mark.parametrize("full", ["python", "tensorflow"])
def test_a_full_disk_while_exporting_is_one_line_and_publishes_nothing(tmp_path, full):
    import errno

    from proto_tf.errors import RunDirectoryError

    def write(path):
        with open(os.path.join(path, "saved_model.pb"), "w") as handle:
            handle.write("partial")
        if full == "python":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise tf.errors.ResourceExhaustedError(None, None, "write failed: No space left on device")

    os.makedirs(tmp_path / "exports" / "m" / "1")
    with pytest.raises(RunDirectoryError, match=r"^could not write the export to .*m \(no space left on the device\)"):
        export.publish_version(write, str(tmp_path / "exports"), "m")
    assert os.listdir(tmp_path / "exports" / "m") == ["1"]  # No half version, no hidden folder.


def test_export_options_are_checked_data_and_signatures_are_named_by_the_registry():
    from proto_tf.serving.options import ExportOptions
    from proto_tf.serving.signatures import SIGNATURES

    options = ExportOptions()
    assert (options.top_k, options.max_batch_size, options.stream_above, options.shard_entries) == (
        5,
        8192,
        32768,
        None,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.top_k = 3
    assert options.replace(top_k=3, shard_entries=None) == ExportOptions(top_k=3)
    for fields, message in (
        (dict(top_k=0), "--top_k=0 must be a positive integer."),
        (dict(max_batch_size=True), "--max_batch_size=True must be a positive integer."),
        (dict(shard_entries=-2), "--shard_entries=-2 must be a positive integer."),
        (dict(key_dtype="float64"), "--database_key_dtype='float64' must be one of float32, float16, bfloat16."),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            ExportOptions(**fields)
    keys = {signature.name: (signature.key(""), signature.key("image_bytes")) for signature in SIGNATURES}
    assert keys == {
        "serving_default": ("serving_default", "image_bytes"),
        "abstain": ("abstain", "abstain_image_bytes"),
        "abstain_calibrated": ("abstain_calibrated", "abstain_calibrated_image_bytes"),
        "shard_answer": ("shard_answer", "shard_answer_image_bytes"),
    }
