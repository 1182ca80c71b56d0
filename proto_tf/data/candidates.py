"""Per-step training batches with a fresh candidate database, and fixed inference databases.

Every training step `s` is a pure function of `(seed, s)`: its batch comes from a
per-epoch permutation of the training split, its candidate database is a uniform
sample of `database_size` distinct training examples drawn independently of the
batch, and both get the training augmentation. A resumed run therefore sees exactly
the data an uninterrupted run would, and any number of replicas see the same global
step (each takes its contiguous slice of the batch and of the database).
"""

import warnings
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from proto_tf.data.common import Split


def _seed_pair(seed, step, stream):
    """An independent stateless seed for each (seed, step, stream)."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, stream)


def sample_without_replacement(population: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct indices in `[0, population)`, uniformly at random."""
    keys = tf.random.stateless_uniform([population], seed)
    return tf.math.top_k(keys, k=count, sorted=False).indices


def _balanced_sample(class_positions, counts, seed):
    """A shuffled sample with `counts[c]` distinct examples of each class c."""
    parts = []
    for label, (positions, size) in enumerate(zip(class_positions, counts)):
        chosen = sample_without_replacement(len(positions), size, tf.random.experimental.stateless_fold_in(seed, label))
        parts.append(tf.gather(positions, chosen))
    return tf.random.experimental.stateless_shuffle(tf.concat(parts, 0), seed)


def training_batches(
    split: Split,
    augment: Callable,
    batch_size: int,
    database_size: int,
    seed: int = 0,
    start_step: int = 0,
    num_steps: int | None = None,
    class_shares: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of training steps, starting at `start_step`.

    Each element is a dict: `inputs [B, ...]`, `labels [B]`, `candidate_inputs
    [D, ...]`, `candidate_labels [D]` (model inputs after augmentation).

    Args:
      split: the training `Split` (stored inputs).
      augment: `augment(stored_inputs, seed) -> model inputs`.
      batch_size, database_size: B and D of the global step.
      seed: the run's seed.
      start_step: first step to produce (a resumed run passes its restored step).
      num_steps: how many steps; None for unbounded.
      class_shares: optional per-class shares (e.g. ISIC's (0.6, 0.4)) for
        class-balanced batches and databases; None samples uniformly.
    """
    population = len(split)
    if database_size > population or batch_size > population:
        raise ValueError(
            f"batch_size ({batch_size}) and database_size ({database_size}) cannot exceed "
            f"the training split's {population} examples."
        )
    inputs = tf.constant(split.inputs)
    labels = tf.constant(split.labels)
    steps_per_epoch = population // batch_size
    class_positions = None
    if class_shares is not None:
        class_positions = [
            tf.constant(np.flatnonzero(split.labels == label), tf.int32) for label in range(len(class_shares))
        ]
        available = [int(positions.shape[0]) for positions in class_positions]
        batch_counts = capped_class_counts(batch_size, class_shares, available)
        database_counts = capped_class_counts(database_size, class_shares, available)

    def make_step(step):
        if class_positions is None:
            epoch, position = step // steps_per_epoch, step % steps_per_epoch
            permutation = tf.random.experimental.stateless_shuffle(tf.range(population), _seed_pair(seed, epoch, 0))
            batch = permutation[position * batch_size : (position + 1) * batch_size]
            candidates = sample_without_replacement(population, database_size, _seed_pair(seed, step, 1))
        else:
            batch = _balanced_sample(class_positions, batch_counts, _seed_pair(seed, step, 0))
            candidates = _balanced_sample(class_positions, database_counts, _seed_pair(seed, step, 1))
        return {
            "inputs": augment(tf.gather(inputs, batch), _seed_pair(seed, step, 2)),
            "labels": tf.gather(labels, batch),
            "candidate_inputs": augment(tf.gather(inputs, candidates), _seed_pair(seed, step, 3)),
            "candidate_labels": tf.gather(labels, candidates),
        }

    stop = None if num_steps is None else start_step + num_steps
    steps = tf.data.Dataset.range(start_step, stop if stop is not None else np.iinfo(np.int64).max)
    return steps.map(make_step, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def inference_database(split: Split, size: int, seed: int = 0, class_shares: Sequence[float] | None = None) -> Split:
    """A fixed-seed sample of `size` distinct training examples (all of them if `size`
    is None or too large), stored form, keeping each one's index in the training file.

    With `class_shares` the sample is class-balanced; a class with fewer examples than
    its share asks for (ISIC's 1457 melanoma images after the validation carve, where
    0.4 of 4096 asks for 1638) gives all it has, the other classes fill the rest, and
    a warning states the shares obtained. Prototypes are never duplicated.
    """
    if size is None or size >= len(split):
        return split
    rng = np.random.default_rng(seed)
    if class_shares is None:
        positions = rng.choice(len(split), size, replace=False)
    else:
        available = [int((split.labels == label).sum()) for label in range(len(class_shares))]
        counts = capped_class_counts(size, class_shares, available)
        if any(count < round(share * size) for count, share in zip(counts, class_shares)):
            warnings.warn(
                f"inference database of {size}: a class has fewer examples than its share "
                f"{tuple(class_shares)} asks for; it holds {counts} per class "
                f"(shares {tuple(round(c / size, 3) for c in counts)}), all of the scarce class.",
                stacklevel=2,
            )
        positions = np.concatenate(
            [
                rng.choice(np.flatnonzero(split.labels == label), count, replace=False)
                for label, count in enumerate(counts)
            ]
        )
    return split.take(np.sort(positions))


def capped_class_counts(size: int, shares: Sequence[float], available: Sequence[int]) -> np.ndarray:
    """Per-class counts summing to `size`: `round(share * size)` each (the last class
    takes the remainder), capped by what each class has, the shortfall given to the
    classes that have more, in class order."""
    counts = [int(round(share * size)) for share in shares[:-1]]
    counts.append(size - sum(counts))
    counts = [min(count, have) for count, have in zip(counts, available)]
    for label, have in enumerate(available):
        extra = min(size - sum(counts), have - counts[label])
        counts[label] += max(extra, 0)
    return counts


def evaluation_batches(split: Split, preprocess: Callable, batch_size: int = 512) -> tf.data.Dataset:
    """`(model inputs, labels)` batches of a split, without augmentation, in order."""
    dataset = tf.data.Dataset.from_tensor_slices((split.inputs, split.labels)).batch(batch_size)
    return dataset.map(
        lambda inputs, labels: (preprocess(inputs), labels), num_parallel_calls=tf.data.AUTOTUNE
    ).prefetch(tf.data.AUTOTUNE)
