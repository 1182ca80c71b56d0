"""SavedModels for TF Serving: raw inputs in, the class, its confidence and the
prototypes behind it out, with the encoded inference database baked in as weights."""

import dataclasses
import os
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from proto_tf import json_files, streaming
from proto_tf.calibration import DEFAULT_DELTA, Calibration
from proto_tf.data import inference_database
from proto_tf.data.common import Split
from proto_tf.data.dataset_info import DatasetInfo
from proto_tf.data.kinds import EXPORT_DATA_FILE, ServingInputs
from proto_tf.data.raw_examples import load_raw, take
from proto_tf.encoders.backbone import TextPreparation
from proto_tf.errors import ConfigError, RunDirectoryError
from proto_tf.evaluation import Evaluator, calibrate_on
from proto_tf.index import DEFAULT_STREAM_ABOVE, PrototypeIndex
from proto_tf.model import ProtoAttend
from proto_tf.serving import warmup
from proto_tf.serving.options import DEFAULT_MAX_BATCH_SIZE, DEFAULT_SHARD_ENTRIES, ExportOptions
from proto_tf.serving.publishing import next_version_dir, publish_version  # noqa: F401 (export's names)
from proto_tf.serving.request_checks import checked_threshold as _checked_threshold  # noqa: F401
from proto_tf.serving.signatures import (  # noqa: F401 (export's names)
    ABSTAIN_SIGNATURE,
    CALIBRATED_SIGNATURE,
    SERVING_SIGNATURE,
    SHARD_SIGNATURE,
    SIGNATURES,
    SignatureContext,
    at_threshold,
    build_serving_function,
    serving_function,
    shard_function,
    signature_functions,
)
from proto_tf.training import run_directory, run_store
from proto_tf.training.config import check_against_data
from proto_tf.work_progress import WorkProgress

# The threshold's calibration (run/export.py --target_accuracy / --target_coverage).
CALIBRATION_FILE = os.path.join("assets.extra", "proto_tf_calibration.json")
# The run an export was made from (`run_directory.run_identity`) and its checkpoint.
RUN_FILE = os.path.join("assets.extra", "proto_tf_run.json")


def encode_database(
    model: ProtoAttend, preprocess: Callable, database_split: Split, batch_size: int = 512, key_dtype: str = "float32"
) -> PrototypeIndex:
    """The database split (stored form) encoded without augmentation and set as the
    model's database (the one a SavedModel stores), keys stored as `key_dtype`;
    returns it."""
    Evaluator(model, preprocess, batch_size, progress=WorkProgress).set_database(database_split, key_dtype)
    return model.database


def export_saved_model(
    model: ProtoAttend,
    info: DatasetInfo,
    preprocess: Callable,
    database: PrototypeIndex | None,
    path: str,
    top_k: int = 5,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    class_names: Sequence[str] | None = None,
    calibration: Calibration | None = None,
    stream_above: int = DEFAULT_STREAM_ABOVE,
    shard_entries: int | None = None,
    tracked_layers: Sequence = (),
) -> str:
    """Writes a SavedModel to `path` for TF Serving.

    `database` (the model's, from `encode_database`; None for a baseline) is baked
    in, stored once (as the variables the serving functions read).
    Signatures: `serving_default` (raw inputs -> class_ids, probabilities,
    confidence, prototype_indices/weights/labels) and `abstain` (the same inputs plus
    a per-instance `confidence_threshold`; class_ids is -1 and `abstained` True where
    the confidence is below it). A baseline model returns class_ids and probabilities.
    Both also return `class_names` (the decision's name; "" where abstained) and
    `prototype_label_names`; tabular exports also `unknown_categories`. The inputs are
    those of the dataset's kind (`DataKind.serving_endpoints`): image exports add
    `image_bytes` and `abstain_image_bytes`, taking encoded images (strings) as TF
    Serving's REST API sends `{"b64": ...}` values. Requests of more than
    `max_batch_size` instances are refused. `EXPORT_DATA_FILE` tells run/predict.py
    the kind and how its files are read. With a `calibration` (`evaluation.calibrate_on`), the
    signature `abstain_calibrated` abstains below its threshold, and the calibration
    (threshold, validation coverage and accuracy, the guaranteed bound, the table of
    thresholds tested) is written to `CALIBRATION_FILE`. With `shard_entries`, the
    signature `shard_answer` answers as one shard of a sharded database
    (`shard_function`). `tracked_layers` are layers `preprocess` calls (a frozen
    backbone): their weights are saved with the export.
    """
    endpoints = {
        name: dataclasses.replace(inputs, layers=(*inputs.layers, *tracked_layers))
        for name, inputs in info.kind.serving_endpoints(info, preprocess).items()
    }
    threshold = calibration.threshold if calibration is not None else None
    write_saved_model(
        model, endpoints, database, path, top_k, max_batch_size, class_names, threshold, stream_above, shard_entries
    )
    os.makedirs(os.path.join(path, os.path.dirname(EXPORT_DATA_FILE)), exist_ok=True)
    if calibration is not None:
        json_files.write_json(os.path.join(path, CALIBRATION_FILE), calibration.to_json())
    json_files.write_json(
        os.path.join(path, EXPORT_DATA_FILE), {"kind": info.kind.name, **info.kind.export_description(info)}
    )
    return path


def write_saved_model(
    model: ProtoAttend,
    endpoints: dict,
    database: PrototypeIndex | None,
    path: str,
    top_k: int = 5,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    class_names: Sequence[str] | None = None,
    calibrated_threshold: float | None = None,
    stream_above: int = DEFAULT_STREAM_ABOVE,
    shard_entries: int | None = None,
) -> str:
    """Writes a SavedModel with, for each `{name: ServingInputs}` of `endpoints`, a
    signature `name` (`serving_default` for "") and, with a database, `abstain_<name>`
    (`abstain` for "") and, with a `calibrated_threshold`, `abstain_calibrated_<name>`
    (`abstain_calibrated` for ""): the abstain outputs at that threshold, without a
    threshold input; with `shard_entries`, `shard_answer_<name>` (`shard_answer` for
    ""): the database's answer as one shard of a larger one (`shard_function`)."""
    options = ExportOptions(top_k, max_batch_size, stream_above, database.key_dtype if database else "float32")
    options = options.replace(shard_entries=shard_entries)
    if options.shard_entries is not None and database is None:
        raise ConfigError("--shard / --shard_entries need a model with prototypes; this run is a baseline.")
    archive = keras.export.ExportArchive()
    archive.track(model)  # The database's variables are tracked as the endpoints read them.
    for endpoint, inputs in endpoints.items():
        serve = serving_function(model, inputs, database, options, class_names)
        for layer in inputs.layers:
            archive.track(layer)
        context = SignatureContext(model, inputs, database, serve, options, calibrated_threshold)
        for signature in SIGNATURES:
            built = signature.build(context)
            if built is not None:
                function, input_signature = built
                archive.add_endpoint(signature.key(endpoint), function, input_signature=input_signature)
    archive.write_out(path, verbose=False)
    return path


def export_any(
    model: ProtoAttend,
    database_inputs: np.ndarray | dict,
    database_labels: np.ndarray,
    input_signature: dict,
    path: str,
    preprocess: Callable | None = None,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    stream_above: int = DEFAULT_STREAM_ABOVE,
    key_dtype: str = "float32",
    shard_entries: int | None = None,
    database_indices: np.ndarray | None = None,
    shard_rows: tuple[int, int, int] | None = None,
) -> str:
    """Exports any ProtoAttend (any encoder, any data) with the signatures of the
    built-in datasets.

    Args:
      model: a built ProtoAttend with attention.
      database_inputs: the prototypes' raw inputs, as the serving inputs are given:
        an array when `input_signature` has one input, else a dict of arrays.
      database_labels: their labels; prototype indices are positions in them.
      input_signature: `{name: tf.TensorSpec}` of the raw serving inputs.
      path: the SavedModel folder to write.
      preprocess: `preprocess(raw) -> model inputs`, TF ops only (it runs in the
        serving graph); default: the single input as it is.
      class_names: names of the classes in label order.
      top_k, max_batch_size, stream_above: as for `export_saved_model`.
      key_dtype: the dtype the database's keys are stored in (`KEY_DTYPES`).
      shard_entries: adds the `shard_answer` signature (`shard_function`).
      database_indices: the prototypes' indices (default their positions), e.g. their
        rows in the whole database when this one is a shard of it.
      shard_rows: for a shard, `(first, last + 1, size)`: its rows in the whole
        database and the whole's size, which its answers report so that a router
        refuses a duplicated or a missing shard (default: the database is whole).
    """
    if not model.uses_database:
        raise ValueError("export_any needs a model with attention (prototypes).")
    ExportOptions(top_k, max_batch_size, stream_above, key_dtype, shard_entries)  # Checked before any work.
    names = list(input_signature)
    if preprocess is None:
        if len(names) != 1:
            raise ValueError("Give `preprocess` for a signature of several inputs.")
        preprocess = lambda raw: raw[names[0]]  # noqa: E731
    raw_database = database_inputs if isinstance(database_inputs, dict) else {names[0]: database_inputs}
    count = len(next(iter(raw_database.values())))
    batches = (
        preprocess({name: tf.convert_to_tensor(value[start : start + 1024]) for name, value in raw_database.items()})
        for start in range(0, count, 1024)
    )
    keys, values = model.encode_batches(batches)
    indices = np.arange(count) if database_indices is None else np.asarray(database_indices)
    model.set_database(keys, values, np.asarray(database_labels), indices, key_dtype)
    database = model.database
    database.coverage = None if shard_rows is None else tuple(int(n) for n in shard_rows)
    # Signature keys come from the specs' names: name each after its key.
    signature = {key: tf.TensorSpec(spec.shape, spec.dtype, name=key) for key, spec in input_signature.items()}
    inputs = ServingInputs(signature, preprocess)
    return write_saved_model(
        model,
        {"": inputs},
        database,
        path,
        top_k,
        max_batch_size,
        class_names,
        stream_above=stream_above,
        shard_entries=shard_entries,
    )


def export_model_dir(
    model_dir: str,
    export_dir: str,
    model_name: str | None = None,
    checkpoint: str = "best",
    infer_database_size: int | None = None,
    data_dir: str | None = None,
    top_k: int = 5,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    database_path: str | None = None,
    report: Callable[[str], None] = print,
    target_accuracy: float | None = None,
    target_coverage: float | None = None,
    calibration_delta: float = DEFAULT_DELTA,
    stream_above: int = DEFAULT_STREAM_ABOVE,
    key_dtype: str = "float32",
    shard: str | None = None,
    shard_entries: int | None = None,
) -> str:
    """Exports a run of `run/train.py` as `<export_dir>/<model_name>/<next version>`,
    published atomically (`publish_version`).

    With `target_accuracy` (or `target_coverage`), the confidence threshold is chosen on
    the run's validation split with the export's database (`proto_tf.calibration`: the
    kept decisions' accuracy, or the share kept, is at least the target on new data
    with probability 1 - `calibration_delta`), served by `abstain_calibrated` and
    written to `CALIBRATION_FILE`. A database of more than `stream_above` prototypes
    is served in blocks (`PrototypeIndex.search`). `key_dtype` (float32, float16
    or bfloat16) is the dtype its keys are stored in; attention computes in float32, and
    the calibration is made with the keys as stored.

    The inference database is `infer_database_size` training examples (the run's
    D_infer by default), the same fixed-seed sample its evaluation used, or, with
    `database_path`, every labelled example of that file or folder
    (read by the dataset's kind, `DataKind.read_database`; prototype indices are then its rows): prototypes
    can be added or removed without retraining. Returns the version directory written.

    With `shard` ("I/N"), the export holds only the I-th of N consecutive parts of that
    database (prototype indices stay those of the whole) and adds the `shard_answer`
    signature with `shard_entries` entries (default `DEFAULT_SHARD_ENTRIES`), which a
    router merges across the N exports (`serving.sharding`); `shard_entries` alone adds
    it to an export of the whole database.

    The `best` checkpoint of an unfinished run is refused (a RunDirectoryError saying
    how far it got); `checkpoint="last"` exports it anyway. Which checkpoint and step
    is exported is `report`ed.
    """
    part = parse_shard(shard) if shard is not None else None
    if part is not None and shard_entries is None:
        shard_entries = DEFAULT_SHARD_ENTRIES
    # Checked before the run is read: a bad option costs no loading.
    options = ExportOptions(top_k, max_batch_size, stream_above, key_dtype, shard_entries)
    _check_request(model_name, part, infer_database_size, target_accuracy, target_coverage, calibration_delta)
    status = run_store.run_status(model_dir)
    if not status.finished and checkpoint != "last":
        raise RunDirectoryError(
            f"the run in {model_dir} is unfinished ({status.describe()}): finish it by running "
            "its training command again, or export its last checkpoint anyway with --checkpoint=last."
        )
    config, dataset, model, checkpoint_path = run_store.load_run(model_dir, checkpoint, data_dir)
    info, serving_preprocess, tracked_layers = _raw_inputs_of(dataset)
    step = run_store.checkpoint_step(checkpoint_path)
    which = "best validation" if os.path.basename(os.path.dirname(checkpoint_path)) == "best" else "last"
    report(
        f"Exporting {checkpoint_path} (step {step}, the {which} checkpoint"
        + (f"; the run is unfinished: {status.describe()})." if not status.finished else ").")
    )
    database = None
    if model.uses_database:
        database = _database_of_run(
            model, config, dataset, (info, serving_preprocess), database_path, infer_database_size, key_dtype
        )
        database = _shard_of(model, database, *part, key_dtype) if part is not None else database
    calibration = None
    if target_accuracy is not None or target_coverage is not None:
        calibration = _calibrate(model, dataset, config, target_accuracy, target_coverage, calibration_delta, report)
    name = model_name or os.path.basename(os.path.normpath(model_dir))
    requests = _warmup_requests(config, info) if warmup.serving_protos_available() else []
    identity = {**run_directory.run_identity(model_dir), "checkpoint": os.path.basename(checkpoint_path), "step": step}

    def write(path):
        export_saved_model(
            model,
            info,
            serving_preprocess,
            database,
            path,
            options.top_k,
            options.max_batch_size,
            dataset.class_names,
            calibration,
            options.stream_above,
            options.shard_entries,
            tracked_layers,
        )
        json_files.write_json(os.path.join(path, RUN_FILE), identity)
        if requests:
            warmup.write_warmup_requests(path, requests, name)

    target = publish_version(write, export_dir, name)
    estimate = warmup.memory_estimate(
        model, database, max_batch_size, stream_above, streaming.DEFAULT_BLOCK_SIZE, tracked_layers
    )
    written = os.path.join(target, warmup.WARMUP_FILE) if requests else None
    report(warmup.describe(target, estimate, len(database) if database else 0, max_batch_size, written))
    return target


def _check_request(model_name, part, infer_database_size, target_accuracy, target_coverage, calibration_delta):
    """A ConfigError for export options that do not fit together or are out of range."""
    _check_model_name(model_name)
    if part is not None and (target_accuracy is not None or target_coverage is not None):
        raise ConfigError(
            "--shard with --target_accuracy / --target_coverage: a shard's own confidence is not the "
            "merged one; calibrate on the router's merged answers instead."
        )
    if infer_database_size is not None:
        _check_positive(infer_database_size=infer_database_size)
    targets = {"target_accuracy": target_accuracy, "target_coverage": target_coverage}
    for name, value in targets.items():
        if value is not None and not 0.0 < value < 1.0:
            raise ConfigError(f"--{name}={value} must be in (0, 1), e.g. --{name}=0.95.")
    if target_accuracy is not None and target_coverage is not None:
        raise ConfigError("give one of --target_accuracy and --target_coverage, not both.")
    if not 0.0 < calibration_delta < 1.0:
        raise ConfigError(f"--calibration_delta={calibration_delta} must be in (0, 1), e.g. 0.05.")


def _database_of_run(model, config, dataset, raw_inputs, database_path, infer_database_size, key_dtype):
    """The export's encoded database: every labelled example of `database_path` (its
    rows the prototype indices), else the run's fixed-seed inference sample of
    `infer_database_size` (default D_infer) training examples. `raw_inputs` is
    `(info, preprocess)` of the raw inputs a database file holds (`_raw_inputs_of`)."""
    info, serving_preprocess = raw_inputs
    if database_path is not None:
        database_split = info.kind.read_database(database_path, info, dataset.class_names)
        return encode_database(model, serving_preprocess, database_split, key_dtype=key_dtype)
    size = infer_database_size or config.infer_database_size
    check_against_data(dataclasses.replace(config, infer_database_size=size), len(dataset.train))
    database_split = inference_database(dataset.train, size, config.seed, info.class_shares)
    return encode_database(model, dataset.preprocess, database_split, key_dtype=key_dtype)


def _raw_inputs_of(dataset):
    """`(info, preprocess, layers to track)` of the raw inputs an export takes: with a
    frozen backbone, the data's own kind, and the backbone run in the graph."""
    if dataset.features is None:
        return dataset.info, dataset.preprocess, ()
    backbone = dataset.features.backbone
    if isinstance(backbone.features.converter, TextPreparation):
        raise ConfigError(
            f"--backbone={backbone.spec} is a keras-hub text preset: its tokenizer runs TensorFlow Text ops, which "
            "TF Serving's standard build cannot load, so exporting such a run is not built; evaluate it with "
            "run/evaluate.py."
        )
    return dataset.features.info, dataset.features.preprocess, (backbone.features,)


def _check_model_name(name):
    """A model name is one folder inside the export folder: `../x` or `a/b` would write
    elsewhere."""
    if name is None:
        return
    if name in ("", ".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ConfigError(
            f"--model_name={name!r} must be a plain folder name (no '/', not '.' or '..'): the export is "
            "written to --export_dir/<model_name>/<version>."
        )


def parse_shard(text: str) -> tuple[int, int]:
    """`(I, N)` from `--shard=I/N`; a ConfigError saying what is valid otherwise."""
    index, _, count = str(text).partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()) or not 0 <= int(index) < int(count):
        raise ConfigError(f"--shard={text!r} must be I/N with 0 <= I < N, e.g. --shard=0/4 for the first of 4.")
    return int(index), int(count)


def _shard_of(model, database, index, count, key_dtype):
    """The model's database cut to its `index`-th of `count` consecutive parts."""
    size = len(database)
    if count > size:
        raise ConfigError(f"--shard={index}/{count}: a database of {size} prototypes cannot make {count} shards.")
    start, end = index * size // count, (index + 1) * size // count
    keys, values, labels = (t[start:end] for t in database.tensors())
    model.set_database(keys, values, labels, database.indices[start:end], key_dtype)
    model.database.coverage = (start, end, size)
    return model.database


def _warmup_requests(config, info, sizes=(1, 8)):
    """`serving_default` inputs of the first test examples (one request per size): what
    TF Serving replays when it loads the version."""
    raw = load_raw(config.dataset, config.data_dir, config.data_options(), config.seed)
    count = len(raw["test_labels"])
    return [info.kind.request(take(raw["test"], np.arange(min(size, count))), raw) for size in sizes]


def _calibrate(model, dataset, config, target_accuracy, target_coverage, delta, report):
    """The calibration of the export's threshold on the run's validation split."""
    if not model.uses_database:
        raise ConfigError(
            "--target_accuracy / --target_coverage need a model with prototypes (a confidence); this run is a baseline."
        )
    if dataset.validation is None or len(dataset.validation) == 0:
        raise ConfigError(
            "--target_accuracy / --target_coverage calibrate on the run's validation split, and this run has "
            "none (--validation_fraction=0): train with --validation_fraction > 0."
        )
    evaluator = Evaluator(model, dataset.preprocess, config.eval_batch_size, progress=WorkProgress)
    result = calibrate_on(evaluator, dataset.validation, target_accuracy, target_coverage, delta)
    report(
        f"Calibrated on {result.examples} validation examples: confidence >= {result.threshold} keeps "
        f"{100 * result.coverage:.1f} % at {100 * result.accuracy:.2f} % accuracy (guaranteed {result.target} "
        f">= {result.target_value} with {100 * (1 - delta):g} % confidence: bound {result.bound:.4f})."
    )
    return result


def _check_positive(**values):
    for name, value in values.items():
        if value is None or value < 1:
            raise ConfigError(f"--{name}={value!r} must be a positive integer.")
