import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import toy_training
from references import cross_entropy, layer_norm, softmax, sparsemax_bisection

from proto_tf import BaselineClassifier, ProtoAttend, metrics


def _dense_model(attention, **kwargs):
    model = ProtoAttend(keras.layers.Dense(6, name="encoder"), 3, attention, value_size=5, **kwargs)
    model.build((None, 4))
    return model


def _training_data(seed):
    """A batch of 6 inputs with 12 candidates for the 4-feature dense models."""
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.normal(size=(6, 4)).astype(np.float32),
        "labels": rng.integers(0, 3, 6),
        "candidate_inputs": rng.normal(size=(12, 4)).astype(np.float32),
    }


def _numpy_forward(model, x, normalization):
    """The model's forward pass written out in NumPy from its weights."""

    def dense(layer, inputs, relu=True):
        out = inputs @ layer.kernel.numpy() + layer.bias.numpy()
        return np.maximum(out, 0) if relu else out

    features = dense(model.encoder, x, relu=False)
    queries = dense(model.query_head, features)
    keys = dense(model.key_head, features)
    values = layer_norm(
        dense(model.value_head, features),
        model.value_norm.gamma.numpy(),
        model.value_norm.beta.numpy(),
        model.value_norm.epsilon,
    )
    return queries, keys, values


@pytest.mark.parametrize(
    "attention,reference,matching",
    [
        ("softmax", softmax, 1.0),
        ("sparsemax", sparsemax_bisection, 1.0),
        ("sparsemax", sparsemax_bisection, 0.25),
        ("softmax", softmax, 0.0),
    ],
)
def test_loss_terms_match_numpy(attention, reference, matching):
    rng = np.random.default_rng(0)
    model = _dense_model(attention, alpha_range=(0.47, 0.47), sparsity_weight=0.01, matching_loss_weight=matching)
    data = {
        "inputs": rng.normal(size=(8, 4)).astype(np.float32),
        "labels": rng.integers(0, 3, 8),
        "candidate_inputs": rng.normal(size=(20, 4)).astype(np.float32),
    }
    outputs = model.forward_train(data, model.sample_alpha(0), training=True)
    terms = {k: float(v) for k, v in model.loss_terms(data["labels"], outputs).items()}

    queries, _, values = _numpy_forward(model, data["inputs"], attention)
    _, candidate_keys, candidate_values = _numpy_forward(model, data["candidate_inputs"], attention)
    weights = reference(queries @ candidate_keys.T / np.sqrt(16))
    decision = model.decision.kernel.numpy()
    weighted = weights @ candidate_values
    labels = data["labels"]
    expected = {
        "plain_loss": cross_entropy(labels, values @ decision),
        "prototype_loss": cross_entropy(labels, weighted @ decision),
        "mixed_loss": cross_entropy(labels, (0.47 * values + 0.53 * weighted) @ decision),
        "sparsity_loss": np.mean(-(weights * np.log(weights + 1e-6)).sum(-1)),
    }
    expected["sparsity_term"] = 0.01 * expected["sparsity_loss"]  # Logged as loss/sparsity.
    expected["loss"] = (
        expected["plain_loss"]
        + matching * (expected["prototype_loss"] + expected["mixed_loss"])
        + expected["sparsity_term"]
    )
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert model.decision.use_bias is False


def test_alpha_is_uniform_in_range_per_step_and_reproducible():
    model = _dense_model("softmax", seed=3)
    alphas = np.array([float(model.sample_alpha(step)) for step in range(400)])
    assert alphas.min() >= 0.45 and alphas.max() <= 0.5
    assert alphas.std() == pytest.approx(0.05 / np.sqrt(12), rel=0.15)
    assert float(model.sample_alpha(17)) == float(_dense_model("softmax", seed=3).sample_alpha(17))
    assert float(_dense_model("softmax", alpha_range=(0.5, 0.5)).sample_alpha(9)) == 0.5


def test_baseline_is_plain_encoder_and_decision():
    rng = np.random.default_rng(1)
    model = BaselineClassifier(keras.layers.Dense(6, name="encoder"), 3)
    model.build((None, 4))
    x = rng.normal(size=(5, 4)).astype(np.float32)
    logits = model(x)["logits"].numpy()
    expected = (x @ model.encoder.kernel.numpy() + model.encoder.bias.numpy()) @ model.decision.kernel.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    terms = model.loss_terms(np.array([0, 1, 2, 0, 1]), model.forward_train({"inputs": x}, 0.5))
    assert set(terms) == {"plain_loss", "loss"}
    assert {m.name for m in model.metrics} == {"loss", "plain_loss", "plain_accuracy"}
    assert [w.path.split("/", 1)[1] for w in model.weights] == ["encoder/kernel", "encoder/bias", "decision/kernel"]
    assert not model.uses_database and model.decision.use_bias is False
    # One training step: the update of plain cross-entropy alone (hand gradient of Eq. 1's first term).
    labels = np.array([0, 1, 2, 0, 1])
    kernel = model.decision.kernel.numpy()
    features = x @ model.encoder.kernel.numpy() + model.encoder.bias.numpy()
    probabilities = np.exp(expected - expected.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    gradient = features.T @ (probabilities - np.eye(3)[labels]) / 5
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = model.train_step({"inputs": x, "labels": labels})
    np.testing.assert_allclose(model.decision.kernel.numpy(), kernel - 0.1 * gradient, atol=1e-5)
    assert float(logs["loss"]) == pytest.approx(-np.mean(np.log(probabilities[np.arange(5), labels])), rel=1e-5)
    # evaluate(x, y): the mean cross-entropy and accuracy of the decision.
    model.compile()
    result = model.evaluate(x, labels, return_dict=True, verbose=0)
    logits = model(x)["logits"].numpy()
    assert result["plain_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    np.testing.assert_allclose(model.get_config()["num_classes"], 3)


def test_baseline_checkpoints_and_keras_files_from_before_the_split_load():
    """Baseline runs written when the baseline was `ProtoAttend(attention="none")`
    (tests/fixtures/baseline_before_split/README.md) restore into BaselineClassifier."""
    from proto_tf.data.registry import dataset_info
    from proto_tf.training.checkpoints import make_checkpoint
    from proto_tf.training.config import ExperimentConfig, build_model

    folder = os.path.join(os.path.dirname(__file__), "fixtures", "baseline_before_split")
    expected = np.load(os.path.join(folder, "expected.npz"))
    config = ExperimentConfig(dataset="adult", attention="none", lstm_embedding_size=4, model_dir="unused")
    model = build_model(config, dataset_info("adult"), 2)
    assert isinstance(model, BaselineClassifier)
    make_checkpoint(model).read(os.path.join(folder, "checkpoint")).assert_consumed()
    np.testing.assert_allclose(model(expected["inputs"])["logits"], expected["logits"], atol=1e-6)
    loaded = keras.models.load_model(os.path.join(folder, "model.keras"))
    assert isinstance(loaded, BaselineClassifier)
    np.testing.assert_allclose(loaded(expected["inputs"])["logits"], expected["logits"], atol=1e-6)


def test_inference_with_database_returns_weights_and_confidence():
    rng = np.random.default_rng(2)
    model = _dense_model("sparsemax")
    with pytest.raises(ValueError, match="set_database"):
        model(np.zeros([1, 4], np.float32))
    candidates = rng.normal(size=(30, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    keys, values = model.encode_database(candidates, batch_size=7)
    model.set_database(keys, values, labels)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    out = model(x)
    queries, _, _ = _numpy_forward(model, x, "sparsemax")
    _, expected_keys, expected_values = _numpy_forward(model, candidates, "sparsemax")
    expected_weights = sparsemax_bisection(queries @ expected_keys.T / 4.0)
    np.testing.assert_allclose(out["weights"].numpy(), expected_weights, atol=1e-5)
    np.testing.assert_allclose(
        out["logits"].numpy(),
        expected_weights @ expected_values @ model.decision.kernel.numpy(),
        atol=1e-4,
    )
    np.testing.assert_allclose(out["confidence"].numpy(), metrics.confidence(expected_weights, labels, 3), atol=1e-5)
    with pytest.raises(ValueError, match=r"labels \(29,\)"):
        model.set_database(keys, values, labels[:29])


def test_constructor_errors_list_valid_values():
    with pytest.raises(ValueError, match="softmax, sparsemax, entmax15 .BaselineClassifier"):
        ProtoAttend(keras.layers.Dense(2), 3, attention="entmax")
    with pytest.raises(ValueError, match="alpha_range"):
        ProtoAttend(keras.layers.Dense(2), 3, alpha_range=(0.6, 0.4))


def test_config_round_trip_gives_same_outputs():
    rng = np.random.default_rng(4)
    model = _dense_model("softmax", sparsity_weight=0.1, alpha_range=(0.4, 0.5), sparsemax_top_k=8)
    clone = ProtoAttend.from_config(model.get_config())
    clone.build((None, 4))
    clone.set_weights(model.get_weights())
    assert clone.sparsity_weight == 0.1 and clone.alpha_range == (0.4, 0.5)
    assert clone.prototype_attention.sparsemax_top_k == 8
    candidates = rng.normal(size=(10, 4)).astype(np.float32)
    for m in (model, clone):
        m.set_database(*m.encode_database(candidates), labels=np.arange(10) % 3)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(clone(x)["logits"].numpy(), model(x)["logits"].numpy(), atol=1e-6)


@pytest.mark.parametrize("attention", ["softmax", "sparsemax"])
def test_toy_training_learns_and_sparsemax_is_sparse(attention):
    model, history, ((x_train, y_train), (x_test, y_test)) = toy_training.train_toy(attention)
    assert history.history["loss"][-1] < 1.0
    model.set_database(*model.encode_database(x_train[:1024]), labels=y_train[:1024])
    out = model(x_test)
    accuracy = np.mean(np.argmax(out["logits"].numpy(), -1) == y_test)
    assert accuracy > 0.9  # Chance is 0.25.
    count_95 = metrics.median_prototype_counts(out["weights"])[0.95]
    if attention == "sparsemax":
        assert count_95 < 20  # Out of 1024 candidates.
    else:
        assert count_95 > 20  # Softmax spreads weight over many candidates.


def test_forward_only_candidates_stop_gradients_into_the_encoder():
    data = _training_data(seed=5)
    faithful = _dense_model("softmax", seed=1)
    fast = _dense_model("softmax", seed=1, candidate_gradients=False)
    fast.set_weights(faithful.get_weights())
    results = {}
    for name, model in (("faithful", faithful), ("fast", fast)):
        with tf.GradientTape() as tape:
            outputs = model.forward_train(data, 0.5, training=True)
            loss = model.loss_terms(data["labels"], outputs)["loss"]
        grads = tape.gradient(loss, [model.encoder.kernel, model.key_head.kernel])
        results[name] = (float(loss), [g.numpy() for g in grads])
    assert results["fast"][0] == pytest.approx(results["faithful"][0])  # Same forward pass.
    encoder_fast, key_fast = results["fast"][1]
    encoder_faithful, key_faithful = results["faithful"][1]
    np.testing.assert_allclose(key_fast, key_faithful, atol=1e-6)  # Heads still learn.
    assert np.abs(encoder_fast - encoder_faithful).max() > 1e-4  # The candidate path is cut.
    assert ProtoAttend.from_config(fast.get_config()).candidate_gradients is False


def test_mixed_bfloat16_forward_matches_float32():
    """Under a mixed policy the heads compute in bfloat16 while alpha is float32; the
    mixed path must still be built (it raised a dtype error) and agree with float32."""
    data = _training_data(seed=6)
    reference = _dense_model("sparsemax", seed=1)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = _dense_model("sparsemax", seed=1)
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(reference.get_weights())
    outputs = {
        name: model.forward_train(data, tf.constant(0.45), training=False)
        for name, model in (("float32", reference), ("mixed", mixed))
    }
    assert outputs["mixed"]["mixed_logits"].dtype == tf.bfloat16
    for key in ("mixed_logits", "prototype_logits"):
        np.testing.assert_allclose(
            tf.cast(outputs["mixed"][key], tf.float32).numpy(),
            outputs["float32"][key].numpy(),
            atol=0.05,
            rtol=0.05,
        )


def test_candidate_memory_attends_over_the_last_candidates_written():
    """A memory of 8 written with 3 candidates per step wraps around: after three
    steps it holds candidates 1..8 of the 9 written, and attending over it equals
    attending over those candidates directly."""
    rng = np.random.default_rng(7)
    candidates = rng.normal(size=(9, 4)).astype(np.float32)
    data = {"inputs": rng.normal(size=(5, 4)).astype(np.float32), "labels": rng.integers(0, 3, 5)}
    memory = _dense_model("sparsemax", seed=2, candidate_gradients=False, candidate_memory=8)
    direct = _dense_model("sparsemax", seed=2, candidate_gradients=False)
    for layer_name in ("encoder", "query_head", "key_head", "value_head", "value_norm", "decision"):
        getattr(direct, layer_name).set_weights(getattr(memory, layer_name).get_weights())
    first = memory.forward_train({**data, "candidate_inputs": candidates[:3]}, 0.5, training=True)
    # One write: only slots 0-2 are filled, the others get no weight.
    assert not first["weights"].numpy()[:, 3:].any()
    for start in (3, 6):
        memory.forward_train({**data, "candidate_inputs": candidates[start : start + 3]}, 0.5)
    # Slot 0 now holds candidate 8 (the wrap), slots 1-7 candidates 1-7.
    expected = np.concatenate([candidates[8:9], candidates[1:8]])
    # Encoded in batches of 3 there and of 8 here: the same to float32 rounding.
    np.testing.assert_allclose(memory.memory.features.numpy(), memory.encoder(expected).numpy(), rtol=1e-6, atol=1e-6)
    remembered = memory.forward_train({**data, "candidate_inputs": candidates[:0]}, 0.5, training=False)
    reference = direct.forward_train({**data, "candidate_inputs": expected}, 0.5, training=False)
    for key in ("weights", "prototype_logits", "mixed_logits"):
        np.testing.assert_allclose(remembered[key].numpy(), reference[key].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="candidate_gradients=False"):
        _dense_model("softmax", candidate_memory=8)
    assert ProtoAttend.from_config(memory.get_config()).candidate_memory == 8


@pytest.mark.parametrize("joint", [True, False])
def test_two_call_encoding_gives_each_call_its_own_batch_statistics(joint):
    # With BatchNorm in the encoder, the joint call normalises inputs with statistics
    # over inputs and candidates; the two-call form (the authors' code) with the
    # inputs' own. Reference: the same layers called by hand.
    encoder = keras.Sequential([keras.layers.Dense(6), keras.layers.BatchNormalization()], name="encoder")
    model = ProtoAttend(encoder, 3, "sparsemax", value_size=5, joint_encoding=joint)
    model.build((None, 4))
    data = _training_data(seed=5)
    data["candidate_inputs"] = data["candidate_inputs"] * 3.0 + 1.0  # Other statistics.
    outputs = model.forward_train(data, model.sample_alpha(0), training=True)

    def plain_logits(features):
        return model.decision(model.value_norm(model.value_head(features))).numpy()

    both = np.concatenate([data["inputs"], data["candidate_inputs"]])
    joint_features = encoder(both, training=True)[:6]
    own_features = encoder(data["inputs"], training=True)
    expected = plain_logits(joint_features if joint else own_features)
    other = plain_logits(own_features if joint else joint_features)
    np.testing.assert_allclose(outputs["plain_logits"].numpy(), expected, atol=1e-5)
    assert not np.allclose(outputs["plain_logits"].numpy(), other, atol=1e-3)
    assert ProtoAttend.from_config(model.get_config()).joint_encoding is joint


def test_matching_warmup_trains_the_plain_term_alone_then_the_full_loss():
    data = _training_data(seed=7)
    model = _dense_model("sparsemax", seed=2, sparsity_weight=0.01, matching_warmup_steps=2)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    heads = lambda: [model.query_head.kernel.numpy().copy(), model.key_head.kernel.numpy().copy()]
    start, encoder_start = heads(), model.encoder.kernel.numpy().copy()
    for _ in range(2):  # Warm-up: the loss is the plain term; the attention's heads get no gradient.
        logs = model.train_step_with_alpha(data, 0.5)
        assert float(logs["loss"]) == pytest.approx(float(logs["plain_loss"]), rel=1e-6)
    for before, after in zip(start, heads()):
        np.testing.assert_array_equal(before, after)
    assert np.abs(model.encoder.kernel.numpy() - encoder_start).max() > 1e-4  # The plain path learns.
    for metric in model.metrics:
        metric.reset_state()
    outputs = model.forward_train(data, 0.5)
    terms = {k: float(v) for k, v in model.loss_terms(data["labels"], outputs).items()}
    full = terms["plain_loss"] + terms["prototype_loss"] + terms["mixed_loss"] + 0.01 * terms["sparsity_loss"]
    assert terms["loss"] == pytest.approx(full, rel=1e-6)  # Step 3 on: Eq. 1 and Eq. 2 in full.
    model.train_step_with_alpha(data, 0.5)
    assert all(np.abs(a - b).max() > 1e-6 for a, b in zip(start, heads()))
    assert ProtoAttend.from_config(model.get_config()).matching_warmup_steps == 2
    with pytest.raises(ValueError, match="matching_warmup_steps must be >= 0"):
        _dense_model("softmax", matching_warmup_steps=-1)


def test_tied_head_init_starts_the_key_head_as_the_query_head():
    tied, untied = _dense_model("softmax", tied_head_init=True), _dense_model("softmax")
    for key_weight, query_weight in zip(tied.key_head.weights, tied.query_head.weights):
        np.testing.assert_array_equal(key_weight.numpy(), query_weight.numpy())
    assert np.abs(untied.key_head.kernel.numpy() - untied.query_head.kernel.numpy()).max() > 1e-3
    # The first logits are the similarity q . q' of the two encodings.
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    queries, keys, _ = tied.heads(tied.encoder(x))
    np.testing.assert_allclose(keys, queries)
    assert ProtoAttend.from_config(tied.get_config()).tied_head_init is True


def test_cosine_scale_scores_candidates_by_the_scaled_cosine():
    model = _dense_model("sparsemax", cosine_scale=16.0)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    queries, keys, _ = model.heads(model.encoder(x))
    raw_queries, raw_keys, _ = _numpy_forward(model, x, "sparsemax")
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    # The attention's logits q . k / sqrt(16) are 16 times the cosine of the heads' outputs.
    np.testing.assert_allclose(
        queries.numpy() @ keys.numpy().T / 4, 16 * unit(raw_queries) @ unit(raw_keys).T, atol=1e-5
    )
    assert ProtoAttend.from_config(model.get_config()).cosine_scale == 16.0
    with pytest.raises(ValueError, match="cosine_scale must be >= 0"):
        _dense_model("softmax", cosine_scale=-1.0)


def test_attention_settings_validate_and_round_trip_through_json():
    # A config read back from JSON gives lists and ints where floats were written:
    # the settings store the types their fields name, and equal the original.
    import json

    from proto_tf.attention_settings import AttentionSettings

    settings = AttentionSettings(attention="sparsemax", sparsity_weight=0.1, alpha_range=(0.4, 0.5), cosine_scale=16)
    read = AttentionSettings(**json.loads(json.dumps(settings.get_config())))
    assert read == settings and isinstance(read.cosine_scale, float) and read.alpha_range == (0.4, 0.5)
    with pytest.raises(ValueError, match="Unknown attention 'cosine'; valid: softmax, sparsemax, entmax15"):
        AttentionSettings(attention="cosine")
    with pytest.raises(ValueError, match="stream_above must be a positive integer"):
        AttentionSettings(stream_above=0)
    # Keras' own keyword arguments pass through the model; the settings are its attributes.
    model = ProtoAttend(keras.layers.Dense(4), num_classes=3, attention="entmax15", value_size=8, name="named")
    assert model.name == "named" and model.value_size == 8 and model.settings.attention == "entmax15"
