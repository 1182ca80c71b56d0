"""Label noise of Table 3: a fraction of labels replaced by a different class."""

import numpy as np

from proto_tf.data.common import Split


def corrupt_labels(labels: np.ndarray, rate: float, num_classes: int, seed: int = 0) -> np.ndarray:
    """Replaces exactly `round(rate * N)` labels, chosen at random, each by a class
    drawn uniformly from the `num_classes - 1` other classes (Appendix A.1.3)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label noise rate must be in [0, 1], got {rate}.")
    labels = np.asarray(labels, np.int32)
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    chosen = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    # Adding an offset in [1, C-1] modulo C gives each other class with equal chance.
    offsets = rng.integers(1, num_classes, size=len(chosen))
    noisy[chosen] = (labels[chosen] + offsets) % num_classes
    return noisy


def with_label_noise(split: Split, rate: float, num_classes: int, seed: int = 0) -> Split:
    """The split with corrupted labels (inputs and indices unchanged)."""
    return Split(split.inputs, corrupt_labels(split.labels, rate, num_classes, seed), split.indices)
