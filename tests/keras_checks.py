"""Shared checks that a Keras layer or model survives every way Keras rebuilds it."""

import json
import os

import keras
import numpy as np
import tensorflow as tf


def _arrays(outputs):
    """Outputs (a tensor, or a dict of them) as a dict of NumPy arrays."""
    if isinstance(outputs, dict):
        return {name: np.asarray(value) for name, value in outputs.items()}
    return {"output": np.asarray(outputs)}


def _assert_same_outputs(got, expected, atol):
    got, expected = _arrays(got), _arrays(expected)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=atol, err_msg=name)


def run_serialization_test(layer, example, atol=1e-6):
    """`layer` (called on `example` before) rebuilt from its config and through Keras'
    registry gives a config equal to its own, JSON-ready, and, with the weights copied,
    the same outputs on `example`. Catches a registered class that cannot be revived."""
    expected = layer(example, training=False)
    config = layer.get_config()
    json.dumps(keras.saving.serialize_keras_object(layer))
    for clone in (
        layer.__class__.from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)),
    ):
        assert type(clone) is type(layer)
        assert clone.get_config() == config
        clone(example, training=False)
        clone.set_weights(layer.get_weights())
        _assert_same_outputs(clone(example, training=False), expected, atol)


def run_model_saving_test(model, example, tmp_path, atol=1e-6):
    """`model` saved to a `.keras` file and loaded back gives the same outputs on `example`.
    A layer that is not a model is saved inside a functional model around it."""
    if not isinstance(model, keras.Model):
        example = np.asarray(example)
        dtype = "string" if example.dtype.kind in "US" else str(example.dtype)
        inputs = keras.Input(shape=example.shape[1:], dtype=dtype)
        model = keras.Model(inputs, model(inputs))
    expected = model(example, training=False)
    path = os.path.join(str(tmp_path), f"{model.name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert _json(loaded.get_config()) == _json(model.get_config())
    _assert_same_outputs(loaded(example, training=False), expected, atol)
    return loaded


def _json(config):
    """A config as JSON gives it (tuples and lists alike)."""
    return json.loads(json.dumps(config))


def randomised(layer):
    """Sets every weight of `layer` to random values (so a missed weight shows), keeping
    variances positive; returns the layer."""
    rng = np.random.default_rng(0)
    for variable in layer.weights:
        if not str(variable.dtype).startswith("float"):
            continue  # Seed states, counters.
        values = rng.normal(size=variable.shape).astype(variable.dtype)
        if "variance" in variable.path:
            values = np.abs(values) + 0.5
        variable.assign(tf.constant(values))
    return layer
