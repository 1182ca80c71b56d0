"""SavedModels for TF Serving: raw inputs in, the class, its confidence and the
prototypes behind it out, with the encoded inference database baked in as weights."""

import os

import keras
import numpy as np
import tensorflow as tf

from proto_tf import blockwise, metrics
from proto_tf.data import adult, text

SERVING_SIGNATURE = "serving_default"
ABSTAIN_SIGNATURE = "abstain"


@keras.saving.register_keras_serializable(package="proto_tf")
class PrototypeDatabaseLayer(keras.layers.Layer):
    """The encoded inference database as non-trainable weights (a SavedModel's
    variables, so a large database does not hit GraphDef's 2 GB limit): keys,
    values, labels and each candidate's index in the training split."""

    def __init__(self, keys, values, labels, indices, **kwargs):
        super().__init__(trainable=False, **kwargs)
        keys, values = np.asarray(keys, np.float32), np.asarray(values, np.float32)
        self.keys = self.add_weight(
            shape=keys.shape, initializer="zeros", trainable=False, name="keys"
        )
        self.values = self.add_weight(
            shape=values.shape, initializer="zeros", trainable=False, name="values"
        )
        self.labels = self.add_weight(
            shape=(len(labels),), initializer="zeros", dtype="int32", trainable=False, name="labels"
        )
        self.indices = self.add_weight(
            shape=(len(indices),), initializer="zeros", dtype="int64", trainable=False, name="indices"
        )
        self.keys.assign(keys)
        self.values.assign(values)
        self.labels.assign(np.asarray(labels, np.int32))
        self.indices.assign(np.asarray(indices, np.int64))
        self.built = True


def raw_input_signature(info):
    """Named TensorSpecs of a dataset's raw serving inputs."""
    if info.kind == "image":
        return {"images": tf.TensorSpec([None, *info.input_shape], tf.uint8, name="images")}
    if info.kind == "text":
        return {"texts": tf.TensorSpec([None], tf.string, name="texts")}
    specs = {}
    for column in adult.COLUMNS:
        dtype = tf.float32 if column in adult.CONTINUOUS else tf.string
        name = column.replace("-", "_")  # Signature keys must be valid identifiers.
        specs[name] = tf.TensorSpec([None], dtype, name=name)
    return specs


def _raw_to_model_inputs(info, preprocess):
    """The serving graph's preprocessing, identical to evaluation's: images go through
    the dataset's own `preprocess`; texts through the character quantiser; Adult
    columns through AdultFeatures."""
    if info.kind == "image":
        return (lambda raw: preprocess(raw["images"])), []
    if info.kind == "text":
        quantizer = text.CharacterQuantizer(info.input_shape[0])
        return (lambda raw: preprocess(quantizer(raw["texts"]))), [quantizer]
    features = adult.AdultFeatures()

    def columns_to_inputs(raw):
        columns = {column: raw[column.replace("-", "_")] for column in adult.COLUMNS}
        return preprocess(features(columns))

    return columns_to_inputs, [features]


def build_serving_function(model, info, preprocess, database, top_k=5):
    """`serve(raw_inputs_dict, confidence_threshold=None) -> dict of named outputs`."""
    to_inputs, preprocessing_layers = _raw_to_model_inputs(info, preprocess)

    signature = raw_input_signature(info)

    def serve(raw, confidence_threshold=None):
        raw = _checked(raw, signature)
        inputs = to_inputs(raw)
        if model.is_baseline:
            logits = model(inputs, training=False)["logits"]
            outputs = {"class_ids": tf.argmax(logits, -1, output_type=tf.int32)}
            outputs["probabilities"] = tf.nn.softmax(tf.cast(logits, tf.float32))
            return outputs
        queries, _, _ = model.encode(inputs, training=False)
        weighted_values, weights = model.prototype_attention(
            queries, database.keys, database.values
        )
        logits = tf.cast(model.decision(weighted_values), tf.float32)
        confidence = metrics.confidence(weights, database.labels, model.num_classes)
        # Block-wise: a selection over every weight would cost more than the
        # attention itself over millions of prototypes.
        top_weights, top_indices = blockwise.top_k(
            weights, min(top_k, int(database.keys.shape[0]))
        )
        outputs = {
            "class_ids": tf.argmax(logits, -1, output_type=tf.int32),
            "probabilities": tf.nn.softmax(logits),
            "confidence": confidence,
            "prototype_indices": tf.gather(database.indices, top_indices),
            "prototype_weights": top_weights,
            "prototype_labels": tf.gather(database.labels, top_indices),
        }
        if confidence_threshold is not None:
            abstained = confidence < tf.cast(confidence_threshold, tf.float32)
            outputs["abstained"] = abstained
            outputs["class_ids"] = tf.where(abstained, -1, outputs["class_ids"])
        return outputs

    return serve, preprocessing_layers


def _checked(raw, signature):
    """The raw inputs, each made to depend on a check of its shape and of a non-empty
    batch, so that a bad request fails with InvalidArgument before any computation
    (a loaded signature does not enforce its own static shapes)."""
    checked = {}
    for name, spec in signature.items():
        value = tf.ensure_shape(raw[name], spec.shape)  # "Shape of tensor ... is not compatible"
        non_empty = tf.debugging.assert_positive(
            tf.shape(value)[0], message="empty batch: send at least one instance"
        )
        with tf.control_dependencies([non_empty]):
            checked[name] = tf.identity(value)
    return checked


def next_version_dir(export_dir, model_name):
    """`<export_dir>/<model_name>/<n>` with n one above the largest existing version."""
    base = os.path.join(export_dir, model_name)
    versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
    return os.path.join(base, str(max(versions, default=0) + 1))


def encode_database(model, preprocess, database_split, batch_size=512):
    """The database split (stored form) encoded without augmentation, as the layer
    that a SavedModel keeps it in; also set as the model's database."""
    from proto_tf.evaluation import Evaluator  # Avoid a cycle at import time.

    Evaluator(model, preprocess, batch_size).set_database(database_split)
    return PrototypeDatabaseLayer(
        model.database.keys.numpy(),
        model.database.values.numpy(),
        database_split.labels,
        database_split.indices,
        name="prototype_database",
    )


def export_saved_model(model, info, preprocess, database, path, top_k=5):
    """Writes a SavedModel to `path` for TF Serving.

    `database` (from `encode_database`; None for a baseline) is baked in.
    Signatures: `serving_default` (raw inputs -> class_ids, probabilities,
    confidence, prototype_indices/weights/labels) and `abstain` (the same inputs plus
    a per-instance `confidence_threshold`; class_ids is -1 and `abstained` True where
    the confidence is below it). A baseline model returns class_ids and probabilities.
    """
    serve, preprocessing_layers = build_serving_function(model, info, preprocess, database, top_k)
    signature = raw_input_signature(info)

    archive = keras.export.ExportArchive()
    archive.track(model)
    for layer in preprocessing_layers + ([database] if database is not None else []):
        archive.track(layer)
    archive.add_endpoint(SERVING_SIGNATURE, lambda raw: serve(raw), input_signature=[signature])
    if database is not None:
        threshold = tf.TensorSpec([None], tf.float32, name="confidence_threshold")
        archive.add_endpoint(
            ABSTAIN_SIGNATURE,
            lambda raw, confidence_threshold: serve(raw, confidence_threshold),
            input_signature=[signature, threshold],
        )
    archive.write_out(path, verbose=False)
    return path


def export_model_dir(
    model_dir,
    export_dir,
    model_name=None,
    checkpoint="best",
    infer_database_size=None,
    data_dir=None,
    top_k=5,
):
    """Exports a run of `run/train.py` as `<export_dir>/<model_name>/<next version>`.

    The inference database is `infer_database_size` training examples (the run's
    D_infer by default), the same fixed-seed sample its evaluation used.
    Returns the version directory written.
    """
    from proto_tf import training  # Heavy; only this entry point needs it.
    from proto_tf.data import dataset_info, inference_database

    config, dataset, model, _ = training.load_run(model_dir, checkpoint, data_dir)
    info = dataset_info(config.dataset)
    database = None
    if not model.is_baseline:
        database_split = inference_database(
            dataset.train, infer_database_size or config.infer_database_size, config.seed,
            info.class_shares,
        )  # fmt: skip
        database = encode_database(model, dataset.preprocess, database_split)
    path = next_version_dir(export_dir, model_name or os.path.basename(os.path.normpath(model_dir)))
    return export_saved_model(model, info, dataset.preprocess, database, path, top_k)
