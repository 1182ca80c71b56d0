"""The frozen-backbone path: a dataset's features, computed once by the backbone and
cached in the run directory; training, evaluation and the export's database read them.

A step then costs the heads only, and each step still samples a fresh candidate
database (from the cached features). Augmentation is off on this path: a cached
feature is one view of its example (docs/own_data.md, "Pretrained backbones").
"""

import dataclasses
import glob
import os
import time

import numpy as np
import tensorflow as tf

from proto_tf import json_files
from proto_tf.array_hashing import arrays_sha256
from proto_tf.data import text
from proto_tf.data.common import LoadedDataset, Split
from proto_tf.data.kinds import FeaturesKind
from proto_tf.encoders.backbone import Backbone, backbone_layers, load_backbone, standardization_layers
from proto_tf.errors import RunDirectoryError
from proto_tf.work_progress import WorkProgress, tracked

FEATURES_FOLDER = "features"
BACKBONE_FILE = "backbone.json"


@dataclasses.dataclass(frozen=True)
class FeatureScaling:
    """Each feature standardised by the training split's mean and deviation: a frozen
    backbone's features share a large offset and vary little around it (ReLU outputs
    averaged over positions), which the heads would otherwise have to learn away."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, train_features: np.ndarray, chunk_rows: int = 16384) -> "FeatureScaling":
        """The scaling of `train_features [N, F]` (any float dtype, e.g. a float16 cache),
        summed in float64 over chunks of `chunk_rows` rows: never a float64 copy of the
        whole split (5 GB for ImageNet's 1.28M 512-d features). Two passes, the mean
        and then the squared deviations from it, as NumPy's own `std`."""
        rows = len(train_features)
        chunks = range(0, rows, chunk_rows)
        mean = sum(train_features[i : i + chunk_rows].sum(axis=0, dtype=np.float64) for i in chunks) / rows
        squares = 0.0
        for i in chunks:
            chunk = train_features[i : i + chunk_rows].astype(np.float64)
            chunk -= mean
            squares = squares + np.square(chunk, out=chunk).sum(axis=0)
        deviation = np.sqrt(squares / rows)
        # A constant feature (a unit that never fires) is centred, not blown up.
        scale = np.where(deviation > 1e-8, deviation, 1.0)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def __call__(self, features):
        return (tf.cast(features, tf.float32) - self.mean) / self.scale


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """How raw inputs become the model's inputs on the frozen path: `raw` is the dataset
    as loaded (its `info` serves and explains), `backbone` maps its stored inputs to
    features, `scaling` standardises them (`preprocess`, TF ops: it runs inside an
    export's graph)."""

    raw: LoadedDataset
    backbone: Backbone
    scaling: FeatureScaling

    @property
    def info(self):
        return self.raw.info

    def preprocess(self, inputs):
        return self.scaling(self.backbone.features(inputs))

    def featurized(self, split: Split, batch_size: int = 512, description: str = "features") -> Split:
        """`split` (raw stored inputs) as the backbone's float32 features (not cached:
        for sets made on the fly, such as rotated test images)."""
        features = compute_features(self.backbone.features, split.inputs, batch_size, description, "float32")
        return Split(features, split.labels, split.indices)


def backbone_of_run(config, info) -> Backbone:
    """`config.backbone` loaded for the stored inputs `info` describes (text: the
    dataset's alphabet, to turn character codes back into strings)."""
    alphabet = "".join(info.alphabet or text.ALPHABET) if info.kind.name == "text" else None
    return load_backbone(
        config.backbone, tuple(info.input_shape), info.kind.name, config.backbone_pooling, config.download, alphabet
    )


def with_backbone_features(dataset: LoadedDataset, config, model_dir: str, report=print) -> LoadedDataset:
    """`dataset` with its splits replaced by `config.backbone`'s features (cached under
    `model_dir/features/`, keyed by the backbone's weights and each split's data),
    standardised by the training split's statistics (`FeatureScaling`), and an info of
    shape `[F]` for the identity encoder. The backbone must be the one the run in
    `model_dir` was trained with (its `backbone.json`), else a RunDirectoryError."""
    info = dataset.info
    backbone = backbone_of_run(config, info)
    report(f"{backbone.describe()}.")
    _check_same_backbone(model_dir, backbone)
    folder = os.path.join(model_dir, FEATURES_FOLDER)
    splits = {}
    for name in ("train", "validation", "test"):
        split = getattr(dataset, name)
        if split is not None:
            features = cached_features(
                split, name, backbone, folder, config.feature_dtype, config.eval_batch_size, report
            )
            splits[name] = Split(features, split.labels, split.indices)
        else:
            splits[name] = None
    feature_info = dataclasses.replace(
        info, kind=FeaturesKind(), input_shape=(backbone.feature_size,), input_dtype="float32", augmentation=None
    )
    scaling = FeatureScaling.of(splits["train"].inputs)
    return dataclasses.replace(
        dataset,
        **splits,
        augment=lambda inputs, seed: scaling(inputs),  # No augmentation on cached features.
        preprocess=scaling,
        info=feature_info,
        features=FeatureSource(dataset, backbone, scaling),
    )


def cached_features(
    split: Split, name: str, backbone: Backbone, folder: str, dtype: str, batch_size: int, report=print
) -> np.ndarray:
    """The backbone's features of `split` (`[N, F]` in `dtype`): read from `folder` when
    a file of the same backbone and data is there, else computed (with a progress line)
    and written atomically. A file of another backbone or data is left as it is."""
    data_key = arrays_sha256((split.inputs,))
    path = os.path.join(folder, f"{name}-{backbone.weights_sha256[:16]}-{data_key[:16]}-{dtype}.npy")
    if os.path.isfile(path):
        features = np.load(path)
        if features.shape == (len(split), backbone.feature_size) and features.dtype == np.dtype(dtype):
            report(f"{name} features: read from {path}.")
            return features
        report(f"{path} does not hold {len(split)} {backbone.feature_size}-d {dtype} features: computing them again.")
    elif glob.glob(os.path.join(folder, f"{name}-*.npy")):
        report(f"the cached {name} features in {folder} are of another backbone or other data: computing them again.")
    start = time.monotonic()
    features = compute_features(backbone.features, split.inputs, batch_size, f"{name} features", dtype)
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.{json_files.owner_tag()}.tmp"
    with open(temporary, "wb") as file:
        np.save(file, features)
    os.replace(temporary, path)
    report(f"{name} features: {len(split):,} examples in {time.monotonic() - start:.1f} s, cached in {path}.")
    return features


def compute_features(layer, inputs: np.ndarray, batch_size: int, description: str, dtype: str) -> np.ndarray:
    """`[N, F]` features of stored `inputs` by a backbone's feature `layer`, in batches,
    with a progress line."""
    encode = tf.function(lambda batch: layer(batch), reduce_retracing=True)
    starts = range(0, max(len(inputs), 1), batch_size)  # An empty split: one empty batch.
    progress = WorkProgress(description, len(inputs))
    parts = [
        encode(tf.convert_to_tensor(inputs[start : start + batch_size])).numpy().astype(dtype)
        for start in tracked(starts, progress, lambda start: min(batch_size, len(inputs) - start))
    ]
    return np.concatenate(parts)


def _check_same_backbone(model_dir, backbone):
    path = os.path.join(model_dir, BACKBONE_FILE)
    if os.path.isfile(path):
        stored = json_files.read_json(path, f"the backbone the run in {model_dir} was trained with")
        if stored.get("weights_sha256") != backbone.weights_sha256:
            raise RunDirectoryError(
                f"--backbone={backbone.spec} is not the backbone the run in {model_dir} was trained with "
                f"({stored.get('spec')}, sha256 {str(stored.get('weights_sha256'))[:12]}; now "
                f"{backbone.weights_sha256[:12]}): its heads would not fit these features. Give that "
                "backbone, or train into another --model_dir."
            )
        return
    os.makedirs(model_dir, exist_ok=True)
    json_files.write_json(
        path,
        {
            "spec": backbone.spec,
            "weights_sha256": backbone.weights_sha256,
            "feature_size": backbone.feature_size,
            "parameters": backbone.parameters,
        },
    )


def for_fine_tuning(dataset: LoadedDataset) -> LoadedDataset:
    """`dataset` for a fine-tuned backbone, which prepares its own inputs: images keep
    their augmentation's crops and flips but not its standardisation (pixels stay in
    0..255 for the preset's converter); other kinds are used as stored."""
    augmentation = dataset.info.augmentation
    if augmentation is None:
        return dataset
    return dataclasses.replace(
        dataset,
        augment=augmentation.augment_pixels,
        preprocess=lambda inputs: tf.cast(inputs, tf.float32),
    )


def set_feature_scaling(model, split: Split, examples: int = 4096, batch_size: int = 256) -> None:
    """Sets every `FeatureStandardization` in `model` (a fine-tuned backbone's) to the
    statistics of the backbone's features of the first `examples` rows of `split`."""
    layers = standardization_layers(model)
    if not layers:
        return
    (backbone,) = backbone_layers(model)
    # Stored inputs as they are: the backbone casts them itself (`BackboneFeatures`).
    features = compute_features(backbone, split.inputs[:examples], batch_size, "feature statistics", "float32")
    scaling = FeatureScaling.of(features)
    for layer in layers:
        layer.set_statistics(scaling.mean, scaling.scale)
