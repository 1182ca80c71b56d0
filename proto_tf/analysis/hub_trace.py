"""The attention-hub diagnostic of finished runs, read back from their TensorBoard logs."""

import os

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from proto_tf.training.progress import TRAIN_TAGS

# The quantities of the trace, as (summary key, column title).
TRACE = (
    ("top3_weight_share", "top-3 weight share"),
    ("distinct_top_share", "distinct top share"),
    ("prototype_accuracy", "prototype acc. (train)"),
    ("plain_accuracy", "plain acc. (train)"),
)


def read_train_scalars(model_dir: str) -> dict[str, dict[int, float]]:
    """`{summary key: {step: value}}` of a run's training logs (`<model_dir>/logs/train`)."""
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(model_dir, "logs", "train"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    available = set(accumulator.Tags()["tensors"])
    return {
        key: {event.step: float(tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)}
        for key, tag in TRAIN_TAGS.items()
        if tag in available
    }


def hub_trace_table(model_dir: str, points: int = 10) -> str:
    """A Markdown table of the hub diagnostic at `points` evenly spaced logged steps:
    each value is the mean over the log windows since the previous row."""
    scalars = read_train_scalars(model_dir)
    if "top3_weight_share" not in scalars:
        return f"{model_dir}: no attention in its logs (a baseline run, or logs from before the diagnostic)."
    steps = sorted(scalars["top3_weight_share"])
    edges = np.linspace(0, len(steps), min(points, len(steps)) + 1).astype(int)
    lines = ["| steps | " + " | ".join(title for _, title in TRACE) + " |", "| --- |" + " --- |" * len(TRACE)]
    for low, high in zip(edges[:-1], edges[1:]):
        window = steps[low:high]
        cells = [f"{np.mean([scalars[key][s] for s in window if s in scalars[key]]):.3f}" for key, _ in TRACE]
        lines.append(f"| {window[0]}–{window[-1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
