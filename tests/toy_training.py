"""A toy problem and a ProtoAttend trained on it in a few seconds: for tests that need a
trained model's structure (clustered keys, supports of many entries), not a real dataset."""

import keras
import numpy as np
import tensorflow as tf

from proto_tf import ProtoAttend


def clusters(seed: int = 0, num_classes: int = 4, dims: int = 8) -> tuple:
    """`((x_train, y_train), (x_test, y_test))`: 2000 and 400 points of `num_classes`
    Gaussian clusters in `dims` dimensions."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dims)) * 2

    def sample(n):
        labels = rng.integers(0, num_classes, n)
        return (centers[labels] + rng.normal(size=(n, dims))).astype(np.float32), labels

    return sample(2000), sample(400)


def train_toy(attention: str, steps: int = 250, num_classes: int = 4) -> tuple:
    """A ProtoAttend (`Dense(32)` encoder, 16-d values) trained `steps` steps on
    `clusters()` with 256 candidates per step; returns `(model, history, data)`."""
    (x_train, y_train), test = data = clusters(num_classes=num_classes)
    keras.utils.set_random_seed(0)  # Initial weights independent of earlier tests.
    model = ProtoAttend(
        keras.Sequential([keras.layers.Dense(32, activation="relu")]), num_classes, attention, value_size=16
    )
    model.build((None, x_train.shape[1]))
    model.compile(optimizer=keras.optimizers.Adam(3e-3, clipvalue=20.0))

    def batch(step):
        # Stateless draws: the batches do not depend on what ran before in the process.
        seed = tf.stack([tf.constant(0, tf.int64), step])
        inputs = tf.random.stateless_uniform([64], seed, 0, len(x_train), tf.int32)
        candidates = tf.random.experimental.stateless_shuffle(tf.range(len(x_train)), seed + 1)[:256]
        return {
            "inputs": tf.gather(x_train, inputs),
            "labels": tf.gather(y_train, inputs),
            "candidate_inputs": tf.gather(x_train, candidates),
        }

    history = model.fit(tf.data.Dataset.range(steps).map(batch), verbose=0)
    return model, history, data
