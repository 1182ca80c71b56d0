import keras
import numpy as np
import pytest

from proto_tf.encoders import VDCNN, KMaxPooling, ResNet, TabularLSTM


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
    assert len(projections) == 3 * blocks_per_stage
    assert [c.filters for c in projections] == [16] * blocks_per_stage + [32] * blocks_per_stage + [64] * blocks_per_stage
    strided = [c.name for c in three_by_three if c.strides == (2, 2)]
    assert strided == ["conv1", "conv1"]  # First block of stages 2 and 3.


@pytest.mark.parametrize(
    "size,channels,dense_units,downsample_stem,pooled_size",
    [
        (28, 1, (256,), False, 7),  # MNIST / Fashion-MNIST: 7x7 average pooling.
        (32, 3, (256, 512), False, 8),  # CIFAR-10: 8x8, extra FC 512.
        (100, 3, (128,), True, 7),  # Fruits: 100 -> 25 after the stem, then 7x7.
        (128, 3, (128,), True, 8),  # ISIC: 128 -> 32 after the stem, then 8x8.
    ],
)
def test_resnet_spatial_sizes(size, channels, dense_units, downsample_stem, pooled_size):
    encoder = ResNet(8, dense_units, downsample_stem=downsample_stem)
    images = np.random.default_rng(0).normal(size=(2, size, size, channels)).astype(np.float32)
    assert encoder(images).shape == (2, dense_units[-1])
    x = images
    for layer in encoder.stem_layers:
        x = layer(x)
    assert x.shape[1] == (size // 4 if downsample_stem else size)
    for block in encoder.blocks:
        x = block(x)
    assert x.shape[1:3] == (pooled_size, pooled_size)


def test_resnet_rejects_bad_depth_and_round_trips():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        ResNet(33)
    encoder = ResNet(8, (16,), weight_decay=1e-4)
    example = np.random.default_rng(1).normal(size=(2, 28, 28, 1)).astype(np.float32)
    encoder(example)
    assert len(encoder.losses) == len(_layers_of(encoder, keras.layers.Conv2D))
    _round_trip(encoder, example)


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
