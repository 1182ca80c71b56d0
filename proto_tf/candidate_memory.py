"""CandidateMemory: the encoder outputs of the last N candidates, a ring buffer that
training steps attend over (ProtoAttend's `candidate_memory`, Section 5.1's idea that
candidates need not be encoded again every step)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="proto_tf")
class CandidateMemory(keras.layers.Layer):
    """A ring buffer of `size` encoder outputs.

    `call(features [R, F], write)` writes the rows over the oldest slots (when
    `write`) and returns the memory `[size, F]` with the mask of its filled slots
    `[size]`. The variables are replica-local (on-read synchronisation): every replica
    writes the same all-gathered encodings, so a step needs no collective for them, and
    checkpoints read the first replica's.

    Example:
      >>> memory = CandidateMemory(4)
      >>> memory.build((None, 2))
      >>> rows, filled = memory(tf.ones([3, 2]), write=True)
      >>> filled.numpy().tolist()
      [True, True, True, False]
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        if size < 1:
            raise ValueError(f"A candidate memory needs at least one slot, got size={size}.")
        self.size = int(size)

    def build(self, feature_shape: tuple) -> None:
        self.features = keras.Variable(
            "zeros",
            shape=(self.size, feature_shape[-1]),
            trainable=False,
            aggregation="only_first_replica",
            synchronization="on_read",
            name="memory_features",
        )
        self.writes = keras.Variable(
            0,
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
            synchronization="on_read",
            name="memory_writes",
        )
        self.built = True

    def call(self, features: tf.Tensor, write: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
        if write:
            slots = (self.writes + tf.range(tf.shape(features)[0])) % self.size
            self.features.assign(
                tf.tensor_scatter_nd_update(self.features, slots[:, None], tf.cast(features, self.features.dtype))
            )
            self.writes.assign_add(tf.shape(features)[0])
        filled = tf.range(self.size) < self.writes
        return tf.cast(self.features, features.dtype), filled

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}
