import keras
import numpy as np

from proto_tf import ProtoAttend, metrics
from proto_tf.data import Split
from proto_tf.evaluation import Evaluator, summarize


def _model():
    model = ProtoAttend(keras.layers.Dense(6), 3, "softmax", value_size=4)
    model.build((None, 4))
    return model


def _split(rng, size):
    return Split(rng.normal(size=(size, 4)).astype(np.float32), rng.integers(0, 3, size), np.arange(size))


def test_each_evaluation_uses_the_database_it_was_given():
    # Regression: a traced predict function captured the first database, so later
    # evaluations (after training moved the weights) attended over stale keys.
    rng = np.random.default_rng(0)
    model, test = _model(), _split(rng, 50)
    evaluator = Evaluator(model, lambda x: x, batch_size=16)
    for size in (5, 40):
        database = _split(rng, size)
        evaluator.set_database(database)
        got = evaluator.predict(test)
        model.set_database(*model.encode_database(database.inputs), labels=database.labels)
        expected = model(test.inputs)
        np.testing.assert_array_equal(got["predictions"], np.argmax(expected["logits"], -1))
        np.testing.assert_allclose(got["confidence"], expected["confidence"], atol=1e-6)
        np.testing.assert_array_equal(got["prototype_counts"], metrics.prototype_counts(expected["weights"]).numpy())
        assert got["prototype_counts"].max() <= size


def test_summarize_hand_case():
    predictions = {
        "labels": np.array([0, 1, 1, 2]),
        "predictions": np.array([0, 1, 0, 2]),
        "plain_predictions": np.array([0, 0, 0, 2]),
        "confidence": np.array([0.9, 0.8, 0.4, 0.7]),
        "prototype_counts": np.array([[1, 2, 3], [1, 3, 5], [2, 4, 6], [1, 1, 1]]),
    }
    summary = summarize(predictions)
    assert summary["accuracy"] == 0.75 and summary["plain_accuracy"] == 0.5
    assert summary["median_prototypes_50"] == 1.0 and summary["median_prototypes_95"] == 4.0
    assert abs(summary["confidence_right"] - 0.8) < 1e-9 and summary["confidence_wrong"] == 0.4


def test_a_database_encoded_again_is_not_traced_again():
    """Validation during training sets the database again and again: one traced function."""
    model = ProtoAttend(keras.layers.Dense(4), 2, "softmax")
    model.build((None, 3))
    traces, encode = [], model.encode
    model.encode = lambda inputs, training=False: (traces.append(inputs.shape), encode(inputs, training))[1]
    split = Split(np.random.default_rng(0).normal(size=(10, 3)).astype("float32"), np.arange(10) % 2, np.arange(10))
    evaluator = Evaluator(model, lambda x: x, batch_size=4)
    evaluator.set_database(split)
    first = len(traces)
    for _ in range(3):
        evaluator.set_database(split)
    assert first <= 2 and len(traces) == first  # Batches of 4, 4 and 2: at most a relaxed retrace.
