"""Block-wise reductions of long rows against their whole-row TensorFlow and NumPy
equivalents."""

import numpy as np
import pytest
import tensorflow as tf

from proto_tf import blockwise


def test_block_maxima_pads_the_last_block_with_minus_infinity():
    rows = tf.constant([[3.0, 1.0, 4.0, 1.0, 5.0], [-1.0, -2.0, -3.0, -4.0, -5.0]])
    blocks, maxima = blockwise.block_maxima(rows, block_size=2)
    np.testing.assert_array_equal(maxima.numpy(), [[3.0, 4.0, 5.0], [-1.0, -3.0, -5.0]])
    assert blocks.shape == (2, 3, 2) and blocks.numpy()[0, 2, 1] == -np.inf


def test_gather_blocks_returns_entries_with_their_original_columns():
    rows = np.arange(12, dtype=np.float32).reshape(2, 6)
    blocks, _ = blockwise.block_maxima(tf.constant(rows), block_size=2)
    entries, columns = blockwise.gather_blocks(blocks, tf.constant([[2, 0], [1, 1]]))
    np.testing.assert_array_equal(columns.numpy(), [[4, 5, 0, 1], [2, 3, 2, 3]])
    np.testing.assert_array_equal(entries.numpy(), np.take_along_axis(rows, columns.numpy(), 1))


@pytest.mark.parametrize("width", [100, 3000, 100_000])
def test_top_k_equals_whole_row_top_k(width):
    rng = np.random.default_rng(width)
    rows = rng.normal(size=(6, width)).astype(np.float32)
    rows[1, : width // 2] = rows[1].max() + 1  # Many tied maxima across blocks.
    rows[2, -7:] = 50.0  # The largest entries all in the last, padded block.
    values, indices = blockwise.top_k(tf.constant(rows), 5)
    expected = -np.sort(-rows, axis=1)[:, :5]
    np.testing.assert_array_equal(values.numpy(), expected)
    np.testing.assert_array_equal(np.take_along_axis(rows, indices.numpy(), 1), expected)
    assert len(set(indices.numpy()[1])) == 5  # Distinct positions, even among ties.
