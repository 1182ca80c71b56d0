"""The functions behind an export's signatures: raw inputs in (checked in the graph),
the class, its confidence and the prototypes behind it out; abstention below a
threshold; a shard's answer for a router."""

import dataclasses
from typing import Callable, Sequence

import keras
import tensorflow as tf

from proto_tf.data.dataset_info import DatasetInfo
from proto_tf.data.kinds import ServingInputs
from proto_tf.index import PrototypeIndex
from proto_tf.model import ProtoAttend
from proto_tf.serving.options import ExportOptions
from proto_tf.serving.request_checks import checked_request, checked_threshold

SERVING_SIGNATURE = "serving_default"
ABSTAIN_SIGNATURE = "abstain"
CALIBRATED_SIGNATURE = "abstain_calibrated"  # Exports with a calibrated threshold.
SHARD_SIGNATURE = "shard_answer"  # Exports with shard entries: a shard's answer for a router.


def build_serving_function(
    model: keras.Model,
    info: DatasetInfo,
    preprocess: Callable,
    database: PrototypeIndex | None,
    options: ExportOptions = ExportOptions(),
    class_names: Sequence[str] | None = None,
) -> tuple[Callable, list]:
    """`serve(raw_inputs_dict, confidence_threshold=None) -> dict of named outputs`
    for a dataset's raw inputs (its kind's `serving_default` inputs); also returns the
    preprocessing layers to track."""
    inputs = info.kind.serving_endpoints(info, preprocess)[""]
    serve = serving_function(model, inputs, database, options, class_names)
    return serve, list(inputs.layers)


def serving_function(
    model: keras.Model,
    inputs: ServingInputs,
    database: PrototypeIndex | None,
    options: ExportOptions = ExportOptions(),
    class_names: Sequence[str] | None = None,
) -> Callable:
    """`serve(raw_inputs_dict, confidence_threshold=None, calibrated_threshold=None) ->
    dict of named outputs` for raw inputs described by `inputs` (a ServingInputs): a
    per-instance `confidence_threshold` tensor, or one float for every instance.

    Every request is checked in the graph first (`checked_request`): a bad one fails with
    InvalidArgument naming the input, never with a number. `class_names` (label
    order; default the label ids as strings) name the decision and the prototypes'
    labels in the outputs `class_names` and `prototype_label_names`. A database of
    more than `options.stream_above` prototypes is read in blocks
    (`PrototypeIndex.search`: memory does not grow with D times the batch).
    """
    to_inputs, extra_outputs, signature = inputs.to_inputs, inputs.extra_outputs, inputs.signature
    names = list(class_names) if class_names is not None else [str(i) for i in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise ValueError(f"{len(names)} class names for a model of {model.num_classes} classes.")

    def serve(raw, confidence_threshold=None, calibrated_threshold=None):
        names_tensor = tf.constant(names)
        raw = checked_request(raw, signature, options.max_batch_size, inputs.value_ranges, inputs.missing_allowed)
        if calibrated_threshold is not None:  # The export's own threshold, for every instance.
            confidence_threshold = tf.fill([tf.shape(raw[next(iter(signature))])[0]], calibrated_threshold)
        elif confidence_threshold is not None:
            confidence_threshold = checked_threshold(confidence_threshold, raw, signature)
        model_inputs = to_inputs(raw)
        if not model.uses_database:
            logits = model(model_inputs, training=False)["logits"]
            outputs = {"class_ids": tf.argmax(logits, -1, output_type=tf.int32)}
            outputs["probabilities"] = tf.nn.softmax(tf.cast(logits, tf.float32))
            outputs["class_names"] = tf.gather(names_tensor, outputs["class_ids"])
            outputs.update(extra_outputs(raw))
            return outputs
        # The model's own inference pass over its database, read with its size known:
        # dense up to `stream_above` prototypes, in blocks above (never a [B, D] tensor).
        predicted = model.predict_from_index(model_inputs, database, options.top_k, options.stream_above, static=True)
        top_weights, top_indices = predicted["top_weights"], predicted["top_rows"]
        _, _, labels, indices = database.static_tensors()
        logits = tf.cast(predicted["logits"], tf.float32)
        outputs = {
            "class_ids": tf.argmax(logits, -1, output_type=tf.int32),
            "probabilities": tf.nn.softmax(logits),
            "confidence": predicted["confidence"],
            "prototype_indices": tf.gather(indices, top_indices),
            "prototype_weights": top_weights,
            "prototype_labels": tf.gather(labels, top_indices),
            **extra_outputs(raw),
        }
        outputs["class_names"] = tf.gather(names_tensor, outputs["class_ids"])
        outputs["prototype_label_names"] = tf.gather(names_tensor, outputs["prototype_labels"])
        if confidence_threshold is not None:
            abstained = outputs["confidence"] < confidence_threshold
            outputs["abstained"] = abstained
            outputs["class_ids"] = tf.where(abstained, -1, outputs["class_ids"])
            outputs["class_names"] = tf.where(abstained, "", outputs["class_names"])
        return outputs

    return serve


def shard_function(
    model: ProtoAttend,
    inputs: ServingInputs,
    database: PrototypeIndex,
    entries: int,
    max_batch_size: int = ExportOptions.max_batch_size,
) -> Callable:
    """`shard(raw_inputs_dict) -> dict`: the answer of a shard holding `database` for raw
    inputs (`ProtoAttend.shard_answer` with `entries` entries), which a router turns into
    a `sharding.ShardAnswer` (`sharding.answer_from_outputs`) and merges with the other
    shards' (`sharding.merge_answers`). Requests are checked as `serving_function`'s."""

    def shard(raw):
        raw = checked_request(raw, inputs.signature, max_batch_size, inputs.value_ranges, inputs.missing_allowed)
        keys, values, labels, indices = database.static_tensors()
        return model.shard_answer(
            inputs.to_inputs(raw), keys, values, labels, indices, entries, coverage=database.coverage
        )

    return shard


def at_threshold(serve: Callable, threshold: float) -> Callable:
    """A signature function of `serve` abstaining below a fixed `threshold`."""

    def calibrated(raw):
        return serve(raw, calibrated_threshold=threshold)

    return calibrated


def signature_functions(serve: Callable) -> tuple[Callable, Callable]:
    """The two signature functions of `serve`, each with only its tensor arguments."""

    def predict(raw):
        return serve(raw)

    def abstain(raw, confidence_threshold):
        return serve(raw, confidence_threshold)

    return predict, abstain


@dataclasses.dataclass(frozen=True)
class SignatureContext:
    """What a signature of one endpoint (a `ServingInputs`) is built from: the model,
    the endpoint's inputs, the database (None for a baseline), the endpoint's `serve`
    (`serving_function`), the export's options and its calibrated threshold (or None)."""

    model: keras.Model
    inputs: ServingInputs
    database: PrototypeIndex | None
    serve: Callable
    options: ExportOptions
    calibrated_threshold: float | None


@dataclasses.dataclass(frozen=True)
class Signature:
    """One kind of signature of an export: its name, and `build(context)`, which gives
    `(function, input_signature)` or None where the export has no such signature. The
    signature of endpoint "" is named `name`; of another endpoint E, `name_E` (the
    serving signature: E alone)."""

    name: str
    build: Callable[[SignatureContext], "tuple[Callable, list] | None"]
    named_by_endpoint: bool = False

    def key(self, endpoint: str) -> str:
        if not endpoint:
            return self.name
        return endpoint if self.named_by_endpoint else f"{self.name}_{endpoint}"


def _predict(context):
    return signature_functions(context.serve)[0], [context.inputs.signature]


def _abstain(context):
    if context.database is None:
        return None
    threshold = tf.TensorSpec([None], tf.float32, name="confidence_threshold")
    return signature_functions(context.serve)[1], [context.inputs.signature, threshold]


def _calibrated(context):
    if context.database is None or context.calibrated_threshold is None:
        return None
    return at_threshold(context.serve, float(context.calibrated_threshold)), [context.inputs.signature]


def _shard(context):
    options = context.options
    if options.shard_entries is None:
        return None
    # Softmax's merged top-k needs only each shard's top-k; a sparse normalisation
    # needs each shard's whole support.
    entries = context.model.normalization.shard_entry_count(options.shard_entries, options.top_k)
    function = shard_function(context.model, context.inputs, context.database, entries, options.max_batch_size)
    return function, [context.inputs.signature]


# The signatures an export may have, in the order they are added; a new kind of
# signature is one entry here.
SIGNATURES = (
    Signature(SERVING_SIGNATURE, _predict, named_by_endpoint=True),
    Signature(ABSTAIN_SIGNATURE, _abstain),
    Signature(CALIBRATED_SIGNATURE, _calibrated),
    Signature(SHARD_SIGNATURE, _shard),
)
