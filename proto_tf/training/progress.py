"""What a training run shows: one TensorBoard vocabulary for training and validation,
and console lines (a progress bar on a terminal, plain lines in a file or a pipe)."""

import sys

import keras

# One tag per quantity, shared by the train and validation writers so that both land on
# one chart, grouped by kind.
TRAIN_TAGS = {
    "loss": "loss/total",
    "plain_loss": "loss/plain",
    "prototype_loss": "loss/prototype",
    "mixed_loss": "loss/mixed",
    # Eq. 2's entropy of the weights: a loss term only times --sparsity_weight.
    "sparsity_loss": "attention/entropy",
    "sparsity_term": "loss/sparsity",  # sparsity_weight x the entropy, when the weight is > 0.
    "plain_accuracy": "accuracy/plain",
    "prototype_accuracy": "accuracy/prototype",
    "mean_max_weight": "prototypes/mean_max_weight",
    "distinct_top_share": "attention/distinct_top_share",
    "top3_weight_share": "attention/top3_weight_share",
    "learning_rate": "optimizer/learning_rate",
    "steps_per_second": "speed/steps_per_second",
}
_VALIDATION_TAGS = {
    "plain_accuracy": "accuracy/plain",
    "plain_loss": "loss/plain",
    "median_prototypes_50": "prototypes/median_50",
    "median_prototypes_90": "prototypes/median_90",
    "median_prototypes_95": "prototypes/median_95",
    "confidence_right": "confidence/right",
    "confidence_wrong": "confidence/wrong",
}


def validation_tags(uses_database: bool) -> dict:
    """Tags of `evaluation.summarize` keys: the decision's accuracy and loss are the
    prototype path's (the plain path's for a baseline, which has no database)."""
    path = "prototype" if uses_database else "plain"
    return {"accuracy": f"accuracy/{path}", "loss": f"loss/{path}", **_VALIDATION_TAGS}


# Flags that name places, not the experiment: not hyper-parameters to compare runs by.
_NOT_HPARAMS = ("model_dir", "data_dir", "download")


def hparams(config) -> dict:
    """The run's flags as TensorBoard hyper-parameters (the HParams dashboard compares
    runs by them): numbers, booleans and strings as they are, lists joined by commas,
    unset (None) flags left out."""
    values = {}
    for name, value in vars(config).items():
        if name in _NOT_HPARAMS or value is None:
            continue
        if isinstance(value, (tuple, list)):
            value = ",".join(str(item) for item in value)
        values[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def tagged(values: dict, tags: dict) -> dict:
    """`{tag: value}` for the values that have a tag and a number (None is skipped)."""
    return {
        tags[name]: float(value) for name, value in values.items() if name in tags and isinstance(value, (int, float))
    }


class ConsoleProgress:
    """Training progress on the console.

    On a terminal: Keras' progress bar, showing the same windowed values TensorBoard
    logs. Otherwise (a file, a pipe, a CI log): one plain line per logged step, with no
    control characters. Validation results are printed as a line at each evaluation.
    """

    _SHOWN = ("loss", "prototype_accuracy", "plain_accuracy")

    def __init__(self, total_steps: int, verbose: bool = True, stream=None):
        self.total_steps = total_steps
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.bar = None
        if verbose and self.stream.isatty():
            names = list(self._SHOWN) + ["steps_per_second"]
            self.bar = keras.utils.Progbar(total_steps, stateful_metrics=names)

    def train(self, step: int, scalars: dict) -> None:
        """Shows the windowed training values logged at `step`."""
        if not self.verbose:
            return
        shown = [(name, scalars[name]) for name in self._SHOWN if name in scalars]
        if self.bar is not None:
            self.bar.update(step, shown + [("steps_per_second", scalars["steps_per_second"])])
            return
        parts = [f"{name} {value:.4f}" for name, value in shown]
        parts.append(f"{scalars['steps_per_second']:.2f} steps/s")
        self._line(f"step {step}/{self.total_steps}: " + ", ".join(parts))

    def validation(self, step: int, result: dict) -> None:
        """Prints a validation summary line."""
        if not self.verbose:
            return
        parts = [f"accuracy {result['accuracy']:.4f}"]
        if "plain_accuracy" in result:
            parts.append(f"plain_accuracy {result['plain_accuracy']:.4f}")
        if "median_prototypes_50" in result:
            parts.append(
                "median prototypes at 50/90/95 % of the weight "
                + "/".join(f"{result[f'median_prototypes_{p}']:g}" for p in (50, 90, 95))
            )
        prefix = "\n" if self.bar is not None else ""
        self._line(f"{prefix}validation at step {step}: " + ", ".join(parts))

    def _line(self, text):
        print(text, file=self.stream, flush=True)
