"""A database split in 4 shards and merged gives the unsharded answer: against a
ProtoAttend over the whole database (float32) and against float64 dense attention, for
every normalisation, with shards of unequal sizes and sparse and dense supports."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import toy_training
from references import NORMALIZATION_REFERENCES

from proto_tf import ProtoAttend, normalizations
from proto_tf.errors import ConfigError
from proto_tf.serving import export, sharding
from proto_tf.sparsemax import sparsemax


def _sparsemax_by_bisection(logits):
    """Float64 sparsemax found by bisection on the threshold (sum max(z - tau, 0) = 1):
    another algorithm than the sorted formula of the code under test."""
    low, high = logits.max(-1, keepdims=True) - 1.0, logits.max(-1, keepdims=True)
    for _ in range(200):
        middle = (low + high) / 2
        above = np.maximum(logits - middle, 0.0).sum(-1, keepdims=True) >= 1.0
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    weights = np.maximum(logits - low, 0.0)
    return weights / weights.sum(-1, keepdims=True)


def _model(attention, rng):
    encoder = keras.Sequential([keras.layers.Dense(24, activation="relu")])
    model = ProtoAttend(encoder, num_classes=4, attention=attention, attention_size=16, value_size=8)
    model.build((None, 6))
    inputs = rng.normal(size=(1203, 6)).astype(np.float32)
    keys, values = model.encode_database(inputs)
    labels = rng.integers(0, 4, size=1203)
    model.set_database(keys, values, labels, indices=np.arange(1203) * 3)  # Rows of a source file.
    return model


@pytest.mark.parametrize("attention", normalizations.names())
@pytest.mark.parametrize("scale", [1.0, 40.0])  # Wide supports, and a few entries each.
def test_four_shards_merge_to_the_unsharded_answer(attention, scale):
    rng = np.random.default_rng(0)
    model = _model(attention, rng)
    queries_inputs = rng.normal(size=(7, 6)).astype(np.float32)
    queries = model.encode(queries_inputs)[0].numpy().astype(np.float64) * scale
    database = model.database
    keys, values = database.keys.numpy().astype(np.float64), database.values.numpy()
    labels, indices = database.labels.numpy(), database.indices.numpy()
    decision = model.decision(values).numpy().astype(np.float64)  # [D, C]: decision(v_j).
    logits = queries @ keys.T / math.sqrt(16)
    bounds = [0, 100, 650, 700, 1203]  # Unequal shards, one of 50 entries.
    answers = [
        sharding.answer_shard(
            logits[:, a:b], decision[a:b], labels[a:b], indices[a:b], attention, 4, rows=(a, b), database_rows=1203
        )
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    merged = sharding.merge_answers(answers, attention, 4)
    # Float64 dense attention over the whole database.
    weights = NORMALIZATION_REFERENCES[attention](logits)
    np.testing.assert_allclose(merged["logits"], weights @ decision, rtol=1e-12, atol=1e-12)
    mass = weights @ np.eye(4)[labels]
    np.testing.assert_allclose(merged["confidence"], np.minimum(mass.max(-1), 1.0), rtol=1e-12, atol=1e-12)
    order = np.argsort(-weights, axis=-1, kind="stable")[:, :5]
    np.testing.assert_allclose(merged["prototype_weights"], np.take_along_axis(weights, order, -1), atol=1e-12)
    shown = np.take_along_axis(weights, order, -1) > 0  # Past a sparse support, any zero entry.
    np.testing.assert_array_equal(merged["prototype_indices"][shown], indices[order][shown])
    np.testing.assert_array_equal(merged["prototype_labels"][shown], labels[order][shown])
    if scale == 1.0:
        # The model itself on the whole database (float32) agrees.
        out = model(queries_inputs)
        np.testing.assert_allclose(merged["logits"], out["logits"].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(merged["confidence"], out["confidence"].numpy(), atol=1e-5)
    if normalizations.get(attention).sparse and scale == 40.0:
        # Sparse: each shard (50 to 553 entries) reports its own support's few entries.
        assert (weights > 0).sum(-1).max() < 20 and max(a.logits.shape[1] for a in answers) < 40


def test_a_shard_reports_a_superset_of_its_part_of_the_global_support():
    """tau_shard <= tau: entries of the global support are in their shard's support."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(50, 400)) * 5
    global_support = _sparsemax_by_bisection(logits) > 0
    assert (global_support == (sparsemax(tf.constant(logits, tf.float32)).numpy() > 0)).all()
    for a, b in ((0, 37), (37, 300), (300, 400)):
        local = normalizations.get("sparsemax").reference(logits[:, a:b]) > 0
        assert not (global_support[:, a:b] & ~local).any()
    with pytest.raises(
        ValueError, match="Unknown attention normalization 'entmax'; valid: softmax, sparsemax, entmax15"
    ):
        sharding.merge_answers([], "entmax", 4)


@pytest.mark.parametrize("attention", ["softmax", "sparsemax"])
def test_a_duplicated_missing_or_foreign_shard_is_refused(attention):
    # Merged without a word, a duplicated shard counted its prototypes twice and a
    # missing one dropped them (up to 6.7 % of softmax decisions changed).
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 90)) * 3
    decision, labels = rng.normal(size=(90, 3)), rng.integers(0, 3, 90)

    def answer(a, b, size=90):
        return sharding.answer_shard(
            logits[:, a:b], decision[a:b], labels[a:b], np.arange(a, b), attention, 3, rows=(a, b), database_rows=size
        )

    parts = [answer(0, 30), answer(30, 60), answer(60, 90)]
    sharding.merge_answers(parts[::-1], attention, 3)  # In any order.
    with pytest.raises(
        ValueError, match=r"shard answer \d holds rows \[30, 60\), already held by another: a duplicate"
    ):
        sharding.merge_answers([*parts, parts[1]], attention, 3)
    with pytest.raises(ValueError, match=r"no shard answer holds rows \[30, 60\) of the 90: a shard is missing"):
        sharding.merge_answers([parts[0], parts[2]], attention, 3)
    with pytest.raises(ValueError, match=r"no shard answer holds rows \[60, 90\) of the 90: a shard is missing"):
        sharding.merge_answers(parts[:2], attention, 3)
    with pytest.raises(ValueError, match=r"databases of different sizes \(\[90, 120\]\)"):
        sharding.merge_answers([*parts[:2], answer(60, 90, size=120)], attention, 3)
    old_export = {"entry_logits": np.zeros([1, 1]), "entry_decision": np.zeros([1, 1, 3])}
    old_export.update(entry_labels=np.zeros([1, 1]), entry_indices=np.zeros([1, 1]))
    with pytest.raises(ValueError, match=r"shard 1: the answer does not say which rows .* --shard=I/N"):
        sharding.answer_from_outputs(old_export, "shard 1")


@pytest.mark.parametrize("attention", normalizations.names())
def test_a_trained_models_shard_answers_merge_to_its_answer_over_the_whole_database(attention):
    # Each shard answers as a served shard would (`ProtoAttend.shard_answer`, streamed
    # over its own rows); the router's merge is the model over the whole database.
    model, _, ((x_train, y_train), (x_test, _)) = toy_training.train_toy(attention, steps=150)
    keys, values = (t.numpy() for t in model.encode_database(x_train))
    indices = np.arange(len(x_train)) * 3 + 1  # Rows of a source file.
    inputs = x_test[:16]
    bounds = [0, 300, 1100, 1160, 2000]  # Unequal shards, one of 60 rows.
    answers = [
        sharding.answer_from_outputs(
            model.shard_answer(
                inputs, keys[a:b], values[a:b], y_train[a:b], indices[a:b], 128, block_size=256, coverage=(a, b, 2000)
            ),
            f"shard {n}",
        )
        for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]
    merged = sharding.merge_answers(answers, attention, 4)
    whole = model.predict_with_database(inputs, keys, values, y_train)
    np.testing.assert_allclose(merged["logits"], whole["logits"].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(merged["confidence"], whole["confidence"].numpy(), atol=1e-5)
    weights = whole["weights"].numpy()
    order = np.argsort(-weights, axis=-1, kind="stable")[:, :5]
    np.testing.assert_allclose(merged["prototype_weights"], np.take_along_axis(weights, order, -1), atol=1e-5)
    shown = np.take_along_axis(weights, order, -1) > 1e-4  # Past a sparse support, any zero entry.
    np.testing.assert_array_equal(merged["prototype_indices"][shown], indices[order][shown])
    if attention == "sparsemax":  # The case: supports of many entries across the shards.
        assert np.median((weights > 0).sum(1)) > 5


def test_a_shard_whose_support_outgrows_its_entries_is_refused():
    # Reporting 4 entries of a support of more would merge to a wrong answer: refused,
    # naming the shard and the queries.
    rng = np.random.default_rng(1)
    model = _model("sparsemax", rng)
    database = model.database
    inputs = rng.normal(size=(3, 6)).astype(np.float32)
    outputs = model.shard_answer(inputs, *database.tensors(), database.indices, 4)
    assert not np.asarray(outputs["complete"]).all()
    with pytest.raises(ValueError, match=r"shard 2: the support of queries \[0, 1, 2\] may hold more"):
        sharding.answer_from_outputs(outputs, "shard 2")


@pytest.mark.parametrize("attention", normalizations.names())
def test_four_exported_shards_merge_to_the_whole_databases_export(tmp_path, attention):
    # The plan past one machine, end to end: each shard exported with its own rows (and
    # their indices in the whole), its `shard_answer` signature called as TF Serving
    # would, the answers merged by the router; the whole database's export agrees.
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(4)  # Initial weights independent of the tests run before.
    encoder = keras.Sequential([keras.layers.Dense(16, activation="relu")])
    model = ProtoAttend(encoder, num_classes=3, attention=attention, attention_size=16, value_size=8)
    model.build((None, 5))
    rows = rng.normal(size=(900, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 900)
    signature = {"features": tf.TensorSpec([None, 5], tf.float32)}
    whole = tf.saved_model.load(export.export_any(model, rows, labels, signature, str(tmp_path / "whole")))
    request = {"features": tf.constant(rng.normal(size=(6, 5)).astype(np.float32) * 3)}
    answers = []
    for n, (a, b) in enumerate(zip([0, 200, 450, 470], [200, 450, 470, 900])):
        path = export.export_any(
            model,
            rows[a:b],
            labels[a:b],
            signature,
            str(tmp_path / f"shard{n}"),
            # 1.5-entmax's supports over an untrained model's keys are wider than
            # sparsemax's, up to a whole shard: 64 entries are refused for them
            # (answer_from_outputs), 512 hold the largest shard (430 rows).
            shard_entries=512 if attention == "entmax15" else 64,
            database_indices=np.arange(a, b),
            shard_rows=(a, b, 900),
        )
        served = tf.saved_model.load(path).signatures[export.SHARD_SIGNATURE](**request)
        answers.append(sharding.answer_from_outputs({k: v.numpy() for k, v in served.items()}, f"shard {n}"))
    merged = sharding.merge_answers(answers, attention, 3)
    expected = {k: v.numpy() for k, v in whole.signatures["serving_default"](**request).items()}
    np.testing.assert_allclose(tf.nn.softmax(merged["logits"]).numpy(), expected["probabilities"], atol=1e-5)
    np.testing.assert_allclose(merged["confidence"], expected["confidence"], atol=1e-5)
    np.testing.assert_allclose(merged["prototype_weights"], expected["prototype_weights"], atol=1e-5)
    shown = expected["prototype_weights"] > 1e-4
    np.testing.assert_array_equal(merged["prototype_indices"][shown], expected["prototype_indices"][shown])
    assert (expected["prototype_weights"] > 0).sum(1).max() > 1  # Supports of several entries.
    if attention == "softmax":  # Its merged top 5 needs only each shard's top 5.
        assert max(answer.logits.shape[1] for answer in answers) == 5


@pytest.mark.parametrize(
    "shard, message",
    [
        ("4/4", "--shard='4/4' must be I/N with 0 <= I < N"),
        ("a/4", "--shard='a/4' must be I/N with 0 <= I < N"),
        ("2", "--shard='2' must be I/N with 0 <= I < N"),
    ],
)
def test_a_bad_shard_flag_is_refused_before_the_run_is_read(tmp_path, shard, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        export.export_model_dir(str(tmp_path / "none"), str(tmp_path / "x"), shard=shard)


def test_a_shard_is_not_calibrated_alone(tmp_path):
    with pytest.raises(ConfigError, match="a shard's own confidence is not the merged one"):
        export.export_model_dir(str(tmp_path / "none"), str(tmp_path / "x"), shard="0/2", target_accuracy=0.9)
