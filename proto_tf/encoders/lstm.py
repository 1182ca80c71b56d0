"""LSTM encoder for tabular data of Appendix A.3 (Adult Census Income)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="proto_tf")
class TabularLSTM(keras.Model):
    """Dense + ReLU embedding of the feature vector, fed to an LSTM at every timestep.

    The concatenated features go through Dense(`embedding_size`) + ReLU; the embedding
    is repeated over `timesteps` steps, each step's copy after its own dropout; the
    LSTM's last output is returned after dropout. The paper does not give the LSTM
    width: it is `embedding_size` here.

    Args:
      embedding_size: 64 in the paper.
      timesteps: 4 in the paper.
      lstm_units: LSTM width (defaults to `embedding_size`).
      dropout: 0.5 on the timestep inputs and on the output.

    Example:
      >>> TabularLSTM()(np.zeros([3, 105], "float32")).shape
      TensorShape([3, 64])
    """

    def __init__(
        self,
        embedding_size: int = 64,
        timesteps: int = 4,
        lstm_units: int | None = None,
        dropout: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embedding_size = embedding_size
        self.timesteps = timesteps
        self.lstm_units = lstm_units or embedding_size
        self.dropout = dropout
        self.embedding = keras.layers.Dense(embedding_size, activation="relu", name="embedding")
        self.input_dropout = keras.layers.Dropout(dropout, name="input_dropout")
        self.lstm = keras.layers.LSTM(self.lstm_units, name="lstm")
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")

    def call(self, features: tf.Tensor, training: bool = False) -> tf.Tensor:
        embedded = self.embedding(features)
        sequence = keras.ops.repeat(keras.ops.expand_dims(embedded, 1), self.timesteps, axis=1)
        sequence = self.input_dropout(sequence, training=training)
        return self.output_dropout(self.lstm(sequence, training=training), training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "embedding_size": self.embedding_size,
                "timesteps": self.timesteps,
                "lstm_units": self.lstm_units,
                "dropout": self.dropout,
            }
        )
        return config
