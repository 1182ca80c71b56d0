import keras
import numpy as np

from proto_tf import ProtoAttend, batchnorm


def _model_with_batchnorm():
    encoder = keras.Sequential(
        [keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)]
    )
    model = ProtoAttend(encoder, num_classes=2, attention="none")
    model.build((None, 2))
    model.decision.set_weights([np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)])
    return model


def test_reestimated_statistics_reach_the_data_statistics():
    rng = np.random.default_rng(0)
    inputs = (rng.normal(size=(4096, 2)) * [2.0, 0.5] + [3.0, -1.0]).astype(np.float32)
    model = _model_with_batchnorm()
    batchnorm.reestimate_statistics(model, inputs, steps=200, batch_size=512)
    bn = model.encoder.layers[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean(0), atol=0.05)
    np.testing.assert_allclose(bn.moving_variance.numpy(), inputs.var(0), rtol=0.05)


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
