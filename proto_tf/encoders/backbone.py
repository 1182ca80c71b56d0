"""Pretrained backbones as the encoder: a keras-hub preset or a saved Keras model,
mapping a batch of stored inputs to one feature vector per example.

`--backbone=SPEC` takes
- a local keras-hub preset folder (what `Backbone.save_to_preset` writes; its image
  converter, when saved beside it, prepares the images as the backbone was trained);
- a keras-hub preset name (`resnet_50_imagenet`) or a `kaggle://` / `hf://` handle,
  fetched from the hub only with `--download`;
- a `.keras` file holding a model that maps a batch of stored inputs to features.
"""

import dataclasses
import json
import os
import zipfile

import keras
import numpy as np
import tensorflow as tf

from proto_tf.array_hashing import arrays_sha256
from proto_tf.errors import ConfigError

POOLINGS = ("avg", "max")
HUB_PREFIXES = ("kaggle://", "hf://", "modelscope://")


@keras.saving.register_keras_serializable(package="proto_tf")
class TextPreparation(keras.layers.Layer):
    """Stored text (character codes of `alphabet`, `data.text.CharacterQuantizer`: code
    i is the alphabet's i-th character, 0 outside it and padding) back to strings, then
    a keras-hub text preset's `preprocessor` (its tokenizer, special tokens, padding).

    The stored form is lower-cased and cut at the dataset's sequence length, so an
    uncased preset sees the text it was trained on; characters outside the alphabet
    become spaces.
    """

    def __init__(self, alphabet: str, preprocessor, **kwargs):
        super().__init__(**kwargs)
        self.alphabet = alphabet
        self.preprocessor = preprocessor
        self._characters = tf.constant([" "] + list(alphabet))

    def call(self, codes):
        texts = tf.strings.reduce_join(tf.gather(self._characters, tf.cast(codes, tf.int32)), axis=-1)
        return self.preprocessor(texts)

    def get_config(self):
        # keras-hub keeps a tokenizer's vocabulary as a saved asset, read after the
        # model is rebuilt (too late: rebuilding calls this layer); it is kept here.
        return {
            **super().get_config(),
            "alphabet": self.alphabet,
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "vocabulary": list(self.preprocessor.tokenizer.get_vocabulary()),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        vocabulary = config.pop("vocabulary", None)
        config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        if vocabulary is not None:
            config["preprocessor"].tokenizer.set_vocabulary(vocabulary)
        return cls(**config)


@keras.saving.register_keras_serializable(package="proto_tf")
class BackboneFeatures(keras.layers.Layer):
    """Stored inputs -> `[B, features]` through a (frozen) backbone.

    Inputs are cast to float32 (images stay in 0..255: the `converter`, when given,
    resizes and rescales them as the backbone's preset says); a one-channel image is
    repeated to `channels` when the backbone wants RGB; a feature map is pooled over its
    positions (`pooling`: "avg" or "max").
    """

    def __init__(self, backbone, converter=None, pooling: str = "avg", channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.backbone = backbone
        self.converter = converter
        self.pooling = pooling
        self.channels = channels

    def call(self, inputs):
        if isinstance(self.converter, TextPreparation):  # Character codes -> token ids.
            return self._pooled(self.backbone(self.converter(inputs), training=False))
        x = keras.ops.cast(inputs, "float32")
        if self.channels is not None and x.shape[-1] == 1 and self.channels > 1:
            x = keras.ops.repeat(x, self.channels, axis=-1)
        if self.converter is not None:
            x = self.converter(x)
        return self._pooled(self.backbone(x, training=False))

    def _pooled(self, features):
        if isinstance(features, dict):  # keras-hub text backbones: the pooled output.
            features = features["pooled_output"]
        axes = tuple(range(1, len(features.shape) - 1))
        if axes:
            reduce = keras.ops.mean if self.pooling == "avg" else keras.ops.max
            features = reduce(features, axis=axes)
        return keras.ops.cast(features, "float32")

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "converter": keras.saving.serialize_keras_object(self.converter) if self.converter is not None else None,
            "pooling": self.pooling,
            "channels": self.channels,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("converter") is not None:
            config["converter"] = keras.saving.deserialize_keras_object(config["converter"])
        return cls(**config)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A loaded backbone: the feature layer, its size, and what identifies it."""

    spec: str
    features: BackboneFeatures
    feature_size: int
    parameters: int
    weights_sha256: str  # Of its weights, converter and pooling: a cache's and a run's key.

    def describe(self) -> str:
        megabytes = sum(int(np.prod(w.shape)) * w.dtype.itemsize for w in _numpy_weights(self.features)) / 2**20
        return (
            f"backbone {self.spec}: {self.parameters:,} parameters ({megabytes:.1f} MiB), "
            f"{self.feature_size}-d features ({self.features.pooling} pooling)"
        )


def load_backbone(
    spec: str,
    input_shape: tuple,
    kind: str,
    pooling: str = "avg",
    download: bool = False,
    alphabet: str | None = None,
) -> Backbone:
    """The backbone `spec` names, checked against stored inputs of `input_shape` and
    `kind` ("image", "text", "tabular"); a ConfigError naming `--backbone` says what is
    wrong and what is valid. Images are resized to the preset's size by its converter;
    text (character codes of `alphabet`) is turned back into strings and tokenized by
    a text preset's preprocessor (`TextPreparation`)."""
    if pooling not in POOLINGS:
        raise ConfigError(f"--backbone_pooling={pooling!r} is not valid; valid: {', '.join(POOLINGS)}.")
    channels = None
    if spec.endswith(".keras"):
        model, converter = _keras_file(spec), None
    elif kind == "text":
        model, preprocessor = _text_preset(spec, download, input_shape[0])
        converter = TextPreparation(alphabet, preprocessor, name="text_preparation")
    else:
        model, converter = _preset(spec, download)
        if kind != "image":
            raise ConfigError(
                f"--backbone={spec}: keras-hub presets are used for images and text here; this dataset holds "
                f"{kind} data. Give a .keras model that maps its stored inputs to features."
            )
        channels = _image_channels(model, spec)
        if input_shape[-1] not in (1, channels):
            raise ConfigError(
                f"--backbone={spec} takes {channels}-channel images; the data has {input_shape[-1]} channels."
            )
    features = BackboneFeatures(model, converter, pooling, channels, name="backbone_features")
    probe = np.zeros((2, *input_shape), np.int32 if kind == "text" else np.float32)
    try:
        output = features(probe)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"--backbone={spec} does not take this data's inputs (shape {tuple(input_shape)}): "
            f"{str(error).strip().splitlines()[0]}"
        ) from None
    if len(output.shape) != 2:
        raise ConfigError(f"--backbone={spec} gives outputs of shape {tuple(output.shape)}; expected features.")
    features.trainable = False
    return Backbone(
        spec, features, int(output.shape[-1]), int(model.count_params()), weights_fingerprint(features, input_shape)
    )


def weights_fingerprint(features: BackboneFeatures, input_shape: tuple) -> str:
    """sha256 of a feature layer's weights and its preprocessing settings."""
    settings = {"pooling": features.pooling, "channels": features.channels, "input_shape": list(input_shape)}
    if isinstance(features.converter, TextPreparation):
        tokenizer = features.converter.preprocessor.tokenizer
        settings["text"] = {"alphabet": features.converter.alphabet, "vocabulary": tokenizer.get_vocabulary()}
        settings["sequence_length"] = features.converter.preprocessor.sequence_length
    elif features.converter is not None:
        settings["converter"] = {k: v for k, v in features.converter.get_config().items() if k != "name"}
    return arrays_sha256(_numpy_weights(features), json.dumps(settings, sort_keys=True, default=str).encode())


def _numpy_weights(layer):
    return [np.asarray(w) for w in layer.backbone.get_weights()]


def _keras_file(path):
    if not os.path.isfile(path):
        raise ConfigError(f"--backbone={path}: no such file; expected a .keras model file.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as error:  # Not a readable model file.
        raise ConfigError(
            f"--backbone={path} is not a readable Keras model ({str(error).strip().splitlines()[0]})."
        ) from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"--backbone={path} holds a {type(model).__name__}, not a Keras model.")
    return model


def _preset(spec, download):
    import keras_hub  # Imported here: only runs with a keras-hub backbone pay its import.

    is_folder = os.path.isdir(spec)
    if not is_folder:
        known = spec in keras_hub.models.Backbone.presets or spec.startswith(HUB_PREFIXES)
        if not known:
            raise ConfigError(
                f"--backbone={spec}: not a preset folder, a .keras file, a keras-hub preset name "
                "(e.g. resnet_50_imagenet) or a kaggle:// / hf:// handle."
            )
        if not download:
            raise ConfigError(
                f"--backbone={spec} is fetched from the hub: add --download (needs the network), or on a "
                "machine without it give a preset folder saved with Backbone.save_to_preset."
            )
    elif not os.path.isfile(os.path.join(spec, "config.json")):
        raise ConfigError(f"--backbone={spec}: the folder holds no config.json; expected a keras-hub preset folder.")
    try:
        backbone = keras_hub.models.Backbone.from_preset(spec)
    except (OSError, ConnectionError) as error:
        raise ConfigError(
            f"--backbone={spec} could not be fetched ({str(error).strip().splitlines()[0][:160]}); "
            "without the network, give a preset folder saved with Backbone.save_to_preset."
        ) from None
    except ValueError as error:
        raise ConfigError(f"--backbone={spec}: {str(error).strip().splitlines()[0]}") from None
    converter = None
    if not is_folder or os.path.isfile(os.path.join(spec, "image_converter.json")):
        try:
            converter = keras_hub.layers.ImageConverter.from_preset(spec)
        except ValueError:
            converter = None  # A preset without an image converter (a text backbone, say).
    return backbone, converter


def _text_preset(spec, download, sequence_length):
    """A keras-hub text backbone and its classifier preprocessor, tokenizing at most
    `sequence_length` tokens (the stored characters) or the backbone's maximum."""
    import keras_hub

    backbone, converter = _preset(spec, download)
    if converter is not None or getattr(backbone, "image_shape", None) is not None:
        raise ConfigError(f"--backbone={spec} takes images; this dataset holds text: give a keras-hub text preset.")
    try:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(spec)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise ConfigError(
            f"--backbone={spec}: no text preprocessor in the preset ({str(error).strip().splitlines()[0][:160]}); "
            "save the preset's TextClassifierPreprocessor beside its backbone (save_to_preset)."
        ) from None
    longest = getattr(backbone, "max_sequence_length", None) or sequence_length
    preprocessor.sequence_length = min(int(sequence_length), int(longest))
    return backbone, preprocessor


def _image_channels(model, spec):
    shape = getattr(model, "image_shape", None) or model.input_shape
    if not isinstance(shape, (tuple, list)) or len(shape) not in (3, 4) or isinstance(shape[0], (tuple, list)):
        raise ConfigError(f"--backbone={spec} does not take images (its input shape is {shape}).")
    return int(shape[-1]) if shape[-1] is not None else 3


@keras.saving.register_keras_serializable(package="proto_tf")
class FeatureStandardization(keras.layers.Layer):
    """`(features - mean) / scale` with fixed (non-trainable) statistics, set once from
    the training split's features (`set_statistics`) and saved with the model."""

    def build(self, input_shape):
        size = int(input_shape[-1])
        self.mean = self.add_weight(shape=(size,), initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(shape=(size,), initializer="ones", trainable=False, name="scale")

    def set_statistics(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean.assign(np.asarray(mean, np.float32))
        self.scale.assign(np.asarray(scale, np.float32))

    def call(self, features):
        return (keras.ops.cast(features, "float32") - self.mean) / self.scale


def fine_tuned_encoder(backbone: Backbone) -> keras.Sequential:
    """The encoder of a fine-tuned run: the backbone (trainable; its BatchNorm layers
    stay in inference mode, as keras-hub recommends for fine-tuning) and a
    `FeatureStandardization` of its features."""
    backbone.features.trainable = True
    return keras.Sequential([backbone.features, FeatureStandardization(name="feature_scaling")], name="encoder")


def backbone_layers(model: keras.layers.Layer) -> list:
    """The BackboneFeatures layers inside `model`."""
    # Keras 3 has no public recursive walk; `layers` lists only direct children.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, BackboneFeatures)
    ]


def standardization_layers(model: keras.layers.Layer) -> list:
    """The FeatureStandardization layers inside `model`."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, FeatureStandardization)
    ]
