"""Checkpoints restore every weight: a tf.train.Checkpoint of a Keras 3 model object
silently skips sublayers kept in Python lists (ResNet blocks, VDCNN convolutions)."""

import numpy as np
import pytest
import tensorflow as tf

from proto_tf.data import dataset_info
from proto_tf.training.checkpoints import make_checkpoint
from proto_tf.training.config import ExperimentConfig, build_model, build_optimizer


@pytest.mark.parametrize("dataset", ["mnist", "dbpedia", "adult"])
def test_restore_brings_back_every_model_and_optimizer_variable(tmp_path, dataset):
    config = ExperimentConfig(
        dataset=dataset,
        attention="softmax",
        resnet_depth=8,
        dense_units=(8,),
        value_size=4,
        vdcnn_first_filters=4,
        vdcnn_block_filters=(4,) * 8,
        lstm_embedding_size=4,
    )

    def fresh():
        model = build_model(config, dataset_info(dataset), 3)
        optimizer = build_optimizer(config)
        optimizer.build(model.trainable_variables)
        return model, optimizer

    model, optimizer = fresh()
    rng = np.random.default_rng(0)
    for variable in model.weights + optimizer.variables:
        if variable.dtype == "float32":
            variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    optimizer.iterations.assign(1234)
    path = make_checkpoint(model, optimizer).save(str(tmp_path / "ckpt"))

    restored_model, restored_optimizer = fresh()  # Other auto-generated layer names.
    make_checkpoint(restored_model, restored_optimizer).restore(path).assert_consumed()
    assert len(model.weights) == len(restored_model.weights) > 10
    for before, after in zip(
        model.weights + optimizer.variables, restored_model.weights + restored_optimizer.variables
    ):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=before.path)
    assert int(restored_optimizer.iterations.numpy()) == 1234


def test_model_object_checkpoint_would_miss_list_held_layers(tmp_path):
    """The trap this module exists for: keep it documented by a test."""
    config = ExperimentConfig(dataset="mnist", resnet_depth=8, dense_units=(8,), value_size=4)
    model = build_model(config, dataset_info("mnist"), 3)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "object"))
    saved = {name for name, _ in tf.train.list_variables(path)}
    assert not any("blocks" in name or "stem" in name for name in saved)
    full = {name for name, _ in tf.train.list_variables(make_checkpoint(model).save(str(tmp_path / "full")))}
    assert len([n for n in full if n.startswith("model/")]) == len(model.weights)
