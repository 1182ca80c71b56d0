"""Adam with a smaller learning rate for some variables: a fine-tuned backbone learns at
`scale` times the heads' rate (a multiplier of the update, since Adam's step does not
depend on the gradient's scale)."""

import keras


@keras.saving.register_keras_serializable(package="proto_tf")
class ScaledAdam(keras.optimizers.Adam):
    """Adam whose learning rate is `scale` times its own for the variables given to
    `scale_variables` (the others learn at the full rate)."""

    def __init__(self, *args, scale: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = float(scale)
        self._scaled_keys = set()

    def scale_variables(self, variables) -> None:
        """Marks `variables` to learn at `scale` times the rate."""
        self._scaled_keys.update(self._var_key(variable) for variable in variables)

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._scaled_keys:
            learning_rate = learning_rate * self.scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
