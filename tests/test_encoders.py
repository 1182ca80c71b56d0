import keras
import numpy as np
import pytest
import tensorflow as tf

from proto_tf.encoders import VDCNN, KMaxPooling, ResNet, TabularLSTM
from proto_tf.encoders.layers import FusedBatchNormalization


def _layers_of(model, kind):
    return [layer for layer in model._flatten_layers() if isinstance(layer, kind)]


def _round_trip(model, example):
    """Rebuilds the model from its config, copies the weights, compares outputs."""
    expected = model(example).numpy()
    clone = model.__class__.from_config(model.get_config())
    clone(example)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(example).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("depth,blocks_per_stage", [(32, 5), (50, 8)])
def test_resnet_depth_counts_convs_and_dense(depth, blocks_per_stage):
    encoder = ResNet(depth)
    out = encoder(np.zeros([2, 28, 28, 1], np.float32))
    assert out.shape == (2, 256)
    convs = _layers_of(encoder, keras.layers.Conv2D)
    three_by_three = [c for c in convs if c.kernel_size == (3, 3)]
    projections = [c for c in convs if c.kernel_size == (1, 1)]
    dense = _layers_of(encoder, keras.layers.Dense)
    # Depth = stem conv + two 3x3 convs per block + one dense layer.
    assert len(three_by_three) + len(dense) == depth
    # Identity shortcuts, except the strided first blocks of stages 2 and 3.
    assert [(c.filters, c.strides) for c in projections] == [(32, (2, 2)), (64, (2, 2))]
    strided = [c.name for c in three_by_three if c.strides == (2, 2)]
    assert strided == ["conv1", "conv1"]  # First block of stages 2 and 3.
    for norm in _layers_of(encoder, keras.layers.BatchNormalization):
        assert (norm.momentum, norm.epsilon) == (0.9, 1e-5)  # The authors' values.


def _reference_resnet(depth, input_shape=(28, 28, 1), dense_units=256):
    """The authors' TF1 encoder (protoattend/model.py, cnn_encoder) in plain Keras
    layers: stem conv-BN-ReLU; per block conv-BN-ReLU, conv-BN, a 1x1 projection
    without BN only where the stride is 2, add, ReLU; 7x7 average pooling; dense +
    ReLU + layer norm. Returns the model and its weighted layers in creation order."""
    layers = keras.layers
    created = []

    def make(layer):
        created.append(layer)
        return layer

    def conv_bn(x, filters, kernel, strides, relu, norm=True):
        x = make(layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False))(x)
        if norm:
            x = make(layers.BatchNormalization(momentum=0.9, epsilon=1e-5))(x)
        return layers.ReLU()(x) if relu else x

    images = keras.Input(input_shape)
    x = conv_bn(images, 16, 3, 1, relu=True)
    filters = 16
    for stack in range(3):
        for block in range((depth - 2) // 6):
            strides = 2 if stack > 0 and block == 0 else 1
            y = conv_bn(x, filters, 3, strides, relu=True)
            y = conv_bn(y, filters, 3, 1, relu=False)
            if strides == 2:
                x = conv_bn(x, filters, 1, strides, relu=False, norm=False)
            x = layers.ReLU()(layers.Add()([x, y]))
        filters *= 2
    x = layers.Flatten()(layers.AveragePooling2D(input_shape[0] // 4)(x))
    x = make(layers.Dense(dense_units, activation="relu"))(x)
    x = make(layers.LayerNormalization())(x)
    return keras.Model(images, x), created


@pytest.mark.parametrize("depth", [8, 32])
def test_resnet_matches_the_authors_architecture(depth):
    def counts(model):
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        return trainable, sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)

    encoder = ResNet(depth)
    encoder(np.zeros([1, 28, 28, 1], np.float32))
    reference, created = _reference_resnet(depth)
    assert counts(encoder) == counts(reference)
    # Same weights (both list them in layer order), same function.
    source = [w for layer in created for w in layer.weights]
    assert [tuple(w.shape) for w in encoder.weights] == [tuple(w.shape) for w in source]
    rng = np.random.default_rng(depth)
    for target, weight in zip(encoder.weights, source):
        value = rng.uniform(0.5, 1.5, size=weight.shape).astype(np.float32) * 0.1
        weight.assign(value)
        target.assign(value)
    images = rng.normal(size=(3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(
        encoder(images, training=False).numpy(),
        reference(images, training=False).numpy(),
        rtol=1e-4,
        atol=1e-4,
    )


def test_vdcnn_matches_appendix():
    encoder = VDCNN()
    codes = np.random.default_rng(0).integers(0, 70, size=(2, 448)).astype(np.int32)
    assert encoder(codes).shape == (2, 1024)
    convs = _layers_of(encoder, keras.layers.Conv1D)
    assert [c.filters for c in convs] == [64, 64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.strides[0] for c in convs] == [2] + [1] * 8
    assert all(c.kernel_size == (3,) for c in convs)
    assert len(_layers_of(encoder, keras.layers.BatchNormalization)) == 9
    assert len(_layers_of(encoder, keras.layers.MaxPooling1D)) == 4
    assert encoder.embedding.output_dim == 16
    # 448 -> 224 (strided conv) -> 112 -> 56 -> 28 -> 14 (pools) -> k = 8.
    x = encoder.embedding(codes)
    for group in encoder.conv_layers:
        for layer in group:
            x = layer(x)
    assert x.shape == (2, 14, 512)
    assert len(encoder.losses) == 9  # L2 1e-5 on every conv kernel.


def test_k_max_pooling_keeps_the_k_largest_in_time_order():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 20, 5)).astype(np.float32)
    got = KMaxPooling(4)(x).numpy()
    for b in range(3):
        for c in range(5):
            series = x[b, :, c]
            kept = np.sort(np.argsort(series)[-4:])
            np.testing.assert_array_equal(got[b, :, c], series[kept])


def test_vdcnn_round_trips():
    encoder = VDCNN(block_filters=(8, 8, 8, 8, 8, 8, 8, 8), first_filters=8, dense_units=(16,))
    _round_trip(encoder, np.arange(2 * 448).reshape(2, 448).astype(np.int32) % 70)


def test_tabular_lstm_dropout_only_in_training():
    encoder = TabularLSTM()
    features = np.random.default_rng(3).normal(size=(8, 105)).astype(np.float32)
    inference = encoder(features).numpy()
    assert inference.shape == (8, 64)
    np.testing.assert_array_equal(encoder(features).numpy(), inference)
    trained = encoder(features, training=True).numpy()
    assert (trained == 0).mean() > 0.3  # Output dropout at rate 0.5.
    assert isinstance(encoder.lstm, keras.layers.LSTM)
    assert encoder.embedding.units == 64 and encoder.timesteps == 4
    _round_trip(encoder, features)


def _batchnorm_pass(layer, inputs, seed):
    """Training output, gradients (inputs, gamma, beta), moving statistics after the
    training call, and the inference output of `layer` on `inputs`."""
    layer.build(inputs.shape)
    channels = inputs.shape[layer.axis if isinstance(layer.axis, int) else -1]
    layer.gamma.assign(np.linspace(0.5, 2.0, channels))
    layer.beta.assign(np.linspace(-1.0, 1.0, channels))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs, training=True)
        loss = tf.reduce_sum(outputs * tf.sin(outputs + float(seed)))
    gradients = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    moving = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    return [outputs.numpy(), *[g.numpy() for g in gradients], *moving, layer(inputs, training=False).numpy()]


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (7, 9, 3), (11, 3)])
def test_fused_batchnorm_equals_keras_batchnorm(shape):
    """The fused kernel gives Keras' values: outputs, gradients, the moving averages
    (Keras' biased variance, where the kernel returns the unbiased one) and inference."""
    inputs = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, shape), tf.float32)
    expected = _batchnorm_pass(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5), inputs, 1)
    fused = _batchnorm_pass(FusedBatchNormalization(momentum=0.9, epsilon=1e-5), inputs, 1)
    for got, want in zip(fused, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-5)
    # The biased variance of each channel, by hand: 0.1 of it entered the average.
    by_hand = np.var(inputs.numpy().reshape(-1, shape[-1]), axis=0)
    np.testing.assert_allclose(fused[5], 0.9 + 0.1 * by_hand, rtol=1e-5)


def test_fused_batchnorm_takes_keras_path_where_the_kernel_does_not_apply():
    """A normalised axis other than the last uses Keras' own computation."""
    inputs = tf.constant(np.random.default_rng(1).normal(size=(4, 3, 5)), tf.float32)
    expected = _batchnorm_pass(keras.layers.BatchNormalization(axis=1), inputs, 2)
    got = _batchnorm_pass(FusedBatchNormalization(axis=1), inputs, 2)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_image_and_text_encoders_use_the_fused_batchnorm():
    encoders = [ResNet(8), VDCNN(first_filters=4, block_filters=(4, 4, 4, 4, 4, 4, 4, 4), dense_units=(8,))]
    for encoder in encoders:
        norms = _layers_of(encoder, keras.layers.BatchNormalization)
        assert norms and all(isinstance(n, FusedBatchNormalization) for n in norms)
