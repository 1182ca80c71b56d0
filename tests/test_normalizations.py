"""Every attention normalisation against an independent float64 reference (bisection on
its defining equation, `references.NORMALIZATION_REFERENCES`), and 1.5-entmax's values
by hand, gradient by finite differences, fast path and XLA form."""

import numpy as np
import pytest
import tensorflow as tf
from references import NORMALIZATION_REFERENCES, entmax15_bisection

from proto_tf import normalizations
from proto_tf.normalizations.entmax15 import entmax15

NAMES = normalizations.names()


def _rows(seed=0):
    """Rows of many kinds: narrow and wide supports, short and long rows (past the fast
    paths' top_k), ties, masked entries, a fully masked row and large offsets."""
    rng = np.random.default_rng(seed)
    rows = {f"scale_{scale}": rng.normal(size=(6, 300)) * scale for scale in (0.01, 0.3, 3.0, 30.0)}
    rows["long_wide"] = rng.normal(size=(3, 3000)) * 0.05
    rows["ties"] = np.tile(rng.normal(size=(4, 5)), (1, 20))
    masked = rng.normal(size=(4, 50))
    masked[:, ::3] = -np.inf
    masked[1] = -np.inf  # A fully masked row gives zeros.
    rows["masked"] = masked
    rows["offset"] = rng.normal(size=(3, 40)) + 1e4
    return rows


def test_every_normalisation_has_an_independent_reference():
    assert set(NAMES) == set(NORMALIZATION_REFERENCES) and {"softmax", "sparsemax", "entmax15"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_dense_weights_and_the_float64_reference_match_the_independent_one(name):
    normalization = normalizations.get(name)
    for kind, logits in _rows().items():
        expected = NORMALIZATION_REFERENCES[name](logits)
        # float32 logits round by eps * |logit|; the weights inherit it.
        tolerance = 1e-6 + 4 * np.finfo(np.float32).eps * np.abs(logits[np.isfinite(logits)]).max()
        for top_k in (None, 8, 64):
            got = normalization.dense(tf.constant(logits, tf.float32), top_k).numpy()
            np.testing.assert_allclose(got, expected, atol=tolerance, err_msg=f"{kind}, top_k={top_k}")
        np.testing.assert_allclose(normalization.reference(logits), expected, atol=1e-9, err_msg=kind)


def test_entmax15_by_hand():
    # x = l / 2 = (0.5, 0, -0.5). Support {1, 2}: mean 0.25, sum of squares 0.25, so
    # tau = 0.25 - sqrt((1 - (0.25 - 0.5 * 0.25)) / 2) = 0.25 - sqrt(0.4375); the third
    # entry, -0.5, is below tau (-0.4114), and the first two weigh (x - tau)^2.
    tau = 0.25 - np.sqrt(0.4375)
    expected = [(0.5 - tau) ** 2, tau**2, 0.0]
    np.testing.assert_allclose(entmax15([[1.0, 0.0, -1.0]]).numpy()[0], expected, atol=1e-6)
    np.testing.assert_allclose(sum(expected), 1.0, atol=1e-12)
    # One logit far above the rest takes all the weight; equal logits share it.
    np.testing.assert_allclose(entmax15([[5.0, 0.0, 0.0]]).numpy()[0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(entmax15([[2.0, 2.0, 2.0, 2.0]]).numpy()[0], [0.25] * 4, atol=1e-6)


def test_entmax15_gradient_matches_finite_differences_of_the_float64_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 12)) * 2
    upstream = rng.normal(size=(3, 12))
    z = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(entmax15(z) * upstream)
    got = tape.gradient(loss, z).numpy()
    h = 1e-6
    expected = np.zeros_like(logits)
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            up, down = logits.copy(), logits.copy()
            up[i, j] += h
            down[i, j] -= h
            expected[i, j] = ((entmax15_bisection(up) - entmax15_bisection(down))[i] * upstream[i]).sum() / (2 * h)
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_entmax15_broken_rows_are_nan_and_masked_rows_zero():
    logits = tf.constant([[1.0, np.nan, 0.0], [1.0, np.inf, 0.0], [-np.inf] * 3, [0.0, -np.inf, 1.0]])
    out = entmax15(logits).numpy()
    assert np.isnan(out[:2]).all()
    np.testing.assert_array_equal(out[2], 0.0)
    np.testing.assert_allclose(out[3], entmax15_bisection([[0.0, -np.inf, 1.0]])[0], atol=1e-6)


def test_entmax15_fast_path_is_the_full_sorts_answer_bit_for_bit_and_xla_agrees():
    rng = np.random.default_rng(2)
    for scale in (5.0, 0.01):  # Supports within the top 16, and far wider (the sort).
        logits = tf.constant(rng.normal(size=(8, 500)) * scale, tf.float32)
        full = entmax15(logits, top_k=None).numpy()
        np.testing.assert_array_equal(entmax15(logits, top_k=16).numpy(), full)
        compiled = tf.function(lambda z: entmax15(z, top_k=16), jit_compile=True)
        np.testing.assert_allclose(compiled(logits).numpy(), full, atol=1e-6)
    assert (full > 0).sum(-1).min() > 16  # The wide case is past the top 16.


def test_an_unknown_name_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown attention normalization 'entmax'; valid: .*entmax15"):
        normalizations.get("entmax")
