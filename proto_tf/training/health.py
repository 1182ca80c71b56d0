"""Training health: NaN or infinite gradients, weights or losses, and divergence
without NaN, each stopping the run with the step, the cause and the last good
checkpoint."""

import collections
import math

import numpy as np
import tensorflow as tf

from proto_tf.errors import TrainingHealthError

DIVERGENCE_WINDOW = 20  # Steps whose median loss is compared with the loss level.


class NonFiniteError(TrainingHealthError):
    """A loss, gradient or weight became NaN or infinite."""


class DivergenceError(TrainingHealthError):
    """The loss rose far above its level without becoming NaN."""


def first_nonfinite(tensors) -> tf.Tensor:
    """Position of the first tensor holding a NaN or infinity, or `len(tensors)` when
    all are finite (None entries, e.g. missing gradients, count as finite).

    Every step pays one sum per tensor: a NaN or infinity anywhere makes the total
    non-finite. Only then (or when finite values overflow the total) is each tensor
    searched, so the position named is exact either way.
    """
    values = [None if t is None else _stored_values(t) for t in tensors]
    present = [v for v in values if v is not None]
    if not present:
        return tf.constant(len(tensors), tf.int32)
    total = tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in present])

    def search():
        finite = tf.stack([tf.constant(True) if v is None else tf.reduce_all(tf.math.is_finite(v)) for v in values])
        positions = tf.range(len(tensors), dtype=tf.int32)
        return tf.reduce_min(tf.where(finite, len(tensors), positions))

    return tf.cond(tf.math.is_finite(total), lambda: tf.constant(len(tensors), tf.int32), search)


def _stored_values(tensor):
    """The values a tensor holds: an embedding's sparse gradient (`tf.IndexedSlices`) is
    zero outside its rows, so its rows are checked instead of a dense copy (an
    UnsortedSegmentSum over the embedding every step)."""
    return tensor.values if isinstance(tensor, tf.IndexedSlices) else tensor


def step_health(loss, gradients, variables) -> dict:
    """What `HealthMonitor` checks of one step (`ProtoAttend.train_step_with_alpha`'s
    `inspect`): the step's loss, and the position in the trainable variables of the
    first one whose gradient (`first_nonfinite_gradient`) or updated value
    (`first_nonfinite_weight`) holds a NaN or infinity (their count when none does)."""
    return {
        "step_loss": tf.cast(loss, tf.float32),
        "first_nonfinite_gradient": first_nonfinite(gradients),
        "first_nonfinite_weight": first_nonfinite([tf.convert_to_tensor(v) for v in variables]),
    }


class HealthMonitor:
    """Checks every step's health logs; raises with the step and what went wrong.

    Divergence: the loss level is the first step's loss or the lowest median of
    `DIVERGENCE_WINDOW` consecutive step losses, whichever is lower. The run has
    diverged when the median of the last window (at least half a window of steps)
    exceeds both `factor` times that level and the first step's loss: a healthy run
    never returns to its untrained loss, and early steps are held to 10x, not to
    their noise.

    Args:
      variables: the trainable variables, in the order the step checks them.
      factor: the divergence factor (0 disables the divergence check).
    """

    def __init__(self, variables, factor: float):
        self.names = [v.path for v in variables]
        self.factor = factor
        self.losses = collections.deque(maxlen=DIVERGENCE_WINDOW)
        self.new_phase()  # No loss history yet.

    @property
    def threshold(self) -> float:
        """The window median above which the run counts as diverged."""
        if self.first_loss is None or not self.factor:
            return math.inf
        return max(self.factor * min(self.level, self.first_loss), self.first_loss)

    def new_phase(self) -> None:
        """Forgets the loss history: the objective changed (the end of
        `--matching_warmup_steps` adds Eq. 1's attention terms to the loss), so the
        levels before are no reference for the losses after."""
        self.losses.clear()
        self.first_loss, self.level = None, math.inf

    def safe_to_save(self) -> bool:
        """False while any loss of the last window is above the threshold: a checkpoint
        taken then could be the first of a divergence."""
        return all(loss <= self.threshold for loss in self.losses)

    def check(self, step: int, logs: dict, last_checkpoint: str | None) -> None:
        """Raises NonFiniteError or DivergenceError for the step's `logs` (which hold
        step_loss, first_nonfinite_gradient and first_nonfinite_weight)."""
        keep = _kept(last_checkpoint)
        for kind in ("gradient", "weight"):
            position = int(logs[f"first_nonfinite_{kind}"])
            if position < len(self.names):
                raise NonFiniteError(
                    f"step {step}: the {kind} of {self.names[position]} is NaN or infinite; "
                    f"training stopped. {keep} {_ADVICE}."
                )
        loss = float(logs["step_loss"])
        if not math.isfinite(loss):
            raise NonFiniteError(f"step {step}: the loss is {loss}; training stopped. {keep} {_ADVICE}.")
        if self.first_loss is None:
            self.first_loss = loss
        self.losses.append(loss)
        if len(self.losses) < DIVERGENCE_WINDOW // 2:
            return
        median = float(np.median(self.losses))
        if median > self.threshold:
            raise DivergenceError(
                f"step {step}: training diverged: the median loss of the last "
                f"{len(self.losses)} steps is {median:.4g}, above {self.threshold:.4g} "
                f"(--divergence_factor={self.factor:g} times the loss level "
                f"{min(self.level, self.first_loss):.4g}, and the first step's loss "
                f"{self.first_loss:.4g}). {keep} {_ADVICE} (--divergence_factor=0 "
                "disables this check)."
            )
        if len(self.losses) == DIVERGENCE_WINDOW:
            self.level = min(self.level, median)


_ADVICE = "Lower --learning_rate or --clip_value (or check the data) and train into a new --model_dir"


def _kept(last_checkpoint):
    if last_checkpoint:
        return f"The last good checkpoint, {last_checkpoint}, is kept (it can be evaluated and exported)."
    return "No checkpoint had been saved yet."


class HubWatch:
    """Warns once when the attention has collapsed onto a hub for `windows` log windows
    in a row: most of each batch's weight (`top3_weight_share` > `share`) on 3
    candidates, while the plain path learns (its accuracy `margin` above the prototype
    path's). The prototype path then stays near chance: the label signal is too weak to
    break the hub (heavy label noise), and more steps will not help."""

    def __init__(self, windows: int = 5, share: float = 0.8, margin: float = 0.1, report=print, after_step: int = 0):
        self.windows, self.share, self.margin, self.report = windows, share, margin, report
        self.after_step = after_step  # Steps before it train the plain path alone (warm-up).
        self.streak, self.warned = 0, False

    def check(self, step: int, scalars: dict) -> None:
        if "top3_weight_share" not in scalars or self.warned or step <= self.after_step:
            return
        collapsed = scalars["top3_weight_share"] > self.share and (
            scalars["plain_accuracy"] - scalars["prototype_accuracy"] > self.margin
        )
        self.streak = self.streak + 1 if collapsed else 0
        if self.streak >= self.windows:
            self.warned = True
            self.report(
                f"warning: at step {step} the attention has collapsed onto a few candidates for "
                f"{self.windows} log windows ({100 * scalars['top3_weight_share']:.0f} % of each batch's "
                f"weight on 3 of them; prototype accuracy {scalars['prototype_accuracy']:.3f}, plain path "
                f"{scalars['plain_accuracy']:.3f}). The prototype path is unlikely to recover; see docs/training.md, "
                '"Attention hubs".'
            )
