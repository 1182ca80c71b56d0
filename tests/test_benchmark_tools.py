"""The benchmark's own tools: the bare step is the trainer's step without the trainer,
the authors' graph gets the tf.contrib functions it had, and profiles read real traces."""

import numpy as np
import pytest
import tensorflow as tf
from references import layer_norm, sparsemax_bisection
from run_helpers import tiny_config

from proto_tf.analysis import authors_graph, serving_benchmarks, step_profile, training_benchmarks
from proto_tf.training.run_store import load_experiment_dataset
from proto_tf.training.trainer import Trainer


def test_bare_step_takes_the_trainers_steps(tmp_path):
    """Same initial weights, batches, alpha, loss and update: the bare step's losses are
    the trainer's, step after step (so the ratio between them is of overhead only)."""
    config = tiny_config(tmp_path, "bare", train_steps=4)
    dataset = load_experiment_dataset(config)
    trainer = training_benchmarks.trainer_step(config, dataset, 4, str(tmp_path / "trainer"))
    bare = training_benchmarks.bare_step(config, dataset, 4)
    trainer_losses = [trainer() for _ in range(4)]
    bare_losses = [bare() for _ in range(4)]
    assert len(set(bare_losses)) == 4  # The weights moved: each step's loss differs.
    np.testing.assert_allclose(bare_losses, trainer_losses, rtol=1e-6)


def test_contrib_sparsemax_of_the_authors_graph_is_sparsemax():
    logits = np.random.default_rng(0).normal(scale=2.0, size=(6, 40)).astype(np.float32)
    got = authors_graph._sort_sparsemax(tf.compat.v1, tf.constant(logits)).numpy()
    np.testing.assert_allclose(got, sparsemax_bisection(logits), atol=1e-5)


def test_contrib_layer_norm_is_layer_norm_and_shares_its_variables_under_reuse():
    tf1 = tf.compat.v1
    inputs = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    with tf.Graph().as_default():
        authors_graph.install_contrib(tf1)
        outputs = []
        for reuse in (False, True):
            with tf1.variable_scope("encoder", reuse=reuse):
                outputs.append(tf1.contrib.layers.layer_norm(tf.constant(inputs)))
                tf1.contrib.layers.layer_norm(tf.constant(inputs))  # A second one: LayerNorm_1.
        names = sorted(v.name for v in tf1.global_variables())
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            first, second = session.run(outputs)
    assert names == [
        "encoder/LayerNorm/beta:0",
        "encoder/LayerNorm/gamma:0",
        "encoder/LayerNorm_1/beta:0",
        "encoder/LayerNorm_1/gamma:0",
    ]
    expected = layer_norm(inputs, np.ones(6), np.zeros(6), epsilon=1e-12)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    np.testing.assert_array_equal(first, second)


def test_contrib_l2_regularizer_is_half_the_squared_norm_times_scale():
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        authors_graph.install_contrib(tf1)
        penalty = tf1.contrib.layers.l2_regularizer(0.5)(tf.constant([3.0, 4.0]))
        with tf1.Session() as session:
            assert session.run(penalty) == pytest.approx(0.5 * 25.0 / 2)


def test_kernel_milliseconds_reads_the_ops_of_a_trace():
    matrix = tf.random.normal([384, 384])
    step = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(matrix, matrix)))
    step()
    profile = step_profile.profile_steps(step, 3)
    assert profile["MatMul"] > 0 and "Sum" in profile
    assert list(profile.values()) == sorted(profile.values(), reverse=True)
    assert not any(name.startswith(step_profile._NOT_KERNELS) for name in profile)


def test_resource_use_counts_the_pages_a_step_maps_in():
    """80 MB written per call is above malloc's mmap threshold (32 MB at most): it is
    mapped in again at every call, at least 40 faults (2 MB huge pages; 20,000 of
    4 KB without them), where a step that allocates nothing maps nothing in."""
    allocating = step_profile.resource_use(lambda: np.ones(10_000_000).sum(), 3)
    idle = step_profile.resource_use(lambda: None, 3)
    assert allocating["page_faults"] >= 38 and idle["page_faults"] < allocating["page_faults"]
    assert allocating["seconds"] > idle["seconds"] >= 0 and allocating["system_seconds"] >= 0


@pytest.mark.slow
def test_the_scale_suites_exports_store_the_database_once_and_are_served_in_their_own_process(tmp_path):
    config = tiny_config(tmp_path, "tiny_run")
    Trainer(config, verbose=False).train()
    variants = (("sparsemax", "float32"), ("sparsemax", "float16"))
    rows = list(
        serving_benchmarks.export_latencies(config.model_dir, [50000], [1, 3], str(tmp_path), 1000, variants=variants)
    )
    assert [(r["key_dtype"], r["batch_size"]) for r in rows] == [
        ("float32", 1),
        ("float32", 3),
        ("float16", 1),
        ("float16", 3),
    ]
    for row in rows:
        # By hand: 16-d keys (4 or 2 bytes), 8-d float32 values, int32 labels, int64 indices.
        key_bytes = 2 if row["key_dtype"] == "float16" else 4
        assert row["database_bytes"] == 50000 * (16 * key_bytes + 8 * 4 + 4 + 8)
        # Stored once: a second copy of the database would make the export more than twice its bytes.
        assert row["database_bytes"] < row["export_bytes"] < 2 * row["database_bytes"]
        assert 0 < row["rss_after_load_bytes"] <= row["peak_rss_bytes"]
        assert row["seconds"] > 0
    sizes = {r["key_dtype"]: r["export_bytes"] for r in rows if r["attention"] == "sparsemax"}
    assert sizes["float32"] - sizes["float16"] == pytest.approx(50000 * 16 * 2, rel=0.02)
