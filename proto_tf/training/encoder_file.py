"""A trained run's encoder as a `.keras` backbone: pretrain with proto_tf on one task,
then give the file to `--backbone` on another (docs/own_data.md, "Pretrained backbones")."""

import os

import keras

from proto_tf import json_files
from proto_tf.errors import ConfigError
from proto_tf.training import run_store

LAYERS = ("output", "pooled")


def encoder_model(
    model_dir: str, checkpoint: str = "best", data_dir: str | None = None, layer: str = "output"
) -> keras.Model:
    """The run's encoder as a Keras model from stored inputs (float32; pixels in 0..255)
    to its features, with the run's evaluation preprocessing in front. `layer`: the
    encoder's `output`, or (a ResNet's) `pooled` last stage before its dense head."""
    if layer not in LAYERS:
        raise ConfigError(f"--layer={layer!r} is not valid; valid: {', '.join(LAYERS)}.")
    config, dataset, model, _ = run_store.load_run(model_dir, checkpoint, data_dir)
    if config.backbone:
        raise ConfigError(
            f"--model_dir={model_dir} trained heads on the frozen backbone {config.backbone}: give "
            "that backbone itself to --backbone."
        )
    info = dataset.info
    inputs = keras.Input(tuple(info.input_shape), dtype="float32", name="inputs")
    outputs = inputs if info.augmentation is None else info.augmentation.preprocessing_layer()(inputs)
    encoder = model.encoder
    if layer == "pooled":
        if not hasattr(encoder, "pooled"):
            raise ConfigError(f"--layer=pooled needs a ResNet encoder; the run's is {type(encoder).__name__}.")
        return keras.Model(inputs, encoder.pooled(outputs, training=False), name=f"{config.dataset}_pooled")
    return keras.Model(inputs, encoder(outputs, training=False), name=f"{config.dataset}_encoder")


def save_encoder(
    model_dir: str, path: str, checkpoint: str = "best", data_dir: str | None = None, layer: str = "output"
) -> str:
    """Writes `encoder_model` to `path` (a `.keras` file), whole or not at all."""
    if not path.endswith(".keras"):
        raise ConfigError(f"--output={path} must end in .keras (a Keras model file).")
    model = encoder_model(model_dir, checkpoint, data_dir, layer)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{json_files.owner_tag()}.keras")
    model.save(temporary)
    os.replace(temporary, path)
    return path
