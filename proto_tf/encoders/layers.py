"""Layers shared by the encoders."""

import keras


@keras.saving.register_keras_serializable(package="proto_tf")
class DenseNormStack(keras.layers.Layer):
    """Appendix A's fully-connected layers: Dense + ReLU + LayerNorm per entry of `units`."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(units)
        self.dense_layers = [
            keras.layers.Dense(width, activation="relu", name=f"dense{index + 1}")
            for index, width in enumerate(self.units)
        ]
        self.norms = [
            keras.layers.LayerNormalization(name=f"dense{index + 1}_norm")
            for index in range(len(self.units))
        ]

    def call(self, x):
        for dense, norm in zip(self.dense_layers, self.norms):
            x = norm(dense(x))
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units)})
        return config
