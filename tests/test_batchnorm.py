import keras
import numpy as np
import pytest
from data_files import write_mnist

from proto_tf import BaselineClassifier
from proto_tf.analysis.evaluate_run import evaluate_model_dir
from proto_tf.training import batchnorm
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.run_store import load_run
from proto_tf.training.trainer import Trainer


def _model_with_batchnorm():
    encoder = keras.Sequential([keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)])
    model = BaselineClassifier(encoder, num_classes=2)
    model.build((None, 2))
    model.decision.set_weights([np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)])
    return model


def test_reestimated_statistics_are_the_mean_batch_statistics():
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(size, 2)) * [2.0, 0.5] + [3.0, -1.0]).astype(np.float32) for size in (5, 8, 13)]
    encoder = _model_with_batchnorm().encoder
    bn = encoder.layers[0]
    bn.moving_mean.assign([100.0, 100.0])  # Old statistics must not leak into the result.
    assert batchnorm.reestimate_statistics(encoder, iter(batches)) == 3
    # Hand reference: the plain mean over batches of each batch's mean and (biased) variance.
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([b.var(0) for b in batches], 0), rtol=1e-5)
    assert bn.momentum == 0.9  # Restored for training.


def test_reestimation_without_batchnorm_uses_no_batches():
    encoder = keras.Sequential([keras.layers.Dense(2)])
    encoder.build((None, 2))
    assert batchnorm.reestimate_statistics(encoder, iter([np.zeros((4, 2), np.float32)])) == 0


def test_reestimation_batches_are_the_training_steps_encoder_batches(tmp_path):
    # ISIC-style class shares: the batches follow the step's class-balanced sampling.
    from data_files import write_isic

    from proto_tf.data.candidates import training_batches
    from proto_tf.training.run_store import load_experiment_dataset

    config = ExperimentConfig(
        dataset="isic",
        data_dir=write_isic(str(tmp_path / "isic"), train=40, melanoma_every=5),
        batch_size=10,
        train_database_size=10,
        validation_fraction=0.0,
    )
    dataset = load_experiment_dataset(config)
    batches = list(batchnorm.training_step_batches(dataset, config, 2))
    steps = list(
        training_batches(dataset.train, dataset.augment, 10, 10, seed=config.seed, num_steps=2, class_shares=(0.6, 0.4))
    )
    assert len(batches) == 2
    for batch, step in zip(batches, steps):
        np.testing.assert_array_equal(batch.numpy(), np.concatenate([step["inputs"], step["candidate_inputs"]]))
        assert step["labels"].numpy().sum() == 4 and step["candidate_labels"].numpy().sum() == 4


def test_plain_accuracy_with_moving_and_batch_statistics():
    # Class = the larger normalised feature. With the initial moving statistics (mean 0,
    # variance 1) the raw inputs decide; batch statistics centre each feature first.
    inputs = np.array([[10.0, 0.0], [12.0, 1.0], [8.0, 3.0], [10.0, 2.0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    model = _model_with_batchnorm()
    assert batchnorm.plain_accuracy(model, inputs, labels) == 0.5  # Always class 0.
    # Batch means 10 and 1.5, stds sqrt(2) and sqrt(1.25): normalised rows
    # (0, -1.34), (1.41, -0.45), (-1.41, 1.34), (0, 0.45) → classes 0, 0, 1, 1.
    assert batchnorm.plain_accuracy(model, inputs, labels, batch_statistics=True) == 1.0


def _moving_statistics(model):
    layers = batchnorm.batchnorm_layers(model.encoder)
    assert len(layers) == 7  # ResNet-8: stem + 3 blocks of (bn1, bn2).
    return [v.numpy().copy() for layer in layers for v in (layer.moving_mean, layer.moving_variance)]


def _tiny_mnist_run(tmp_path, name, batchnorm_batches):
    data_dir = str(tmp_path / "mnist")
    write_mnist(data_dir, train=64, test=16)
    config = ExperimentConfig(
        dataset="mnist",
        attention="softmax",
        data_dir=data_dir,
        model_dir=str(tmp_path / name),
        train_steps=3,
        batch_size=8,
        train_database_size=8,
        infer_database_size=16,
        resnet_depth=8,
        dense_units=(8,),
        value_size=8,
        validation_fraction=0.0,
        learning_rate=0.05,
        eval_batch_size=32,
        batchnorm_batches=batchnorm_batches,
    )
    Trainer(config, verbose=False).train()
    return config.model_dir


@pytest.mark.parametrize("batches", [0, 3])
def test_training_saves_statistics_reestimated_for_the_final_weights(tmp_path, batches):
    config, dataset, model, _ = load_run(_tiny_mnist_run(tmp_path, "run", batches), "last")
    saved = _moving_statistics(model)
    batchnorm.reestimate_from_training_split(model, dataset, config, 3)
    reference = _moving_statistics(model)  # The same batches, the same final weights.
    matches = [np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(saved, reference)]
    # Three steps of moving averages (momentum 0.9) are far from the re-estimate.
    assert all(matches) if batches else not any(matches)


def test_evaluating_with_reestimation_matches_a_run_trained_with_it(tmp_path):
    # Training never reads the moving statistics: both runs have the same weights.
    plain = _tiny_mnist_run(tmp_path, "plain", batchnorm_batches=0)
    built_in = _tiny_mnist_run(tmp_path, "built_in", batchnorm_batches=3)
    stale = evaluate_model_dir(plain, str(tmp_path / "stale"), "last")
    afterwards = evaluate_model_dir(plain, str(tmp_path / "after"), "last", batchnorm_batches=3)
    trained = evaluate_model_dir(built_in, str(tmp_path / "trained"), "last")
    assert afterwards["batchnorm_batches"] == 3

    def kept_shares(report):  # The share of test images above each confidence threshold.
        return np.array([point["kept"] for point in report["test"]["coverage_curve"]])

    np.testing.assert_allclose(kept_shares(afterwards), kept_shares(trained), atol=1e-6)
    assert afterwards["test"]["accuracy"] == trained["test"]["accuracy"]
    assert not np.allclose(kept_shares(stale), kept_shares(trained), atol=1e-6)
