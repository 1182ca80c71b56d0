import numpy as np
import pytest
import tensorflow as tf
from references import sparsemax_bisection

from proto_tf import sparsemax


def _random_rows(rng, rows=3000, width=40):
    """Rows whose scales range from near-uniform to one dominant logit, so that the
    support takes every size from 1 to `width`."""
    scales = np.logspace(-3, 2.5, rows)[:, None]
    return rng.normal(size=(rows, width)) * scales


def test_matches_reference_on_random_rows_with_every_support_size():
    rng = np.random.default_rng(0)
    logits = _random_rows(rng).astype(np.float32)  # The reference sees the same inputs.
    expected = sparsemax_bisection(logits)
    got = sparsemax(tf.constant(logits)).numpy()
    # Logits reach ~1e3, where one float32 ulp is 6e-5: allow about one ulp.
    np.testing.assert_allclose(got, expected, atol=6e-5)
    np.testing.assert_allclose(got[:1000], expected[:1000], atol=1e-6)  # Small logits.
    support_sizes = set((expected > 0).sum(-1))
    assert support_sizes == set(range(1, 41))
    assert (got >= 0).all()
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-4)


def test_ties_and_masked_entries():
    rng = np.random.default_rng(1)
    logits = rng.integers(-3, 3, size=(2000, 12)).astype(np.float64) / 4  # Many ties.
    logits[rng.random(logits.shape) < 0.3] = -np.inf
    logits[:, 0] = np.maximum(logits[:, 0], -0.5)  # Keep one finite entry per row.
    got = sparsemax(tf.constant(logits, tf.float32)).numpy()
    np.testing.assert_allclose(got, sparsemax_bisection(logits), atol=1e-6)
    assert (got[np.isinf(logits)] == 0).all()
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)


def test_known_values_where_keras_sparsemax_fails():
    # keras.ops.sparsemax (<= 3.15.1) returns zeros here; the exact answer is tau = 0.0667.
    np.testing.assert_allclose(sparsemax([0.5, 0.4, 0.3]).numpy(), [13 / 30, 10 / 30, 7 / 30], atol=1e-6)
    np.testing.assert_allclose(sparsemax([3.0, 1.0, 0.0]).numpy(), [1.0, 0.0, 0.0])


def test_fully_masked_row_is_zero_with_finite_gradient():
    logits = tf.Variable([[-np.inf] * 4, [0.0, -np.inf, 1.0, 0.5]], dtype=tf.float32)
    with tf.GradientTape() as tape:
        out = sparsemax(logits)
        loss = tf.reduce_sum(out * [[1.0, 2.0, 3.0, 4.0]])
    grad = tape.gradient(loss, logits).numpy()
    np.testing.assert_array_equal(out.numpy()[0], 0.0)
    np.testing.assert_allclose(out.numpy()[1], [0.0, 0.0, 0.75, 0.25], atol=1e-6)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[0], 0.0)


def test_gradient_matches_finite_differences_of_reference():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50, 7)) * 2
    upstream = rng.normal(size=logits.shape)
    x = tf.Variable(logits, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sparsemax(x) * upstream)
    got = tape.gradient(loss, x).numpy()

    step = 1e-6
    numeric = np.zeros_like(logits)
    for j in range(logits.shape[1]):
        delta = np.zeros_like(logits)
        delta[:, j] = step
        plus = (sparsemax_bisection(logits + delta) * upstream).sum(-1)
        minus = (sparsemax_bisection(logits - delta) * upstream).sum(-1)
        numeric[:, j] = (plus - minus) / (2 * step)
    np.testing.assert_allclose(got, numeric, atol=2e-3)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_inputs_keep_their_dtype(dtype):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(64, 300)).astype(np.float32)
    rounded = tf.cast(tf.constant(logits), dtype)
    got = sparsemax(rounded)
    assert got.dtype == dtype
    expected = sparsemax_bisection(tf.cast(rounded, tf.float64).numpy())
    np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), expected, atol=1e-2)


def test_other_axis_equals_transposed_last_axis():
    rng = np.random.default_rng(4)
    logits = tf.constant(rng.normal(size=(3, 5, 6)), tf.float32)
    np.testing.assert_allclose(
        sparsemax(logits, axis=1).numpy(),
        np.transpose(sparsemax(tf.transpose(logits, [0, 2, 1])).numpy(), [0, 2, 1]),
        atol=1e-7,
    )


def test_row_of_a_million_logits():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 1_000_000)) * 3
    got = sparsemax(tf.constant(logits, tf.float32)).numpy()
    expected = sparsemax_bisection(logits)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-4)
    assert ((got > 0).sum(-1) < 1000).all()


def test_rejects_bad_inputs():
    with pytest.raises(TypeError, match="floating"):
        sparsemax(tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="rank"):
        sparsemax(tf.constant(1.0))
    with pytest.raises(ValueError, match="axis=2"):
        sparsemax(tf.zeros([2, 3]), axis=2)


def _call(logits, mode, top_k):
    """sparsemax of `logits` as a user would call it: eagerly, inside a tf.function
    of known or unknown width, or compiled by XLA (known or unknown width)."""
    return _in_mode(lambda z: sparsemax(z, top_k=top_k), mode)(tf.constant(logits)).numpy()


def _in_mode(fn, mode):
    """`fn` run eagerly, as a tf.function of known or unknown width, or compiled by XLA."""
    width_spec = [tf.TensorSpec([None, None], tf.float32)]
    calls = {
        "eager": lambda: fn,
        "graph": lambda: tf.function(fn),
        "graph_unknown_width": lambda: tf.function(fn, input_signature=width_spec),
        "xla": lambda: tf.function(fn, jit_compile=True),
        "xla_unknown_width": lambda: tf.function(fn, jit_compile=True, input_signature=width_spec),
    }
    return calls[mode]()


MODES = ["eager", "graph", "graph_unknown_width", "xla", "xla_unknown_width"]


def _assert_same_as_full_sort(fast, full):
    # The same support (so the same gradient), and values equal up to float32
    # rounding of the threshold's sum (XLA's form sums in another order than the
    # sort's cumulative sum).
    np.testing.assert_array_equal(fast > 0, full > 0)
    np.testing.assert_allclose(fast, full, rtol=0, atol=2e-7)


def _mixed_rows(rng, width=300):
    """Random rows with every support size, and rows built against the fast path."""
    random_rows = _random_rows(rng, rows=500, width=width)
    # Near-uniform rows put almost every logit in the support.
    uniform_rows = 1.0 + 1e-4 * rng.normal(size=(20, width))
    # A plateau of ten equal logits: the support ends inside a run of ties.
    tied_rows = np.zeros((20, width))
    tied_rows[:, :10] = 0.1
    tied_rows[:, 10:] = -0.5
    masked_rows = random_rows[:20].copy()
    masked_rows[:, ::3] = -np.inf
    masked_rows[0] = -np.inf
    return np.concatenate([random_rows, uniform_rows, tied_rows, masked_rows]).astype(np.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("top_k", [1, 64])
def test_default_path_equals_full_sort_on_random_and_adversarial_rows(mode, top_k):
    logits = _mixed_rows(np.random.default_rng(6))
    full = sparsemax(tf.constant(logits), top_k=None).numpy()
    _assert_same_as_full_sort(_call(logits, mode, top_k), full)
    np.testing.assert_allclose(full[520:540], sparsemax_bisection(logits[520:540]), atol=1e-7)
    assert ((full[500:520] > 0).sum(-1) > 250).all()  # Supports of most of the row.


def test_graph_paths_equal_the_full_sort_bit_for_bit():
    # Outside XLA the fast path sorts the few entries that can be in the support:
    # the same arithmetic as the full sort.
    logits = _mixed_rows(np.random.default_rng(12))
    wide = _adversarial_rows(np.random.default_rng(12), 20000)
    for rows in (logits, wide):
        full = sparsemax(tf.constant(rows), top_k=None).numpy()
        for mode in ("eager", "graph", "graph_unknown_width"):
            np.testing.assert_array_equal(_call(rows, mode, 4), full)


# 200 wide: the rows as they are; 10000 wide: cut to blocks first.
@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("seed, shape, scale", [(7, (30, 200), 3.0), (11, (4, 10000), 3.0), (13, (8, 3000), 0.01)])
def test_default_gradient_equals_full_sort_gradient(mode, seed, shape, scale):
    # scale 0.01: supports of hundreds of entries, finished by Michelot's iteration.
    rng = np.random.default_rng(seed)
    x = tf.Variable(rng.normal(size=shape) * scale, dtype=tf.float32)
    upstream = tf.constant(rng.normal(size=shape), tf.float32)

    def gradient(top_k):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(sparsemax(x, top_k=top_k) * upstream)
        return tape.gradient(loss, x)

    compiled = {"eager": gradient, "graph": tf.function(gradient), "xla": tf.function(gradient, jit_compile=True)}[mode]
    # Against the full sort in the same mode (XLA fuses the gradient's mean in its own
    # order); equal supports make the gradients equal bit for bit.
    np.testing.assert_array_equal(compiled(64).numpy(), compiled(None).numpy())
    np.testing.assert_allclose(compiled(64).numpy(), gradient(None).numpy(), atol=1e-7)
    assert np.abs(gradient(None).numpy()).sum() > 0


def _adversarial_rows(rng, width):
    """Rows built to stress the lower bound of the threshold (and its blocks)."""
    spread = rng.normal(size=width) * 3.0  # Ordinary: a support of a few logits.
    flat = 1.0 + 1e-4 * rng.normal(size=width)  # Every entry (and block) holds support.
    concentrated = rng.normal(size=width)
    concentrated[:50] = 20.0  # Fifty tied logits, all in the first block.
    scattered = rng.normal(size=width)
    scattered[:: width // 50] = 10.0  # Fifty tied logits, each in a different block.
    tied_at_threshold = np.full(width, -1.0)
    tied_at_threshold[[5, width // 7, width - 1]] = 0.5  # Support ends inside ties...
    tied_at_threshold[width // 3] = 1.5  # ...here the threshold is exactly 0.5.
    masked = rng.normal(size=width)
    masked[::3] = -np.inf
    fully_masked = np.full(width, -np.inf)
    exactly_flat = np.zeros(width)  # Every entry tied: the whole row is the support.
    return np.stack(
        [spread, flat, concentrated, scattered, tied_at_threshold, masked, fully_masked, exactly_flat]
    ).astype(np.float32)


# 3000 wide: the rows as they are; 20000 wide: cut to blocks first (the flat row
# needs every block, so that batch takes the whole-row branch).
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", [3000, 20000])
def test_default_path_equals_full_sort_on_adversarial_rows(mode, width):
    rng = np.random.default_rng(9)
    logits = _adversarial_rows(rng, width)
    full = sparsemax(tf.constant(logits), top_k=None).numpy()
    _assert_same_as_full_sort(_call(logits, mode, 64), full)
    # Without the flat rows, every row's support fits in the kept blocks.
    _assert_same_as_full_sort(_call(logits[[0, 2, 3, 4, 5, 6]], mode, 64), full[[0, 2, 3, 4, 5, 6]])
    # Independent reference (bisection) on the hand-built rows, and their supports.
    np.testing.assert_allclose(full[:6], sparsemax_bisection(logits[:6]), atol=1e-6)
    assert (full[1] > 0).sum() > width // 2 and (full[2] > 0).sum() == 50
    assert (full[3] > 0).sum() == 50 and np.flatnonzero(full[4]).tolist() == [width // 3]
    assert not full[6].any()
    np.testing.assert_allclose(full[7], 1.0 / width, rtol=1e-5)


def test_fast_path_on_higher_rank_and_other_axis():
    logits = np.random.default_rng(10).normal(size=(2, 3, 9000)).astype(np.float32)
    full = sparsemax(logits, top_k=None).numpy()
    _assert_same_as_full_sort(tf.function(lambda z: sparsemax(z, top_k=8))(logits).numpy(), full)
    moved = np.moveaxis(logits, -1, 1)
    _assert_same_as_full_sort(np.moveaxis(sparsemax(moved, axis=1).numpy(), 1, -1), full)


@pytest.mark.parametrize("top_k", [0, -1, 2.5, True])
def test_top_k_must_be_a_positive_integer_or_none(top_k):
    with pytest.raises(ValueError, match="top_k must be a positive integer or None"):
        sparsemax(tf.zeros([2, 3]), top_k=top_k)


def _reference_of_float32(logits):
    """The float64 reference of float32 `logits`, computed on rows shifted by their
    maximum (exact in float64), so that it keeps its precision at any offset."""
    z = np.asarray(logits, np.float32).astype(np.float64)
    finite_max = np.where(np.isfinite(z), z, -np.inf).max(axis=-1, keepdims=True)
    return sparsemax_bisection(z - np.where(np.isfinite(finite_max), finite_max, 0.0))


@pytest.mark.parametrize("mode", MODES)
def test_large_offsets_keep_the_answer(mode):
    # Shifting a row changes nothing in sparsemax; float32 must not lose the answer.
    # Each offset shifts rows of scale 1 and 30 (one batch: one trace per mode).
    rng = np.random.default_rng(12)
    rows = np.concatenate([rng.normal(size=(2, 1024)), rng.normal(size=(2, 1024)) * 30])
    offsets = np.array([0.0, 1e3, 1e6, 1e7, 1e12, 1e30, -1e30])
    logits = (rows[None] + offsets[:, None, None]).reshape(-1, 1024).astype(np.float32)
    got = _call(logits, mode, 64)
    np.testing.assert_allclose(got, _reference_of_float32(logits), atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_dominant_and_near_overflow_rows(mode):
    big = np.finfo(np.float32).max
    logits = np.array(
        [
            [1e8, 0, 0, 0],  # Was [0, 0, 0, 0]: the shift was added back before max(z - tau, 0).
            [big, big, 0, -big],  # Two equal maxima at the float32 limit; -big - big overflows.
            [-big, -big, -big, -big],  # A flat row at the lowest finite value.
            [big, -big, -np.inf, 0],
        ],
        np.float32,
    )
    expected = [[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25] * 4, [1, 0, 0, 0]]
    np.testing.assert_allclose(_call(logits, mode, 64), expected, atol=1e-7)
    np.testing.assert_allclose(_call(logits, mode, None if mode.startswith("xla") else 1), expected, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_nan_and_positive_infinity_rows_are_nan_on_every_path(mode):
    # One documented behaviour: a row holding NaN or +inf is NaN everywhere (values
    # and gradient); the other rows of the batch are untouched; -inf stays a mask.
    logits = np.array(
        [
            [0, np.nan, 0.8, 0.6],
            [0, np.inf, 0.8, 0.6],
            [np.inf, np.inf, 0, 0],
            [0.5, 0.4, 0.3, -np.inf],
            [np.nan, -np.inf, -np.inf, -np.inf],
        ],
        np.float32,
    )
    for top_k in (1, 64, None):
        got = _call(logits, mode, top_k)
        assert np.isnan(got[[0, 1, 2, 4]]).all(), (top_k, got)
        np.testing.assert_allclose(got[3], [13 / 30, 10 / 30, 7 / 30, 0], atol=1e-6)

    def gradient(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = tf.reduce_sum(sparsemax(z) * tf.constant([1.0, 2.0, 3.0, 4.0]))
        return tape.gradient(loss, z)

    grad = _in_mode(gradient, mode)(tf.constant(logits)).numpy()
    assert np.isnan(grad[[0, 1, 2, 4]]).all()
    assert np.isfinite(grad[3]).all()
    # On the support {0, 1, 2}: upstream minus its mean there (2), zero off it.
    np.testing.assert_allclose(grad[3], [-1, 0, 1, 0], atol=1e-6)


def _wide_special_rows(width):
    """The NaN/+inf, dominant and near-overflow rows of the tests above, padded to
    `width` with -inf (masked) and ordinary logits, so the long-row path sees them."""
    big = np.finfo(np.float32).max
    rng = np.random.default_rng(width)
    rows = np.concatenate([rng.normal(size=(4, width)), np.full((5, width), -np.inf)]).astype(np.float32)
    rows[0, width // 2] = np.nan
    rows[1, -1] = np.inf
    rows[4, :4] = [1e8, 0, 0, 0]
    rows[5, [3, width - 2]] = big
    rows[6, :] = -big
    rows[7, :3] = [big, -big, 0]
    rows[8, :3] = [0.5, 0.4, 0.3]
    return rows


# 300 wide: blocks of 15 (no padding); 20000: blocks of 125; 10007 (prime): padded.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", [300, 20000, 10007])
def test_special_rows_of_long_rows_on_every_path(mode, width):
    logits = _wide_special_rows(width)
    got = _call(logits, mode, 64)
    assert np.isnan(got[:2]).all()
    expected = np.zeros((9, width))
    expected[2:4] = sparsemax_bisection(logits[2:4].astype(np.float64))
    expected[4, 0] = 1.0
    expected[5, [3, width - 2]] = 0.5
    expected[6, :] = 1.0 / width
    expected[7, 0] = 1.0
    expected[8, :3] = [13 / 30, 10 / 30, 7 / 30]
    np.testing.assert_allclose(got[2:], expected[2:], atol=1e-6)
    if not mode.startswith("xla"):
        np.testing.assert_array_equal(got[2:], sparsemax(tf.constant(logits[2:]), top_k=None).numpy())

    def gradient(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = tf.reduce_sum(sparsemax(z) * tf.range(width, dtype=tf.float32)[None])
        return tape.gradient(loss, z)

    grad = _in_mode(gradient, mode)(tf.constant(logits)).numpy()
    assert np.isnan(grad[:2]).all() and np.isfinite(grad[2:]).all()
    # Row 8's support {0, 1, 2}: upstream 0, 1, 2 minus its mean there (1).
    np.testing.assert_allclose(grad[8, :4], [-1, 0, 1, 0], atol=1e-6)


# Views of a tensor write nothing; every other op with a row-sized output writes one.
_VIEW_OPS = {"Placeholder", "Reshape", "Identity", "IdentityN", "StatelessIf", "If", "Cast"}


@pytest.mark.parametrize(
    "width, written", [(65536, ["ScatterNd"]), (60000, ["ScatterNd"]), (65537, ["PadV2", "ScatterNd", "StridedSlice"])]
)
def test_the_long_row_path_writes_only_its_answer(width, written):
    # Over long rows the time of sparsemax is the row-sized tensors it writes (each
    # costs about a whole softmax): the default path writes the answer alone (plus a
    # padded copy and a cut where no block size near 128 divides the width). A change that
    # writes another (a cleaned or shifted copy of the logits) fails here, where a
    # timing would not.
    graph = tf.function(lambda z: sparsemax(z)).get_concrete_function(tf.TensorSpec([8, width])).graph
    row_sized = [
        op.type
        for op in graph.get_operations()
        if op.type not in _VIEW_OPS
        and any(t.shape.num_elements() and t.shape.num_elements() >= 8 * width for t in op.outputs)
    ]
    assert row_sized == written
