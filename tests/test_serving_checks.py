"""The exported model answers impossible requests with InvalidArgument naming the
input, never with a confident number; versions are published atomically; TF
Serving's own loading path (a TF1 session over the `serve` MetaGraph) and its REST
row format give the same answers."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from export_checks import assert_same, raw_test_inputs, session_call, train_and_export

from proto_tf.errors import ConfigError, DataError
from proto_tf.serving import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("serving")
    trainer, path, data_dir = train_and_export(tmp_path, "adult")
    raw, _ = raw_test_inputs("adult", trainer, data_dir, count=4)
    loaded = tf.saved_model.load(path)
    return trainer, path, raw, loaded, tmp_path


def _feed(raw, **changes):
    feed = {name: tf.constant(value) for name, value in raw.items()}
    feed.update({name: tf.constant(value) for name, value in changes.items()})
    return feed


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("age", np.nan, "input age holds NaN or an infinity"),
        ("fnlwgt", np.inf, "input fnlwgt holds NaN or an infinity"),
        ("fnlwgt", -5.0, r"input fnlwgt holds a value outside \[1, 1e\+08\]"),
        ("capital_gain", -1.0, r"input capital_gain holds a value outside \[0, 1e\+07\]"),
        ("age", 1e38, r"input age holds a value outside \[0, 130\]"),
    ],
)
def test_impossible_numbers_are_refused_by_column(adult, column, value, message):
    _, _, raw, loaded, _ = adult
    values = raw[column].copy()
    values[1] = value
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["serving_default"](**_feed(raw, **{column: values}))


@pytest.mark.parametrize(
    "threshold, message",
    [
        ([-1.0, 0.5, 0.5, 0.5], r"confidence_threshold values must be finite and in \[0, 1\]"),
        ([1.5, 0.5, 0.5, 0.5], r"confidence_threshold values must be finite and in \[0, 1\]"),
        ([np.nan, 0.5, 0.5, 0.5], r"confidence_threshold values must be finite and in \[0, 1\]"),
        ([0.5], r"confidence_threshold needs one value per instance \(no broadcasting\)"),
    ],
)
def test_bad_confidence_thresholds_are_refused(adult, threshold, message):
    _, _, raw, loaded, _ = adult
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["abstain"](**_feed(raw), confidence_threshold=tf.constant(threshold, tf.float32))
    # A scalar is not broadcast either.
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        loaded.signatures["abstain"](**_feed(raw), confidence_threshold=tf.constant(0.5))


def test_columns_of_different_lengths_are_named(adult):
    _, _, raw, loaded, _ = adult
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="input sex has another number of instances than input age"
    ):
        loaded.signatures["serving_default"](**_feed(raw, sex=raw["sex"][:2]))


def test_class_names_are_returned_and_empty_where_abstained(adult):
    _, _, raw, loaded, _ = adult
    out = loaded.signatures["abstain"](**_feed(raw), confidence_threshold=tf.constant([0.0, 1.0, 0.0, 1.0], tf.float32))
    names = np.array(["<=50K", ">50K"])
    ids = out["class_ids"].numpy()
    got = out["class_names"].numpy().astype(str)
    assert list(got[[1, 3]]) == ["", ""] and (ids[[1, 3]] == -1).all()  # Confidence < 1.
    assert list(got[[0, 2]]) == list(names[ids[[0, 2]]])
    np.testing.assert_array_equal(
        out["prototype_label_names"].numpy().astype(str), names[out["prototype_labels"].numpy()]
    )


def test_a_database_of_one_class_decides_that_class_with_full_confidence(adult):
    trainer, _, raw, _, tmp_path = adult
    # Rows of one label whose own value the decision layer gives that label: any convex
    # combination of them (the bias-free decision is linear, two classes) gets it too.
    from proto_tf.data import adult as adult_data

    data_file = os.path.join(trainer.config.data_dir, "adult.data")
    columns, labels = adult_data.read_adult_csv(data_file)
    model = trainer.model
    plain = np.argmax(model.decision(model.encode(adult_data.featurize(columns))[2]).numpy(), -1)
    label = 1 if ((labels == 1) & (plain == 1)).any() else 0
    with open(data_file) as handle:
        lines = [line for line in handle if line.strip()]
    chosen = [line for line, y, p in zip(lines, labels, plain) if y == label and p == label]
    database = tmp_path / "one_class.csv"
    database.write_text("".join(chosen))
    path = export.export_model_dir(
        trainer.config.model_dir,
        str(tmp_path / "one_class_exports"),
        checkpoint="last",
        database_path=str(database),
    )
    out = tf.saved_model.load(path).signatures["serving_default"](**_feed(raw))
    assert (out["class_ids"].numpy() == label).all()
    np.testing.assert_allclose(out["confidence"].numpy(), 1.0, rtol=1e-6)  # float32 sums.
    assert set(out["class_names"].numpy().astype(str)) == {["<=50K", ">50K"][label]}
    indices = out["prototype_indices"].numpy()
    assert indices.min() >= 0 and indices.max() < len(chosen)  # Rows of the database file.
    with pytest.raises(DataError, match="--database=.*no such file"):
        export.export_model_dir(
            trainer.config.model_dir,
            str(tmp_path / "x"),
            checkpoint="last",
            database_path=str(tmp_path / "missing.csv"),
        )


def test_unknown_category_strings_are_counted(adult):
    _, _, raw, loaded, _ = adult
    # Test rows cycle through data_files.ADULT_ROWS: the third has '?' in three columns.
    out = loaded.signatures["serving_default"](**_feed(raw))
    np.testing.assert_array_equal(out["unknown_categories"].numpy(), [0, 0, 3, 0])
    sex = raw["sex"].copy()
    sex[0] = "Martian"
    out = loaded.signatures["serving_default"](**_feed(raw, sex=sex))
    np.testing.assert_array_equal(out["unknown_categories"].numpy(), [1, 0, 3, 0])


def test_request_size_limit_and_export_flags(adult):
    trainer, _, raw, _, tmp_path = adult
    path = export.export_model_dir(
        trainer.config.model_dir, str(tmp_path / "limited"), checkpoint="last", max_batch_size=3
    )
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert serve(**_feed({k: v[:3] for k, v in raw.items()}))["class_ids"].shape == (3,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="too many instances: this export answers at most 3"):
        serve(**_feed(raw))
    for flags, message in (
        (dict(top_k=-1), "--top_k=-1 must be a positive integer"),
        (dict(infer_database_size=0), "--infer_database_size=0 must be a positive integer"),
        (dict(infer_database_size=10**6), "--infer_database_size=1000000 exceeds the 200 training"),
    ):
        with pytest.raises(ConfigError, match=message):
            export.export_model_dir(trainer.config.model_dir, str(tmp_path / "bad"), checkpoint="last", **flags)


def _write_marker(path):
    with open(os.path.join(path, "saved_model.pb"), "w") as handle:
        handle.write("x")


def test_versions_are_published_atomically_and_uniquely(tmp_path):
    base = tmp_path / "exports" / "m"

    def failing(path):
        _write_marker(path)
        raise KeyboardInterrupt  # Killed midway.

    with pytest.raises(KeyboardInterrupt):
        export.publish_version(failing, str(tmp_path / "exports"), "m")
    assert os.listdir(base) == []  # Nothing half-written is left.

    def first(path):
        _write_marker(path)
        # A second export starts and finishes while the first one is still writing.
        inner.append(export.publish_version(_write_marker, str(tmp_path / "exports"), "m"))

    inner = []
    outer = export.publish_version(first, str(tmp_path / "exports"), "m")
    assert inner == [str(base / "1")] and outer == str(base / "2")
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert all(os.listdir(base / name) == ["saved_model.pb"] for name in ("1", "2"))


def test_tf_serving_session_path_gives_the_same_answers_and_errors(adult):
    _, path, raw, loaded, _ = adult
    expected = loaded.signatures["serving_default"](**_feed(raw))
    served = session_call(path, "serving_default", raw)
    assert set(served) == set(expected)
    for name, value in expected.items():
        assert_same(served[name], value.numpy(), name)
    bad = dict(raw, age=np.array([39.0, np.nan, 20.0, 30.0], np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input age holds NaN or an infinity"):
        session_call(path, "serving_default", bad)


def _readme_request():
    with open(os.path.join(REPO, "docs", "serving.md")) as handle:
        readme = handle.read()
    request = re.search(r"with `request.json`:\s*```json\n(.*?)```", readme, re.S).group(1)
    answer = re.search(r'```json\n(\{"predictions".*?)```', readme, re.S).group(1)
    return json.loads(request), json.loads(answer)


def test_readme_rest_request_in_row_format(adult):
    _, path, _, _, _ = adult
    request, answer = _readme_request()
    instances = request["instances"]
    # TF Serving's row format: every named input gets one value per instance.
    columns = {name: np.array([row[name] for row in instances]) for name in instances[0]}
    columns = {
        name: value.astype(np.float32) if value.dtype.kind in "fi" else value.astype(object)
        for name, value in columns.items()
    }
    served = session_call(path, request.get("signature_name", "serving_default"), columns)
    assert set(answer["predictions"][0]) == set(served)
    for name, value in served.items():
        assert len(value) == len(instances), name


def test_a_scalar_threshold_reaching_the_graph_gets_the_documented_message(adult):
    # TF Serving feeds a tensor as it was sent, so a scalar reaches the graph (Python's
    # signatures refuse it before): it was "slice index -1 of dimension 0 out of bounds".
    _, _, raw, _, _ = adult
    signature = {
        name: tf.TensorSpec([None], tf.as_dtype(value.dtype) if value.dtype.kind == "f" else tf.string)
        for name, value in raw.items()
    }
    columns = {name: tf.constant(value) for name, value in raw.items()}
    check = lambda threshold: export._checked_threshold(threshold, columns, signature)  # noqa: E731
    # As in the served graph: a threshold of unknown shape (also eagerly, where the
    # check is static and raises a ValueError).
    for call in (check, tf.function(check, input_signature=[tf.TensorSpec(None, tf.float32)])):
        with pytest.raises(
            (tf.errors.InvalidArgumentError, ValueError), match="confidence_threshold needs one value per instance"
        ):
            call(tf.constant(0.5))
        np.testing.assert_array_equal(call(tf.fill([4], 0.5)).numpy(), 0.5)


def test_published_versions_are_readable_by_other_users(tmp_path):
    # mkdtemp makes its folder 0700: TF Serving running as another user could not read it.
    old = os.umask(0o022)
    try:

        def write(path):
            os.makedirs(os.path.join(path, "variables"))
            with open(os.path.join(path, "variables", "variables.index"), "w") as handle:
                handle.write("x")
            _write_marker(path)

        version = export.publish_version(write, str(tmp_path / "exports"), "m")
    finally:
        os.umask(old)
    modes = {
        os.path.relpath(os.path.join(root, name), version) or ".": os.stat(os.path.join(root, name)).st_mode & 0o777
        for root, folders, files in os.walk(version)
        for name in folders + files
    }
    assert os.stat(version).st_mode & 0o777 == 0o755
    assert modes == {"variables": 0o755, "variables/variables.index": 0o644, "saved_model.pb": 0o644}


def test_an_unwritable_export_dir_is_one_line(tmp_path):
    from proto_tf.errors import ConfigError

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^cannot write to --export_dir=.*file \(Not a directory"):
        export.publish_version(_write_marker, str(tmp_path / "file"), "m")
