import numpy as np
import pytest
import tensorflow as tf

from proto_tf.data import Split, corrupt_labels, inference_database, training_batches
from proto_tf.data.candidates import capped_class_counts
from proto_tf.data.common import carve_validation
from proto_tf.data.images import ImageAugmentation


def _indexed_split(size=500, num_classes=5):
    """A split whose input row i is the value i, so every sample can be traced back."""
    return Split(
        np.arange(size, dtype=np.float32)[:, None],
        np.arange(size) % num_classes,
        np.arange(size) + 10_000,
    )


def _identity(inputs, seed):
    return inputs


def _steps(split, count, **kwargs):
    kwargs = {"batch_size": 32, "database_size": 64, "seed": 7, **kwargs}
    dataset = training_batches(split, _identity, num_steps=count, **kwargs)
    return [{k: v.numpy() for k, v in step.items()} for step in dataset]


def test_candidates_are_fresh_distinct_and_from_the_training_split():
    full = _indexed_split()
    train, validation = carve_validation(full, 0.2, seed=0)
    steps = _steps(train, 3)
    train_values = set(train.inputs[:, 0])
    for step in steps:
        candidates = step["candidate_inputs"][:, 0]
        assert len(set(candidates)) == 64  # No repeats within a step.
        assert set(candidates) <= train_values
        assert not set(candidates) & set(validation.inputs[:, 0])
        np.testing.assert_array_equal(step["candidate_labels"], candidates.astype(int) % 5)
        np.testing.assert_array_equal(step["labels"], step["inputs"][:, 0].astype(int) % 5)
    assert set(steps[0]["candidate_inputs"][:, 0]) != set(steps[1]["candidate_inputs"][:, 0])


def test_batches_cover_an_epoch_once_and_resume_exactly():
    split = _indexed_split(320)
    steps = _steps(split, 12, batch_size=32, database_size=16)
    first_epoch = np.concatenate([s["inputs"][:, 0] for s in steps[:10]])
    assert sorted(first_epoch) == list(range(320))  # A permutation per epoch.
    resumed = training_batches(split, _identity, 32, 16, seed=7, start_step=11, num_steps=1)
    step = next(iter(resumed))
    np.testing.assert_array_equal(step["inputs"].numpy(), steps[11]["inputs"])
    np.testing.assert_array_equal(step["candidate_inputs"].numpy(), steps[11]["candidate_inputs"])


def test_candidates_are_uniform_over_the_split():
    split = _indexed_split(100)
    steps = _steps(split, 300, batch_size=10, database_size=20)
    counts = np.bincount(np.concatenate([s["candidate_inputs"][:, 0] for s in steps]).astype(int), minlength=100)
    # Each example is drawn with probability 0.2 per step: 60 expected, sd ~6.9.
    assert abs(counts.mean() - 60) < 1e-9 and counts.min() > 35 and counts.max() < 85


def test_class_balanced_sampling_keeps_the_shares():
    labels = (np.arange(1000) % 10 == 0).astype(np.int32)  # 10 % positives.
    split = Split(np.arange(1000, dtype=np.float32)[:, None], labels, np.arange(1000))
    steps = _steps(split, 20, batch_size=50, database_size=60, class_shares=(0.6, 0.4))
    for step in steps:
        assert step["labels"].sum() == 20 and step["candidate_labels"].sum() == 24
        assert len(set(step["candidate_inputs"][:, 0])) == 60
    database = inference_database(split, 100, seed=0, class_shares=(0.6, 0.4))
    assert database.labels.sum() == 40 and len(set(database.indices)) == 100


def test_inference_database_is_fixed_and_keeps_source_indices():
    split = _indexed_split(500)
    first, second = inference_database(split, 50, seed=3), inference_database(split, 50, seed=3)
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.indices - 10_000, first.inputs[:, 0])
    assert inference_database(split, 10_000).inputs.shape[0] == 500


def test_label_noise_rate_and_classes():
    labels = np.arange(10_000) % 10
    noisy = corrupt_labels(labels, 0.4, 10, seed=1)
    changed = noisy != labels
    assert changed.mean() == 0.4  # Exactly round(rate * N), each to a different class.
    new_classes = np.bincount((noisy[changed] - labels[changed]) % 10, minlength=10)
    assert new_classes[0] == 0
    assert new_classes[1:].min() > 0.8 * new_classes[1:].mean()  # Uniform over the others.
    np.testing.assert_array_equal(corrupt_labels(labels, 0.4, 10, seed=1), noisy)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_labels(labels, 1.5, 10)


def test_crop_and_flip_stay_within_bounds_and_standardize():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 8, 8, 1)).astype(np.uint8)
    augmentation = ImageAugmentation(pad=2, flip_left_right=True)
    out = augmentation.augment(images, tf.constant([1, 2])).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    # Undo the standardisation through the padded raw image: each output must be a
    # window at offsets in [0, 4] of the zero-padded image, possibly mirrored.
    flipped_any, shifted_any = False, False
    for image, result in zip(images.astype(np.float32), out):
        padded = np.pad(image, [(2, 2), (2, 2), (0, 0)])
        matches = []
        for dy in range(5):
            for dx in range(5):
                window = padded[dy : dy + 8, dx : dx + 8]
                for flip in (False, True):
                    candidate = window[:, ::-1] if flip else window
                    standardized = (candidate - candidate.mean()) / max(candidate.std(), 1 / 8)
                    if np.allclose(standardized, result, atol=1e-3):
                        matches.append((dy, dx, flip))
        assert matches, "output is not a crop of the padded input"
        flipped_any |= any(m[2] for m in matches)
        shifted_any |= any(m[:2] != (2, 2) for m in matches)
    assert flipped_any and shifted_any
    np.testing.assert_array_equal(augmentation.augment(images, tf.constant([1, 2])).numpy(), out)
    evaluation = augmentation.preprocess(images).numpy()
    expected = images.astype(np.float32)
    expected = (expected - expected.mean(axis=(1, 2, 3), keepdims=True)) / expected.std(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(evaluation, expected, atol=1e-4)


def test_full_size_isic_inference_database_builds_at_the_real_class_counts():
    # Appendix A.1.5: 13,511 benign and 1,611 melanoma images for training and validation.
    labels = np.r_[np.zeros(13511, np.int32), np.ones(1611, np.int32)]
    split = Split(np.zeros([len(labels), 1], np.uint8), labels, np.arange(len(labels)))
    train, _ = carve_validation(split, 0.1, seed=0)
    melanoma = int(train.labels.sum())
    assert melanoma < round(0.4 * 4096)  # The paper's shares cannot be met.
    with pytest.warns(UserWarning, match=rf"holds \[{4096 - melanoma}, {melanoma}\] per class"):
        database = inference_database(train, 4096, seed=0, class_shares=(0.6, 0.4))
    assert len(database) == 4096 and len(set(database.indices)) == 4096
    assert database.labels.sum() == melanoma  # Every melanoma image is a prototype.
    assert capped_class_counts(10, (0.6, 0.4), [100, 2]) == [8, 2]
    assert capped_class_counts(10, (0.6, 0.4), [3, 100]) == [3, 7]
