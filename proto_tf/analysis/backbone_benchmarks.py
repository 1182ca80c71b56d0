"""What a frozen backbone costs and saves (run by `run/benchmark.py --suite=backbone`):
a training step on cached features against a step through the backbone, the one-time
feature pass, and an ImageNet-sized prototype head trained and served from cached
features."""

import dataclasses
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from proto_tf import streaming
from proto_tf.analysis.serving_benchmarks import seconds_per_call
from proto_tf.data.common import LoadedDataset, Split
from proto_tf.data.kinds import FeaturesKind
from proto_tf.data.registry import DatasetInfo
from proto_tf.encoders.backbone import BackboneFeatures
from proto_tf.model import ProtoAttend
from proto_tf.peak_memory import peak_resident_gib
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.features import FeatureScaling
from proto_tf.training.trainer import Trainer

# keras-hub's ResNet-18 layout (basic blocks, 2-2-2-2), built from its constructor: no
# download, and the cost of a step does not depend on the weights' values.
RESNET18 = dict(
    input_conv_filters=[64],
    input_conv_kernel_sizes=[7],
    stackwise_num_filters=[64, 128, 256, 512],
    stackwise_num_blocks=[2, 2, 2, 2],
    stackwise_num_strides=[1, 2, 2, 2],
    block_type="basic_block",
)


def resnet18_features(image_size: int, trainable: bool) -> BackboneFeatures:
    """A ResNet-18 (keras-hub) with average pooling, on `image_size`² RGB pixels."""
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(**RESNET18, image_shape=(image_size, image_size, 3))
    converter = keras_hub.layers.ResNetImageConverter(image_size=(image_size, image_size), scale=1 / 255.0)
    layer = BackboneFeatures(backbone, converter, "avg", 3)
    layer.trainable = trainable
    return layer


def _step_seconds(encoder, inputs, labels, num_classes, batch_size, database_size, steps):
    model = ProtoAttend(encoder, num_classes, attention="sparsemax", value_size=64)
    model.build((None, *inputs.shape[1:]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = {
        "inputs": tf.constant(inputs[:batch_size]),
        "labels": tf.constant(labels[:batch_size]),
        "candidate_inputs": tf.constant(inputs[batch_size : batch_size + database_size]),
        "candidate_labels": tf.constant(labels[batch_size : batch_size + database_size]),
    }
    step = tf.function(lambda: model.train_step(data))
    return seconds_per_call(step, min_calls=steps, min_seconds=0.5, warmup=2)


def cached_against_backbone_step(image_size=112, batch_size=32, database_size=64, num_classes=10, steps=3, seed=0):
    """Seconds per training step (sparsemax, same batch and database size) of the heads
    on cached 512-d features, of a step through the frozen backbone (candidates
    encoded each step, as without a cache), and of one fine-tuning it; and the
    backbone's feature pass in images per second."""
    rng = np.random.default_rng(seed)
    count = batch_size + database_size
    pixels = rng.integers(0, 256, (count, image_size, image_size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, count).astype(np.int32)
    frozen = resnet18_features(image_size, trainable=False)
    features = frozen(pixels).numpy()
    rows = {
        "cached": _step_seconds(
            keras.layers.Identity(), features, labels, num_classes, batch_size, database_size, steps
        ),
        "frozen_backbone": _step_seconds(frozen, pixels, labels, num_classes, batch_size, database_size, steps),
        "fine_tuned": _step_seconds(
            resnet18_features(image_size, trainable=True), pixels, labels, num_classes, batch_size, database_size, steps
        ),
    }
    encode = tf.function(lambda batch: frozen(batch))
    batch = tf.constant(pixels[:batch_size])
    rows["feature_pass_images_per_second"] = batch_size / seconds_per_call(lambda: encode(batch), min_calls=3)
    rows["parameters"] = int(frozen.backbone.count_params())
    return rows


def clustered_features(rows: int, dims: int, num_classes: int, seed=0, spread=0.6) -> tuple:
    """`rows` float16 features of `num_classes` Gaussian clusters (unit-norm centres,
    `spread` per-dimension deviation / sqrt(dims)), and their labels: a synthetic stand-in
    for a backbone's features of ImageNet."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dims)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, num_classes, rows).astype(np.int32)
    out = np.empty((rows, dims), np.float16)
    for start in range(0, rows, 1 << 18):
        part = labels[start : start + (1 << 18)]
        noise = rng.normal(scale=spread / np.sqrt(dims), size=(len(part), dims)).astype(np.float32)
        out[start : start + len(part)] = centres[part] + noise
    return out, labels


def imagenet_sized_head(model_dir, rows=1_281_167, dims=512, num_classes=1000, test_rows=50_000, train_steps=2000):
    """An ImageNet-sized head on cached float16 features: trained for `train_steps`
    through the Trainer (fresh candidate database of 1024 per step), then exported with
    the whole training set as its database and served at batch 1 and 128."""
    start = time.perf_counter()
    train_x, train_y = clustered_features(rows + test_rows, dims, num_classes)
    made = time.perf_counter() - start
    train = Split(train_x[:rows], train_y[:rows], np.arange(rows))
    test = Split(train_x[rows:], train_y[rows:], np.arange(test_rows))
    scaling = FeatureScaling.of(train.inputs[:100_000])
    info = DatasetInfo("imagenet_features", FeaturesKind(), (dims,), "float32")
    dataset = LoadedDataset(
        "imagenet_features",
        num_classes,
        tuple(str(i) for i in range(num_classes)),
        train,
        None,
        test,
        lambda inputs, seed: scaling(inputs),
        scaling,
        info,
    )
    config = ExperimentConfig(
        dataset="csv",  # Any dataset name: the LoadedDataset above is given directly.
        attention="sparsemax",
        model_dir=model_dir,
        train_steps=train_steps,
        batch_size=128,
        train_database_size=1024,
        infer_database_size=32768,  # The run's own test evaluation; the export holds every row.
        value_size=64,
        eval_every=train_steps,
        checkpoint_every=train_steps,
        log_every=max(1, train_steps // 4),
        validation_fraction=0.0,
        eval_batch_size=4096,
        backbone="cached features",
    )
    trainer = Trainer(dataset=dataclasses.replace(dataset), config=config, verbose=False)
    start = time.perf_counter()
    summary = trainer.train()
    return {
        "features_made_seconds": made,
        "feature_bytes": train.inputs.nbytes,
        "wall_seconds": time.perf_counter() - start,  # With the start, checkpoints and the test evaluation.
        "ms_per_step": 1000 * summary["train_seconds"] / train_steps,  # The steps alone.
        "test": summary.get("test_last", {}),
        "peak_rss_gib": peak_resident_gib(),
        "model": trainer.model,
        "dataset": dataset,
    }


def served_latencies(model, dataset, batch_sizes=(1, 128), export_root=None):
    """Exports `model` with every training example as its database (streamed above
    `streaming` sizes) and times its serving function at each batch size."""
    from proto_tf.serving import export

    database = export.encode_database(model, dataset.preprocess, dataset.train, batch_size=8192)
    root = export_root or tempfile.mkdtemp()
    path = os.path.join(root, "imagenet_head")
    start = time.perf_counter()
    export.export_saved_model(model, dataset.info, dataset.preprocess, database, path)
    exported = time.perf_counter() - start
    loaded = tf.saved_model.load(path).signatures["serving_default"]
    rows = {"export_seconds": exported, "database_rows": len(database), "block_size": streaming.DEFAULT_BLOCK_SIZE}
    for batch_size in batch_sizes:
        request = tf.constant(dataset.test.inputs[:batch_size].astype(np.float32))
        rows[f"batch_{batch_size}_ms"] = 1000 * seconds_per_call(
            lambda request=request: loaded(features=request), min_calls=5
        )
    return rows
