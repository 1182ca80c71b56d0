"""Predictions for a user's new inputs from an exported SavedModel, as JSON Lines.

Inputs are read in the formats of the training data, in batches (memory does not grow
with the input, but for a CSV of a user's documents, read whole): a table's CSV (a
header read by name, the label column optional; Adult's also without a header), a
folder of PNG/JPEG images (resized to the model's size as evaluation does), a text file
with one document per line, or a CSV of documents (DBPedia's `class,"title","content"`,
or a user's by its header's text columns).
"""

import json
import os
import re
import sys
from typing import Iterator

import keras
import tensorflow as tf

from proto_tf.data.kinds import EXPORT_DATA_FILE, DataKind, kind_named, kind_of_signature
from proto_tf.errors import ConfigError
from proto_tf.json_files import read_json, temporary_beside
from proto_tf.serving.export import CALIBRATED_SIGNATURE


def signature_inputs(serve) -> dict:
    """`{name: TensorSpec}` of a loaded signature's inputs."""
    return dict(serve.structured_input_signature[1])


def export_data(saved_model: str, specs: dict) -> tuple[DataKind, dict]:
    """The kind of data an export reads and how its files are read (`EXPORT_DATA_FILE`;
    for exports written before it, the kind from the signature's input names and the
    files of then)."""
    path = os.path.join(saved_model, EXPORT_DATA_FILE)
    if os.path.isfile(path):
        description = read_json(path, "the kind of data this export reads")
        return kind_named(description["kind"]), description
    description = {}
    for name, key in (("proto_tf_table.json", "table"), ("proto_tf_text.json", None)):
        old = os.path.join(saved_model, "assets.extra", name)
        if os.path.isfile(old):
            found = read_json(old, "the columns this export reads")
            description.update({key: found} if key else found)
    return kind_of_signature(specs), description


def read_inputs(
    path: str, specs: dict, batch_size: int, saved_model: str | None = None
) -> Iterator[tuple[dict, list[str]]]:
    """Batches `(raw inputs for the signature, source of each input)` from `path`, read
    as they are needed, in the formats of the export's kind (`DataKind.read_inputs`)."""
    kind, description = export_data(saved_model, specs) if saved_model else (kind_of_signature(specs), {})
    return kind.read_inputs(path, specs, batch_size, description)


def predict_file(
    saved_model: str,
    inputs: str,
    output: str,
    confidence_threshold: float | None = None,
    batch_size: int = 256,
    show_progress: bool | None = None,
    calibrated: bool = False,
) -> dict:
    """Writes one JSON line per input of `inputs` to `output` and returns a summary
    (`inputs`, `per_class` counts with abstentions under "(abstained)", `abstained_share`).

    Each line: `input` (position, from 0), `source` (file:line or image file),
    `class_id`, `class_name`, `probabilities`, and with prototypes `confidence`,
    `abstained` (confidence below `confidence_threshold`; then class_id is -1 and
    class_name ""), and `prototypes`: `{database_row, weight, label, label_name}`, the
    row in the database's source file (the training file, or the `--database` file).
    `calibrated` abstains below the threshold the export was calibrated with
    (`abstain_calibrated`).
    """
    if confidence_threshold is not None and not 0.0 <= confidence_threshold <= 1.0:
        raise ConfigError(f"--confidence_threshold={confidence_threshold} must be in [0, 1].")
    if batch_size < 1:
        raise ConfigError(f"--batch_size={batch_size} must be a positive integer.")
    check_output_path(output, inputs)
    loaded = tf.saved_model.load(check_saved_model(saved_model))
    serve = loaded.signatures["serving_default"]
    has_prototypes = "abstain" in loaded.signatures
    if confidence_threshold is not None and not has_prototypes:
        raise ConfigError("--confidence_threshold needs a model with prototypes; this is a baseline export.")
    if calibrated and confidence_threshold is not None:
        raise ConfigError("give one of --calibrated and --confidence_threshold, not both.")
    if calibrated and CALIBRATED_SIGNATURE not in loaded.signatures:
        raise ConfigError(
            f"--calibrated: the export {saved_model} has no calibrated threshold; export the run "
            "with --target_accuracy or --target_coverage."
        )
    if calibrated:
        serve = loaded.signatures[CALIBRATED_SIGNATURE]
    if confidence_threshold is not None:
        serve = loaded.signatures["abstain"]
    specs = {k: v for k, v in signature_inputs(serve).items() if k != "confidence_threshold"}
    show_progress = sys.stdout.isatty() if show_progress is None else show_progress
    progress = keras.utils.Progbar(None, unit_name="input") if show_progress else None
    counts, abstained, total = {}, 0, 0
    # Written beside the output and renamed when complete: a failing run leaves an
    # existing output as it was, never a truncated or partial file.
    try:
        handle, temporary = temporary_beside(output)
    except OSError as error:  # A missing or read-only folder.
        raise _unwritable(output, error) from None
    try:
        with handle:
            for raw, sources in read_inputs(inputs, specs, batch_size, saved_model):
                feed = {name: tf.constant(value) for name, value in raw.items()}
                if confidence_threshold is not None:
                    feed["confidence_threshold"] = tf.fill([len(sources)], float(confidence_threshold))
                out = {k: v.numpy() for k, v in _call(serve, feed, batch_size).items()}
                for row, source in enumerate(sources):
                    record = _record(out, row, total, source)
                    handle.write(json.dumps(record) + "\n")
                    name = "(abstained)" if record.get("abstained") else record["class_name"]
                    counts[name] = counts.get(name, 0) + 1
                    abstained += bool(record.get("abstained"))
                    total += 1
                if progress is not None:
                    progress.update(total)
        os.replace(temporary, output)
    except OSError as error:
        if error.filename not in (None, temporary, output):
            raise  # Not the output (an input that cannot be opened: a traceback names it).
        raise _unwritable(output, error) from None  # A full disk.
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return {"inputs": total, "per_class": counts, "abstained_share": abstained / max(total, 1)}


def _unwritable(output, error):
    return ConfigError(
        f"--output={output}: could not write the predictions ({error.strerror}); an existing output is left as it was."
    )


def check_output_path(output: str, inputs: str) -> None:
    """Refuses an `--output` that is a folder, lies in a missing folder, or is the
    input file itself (which the predictions would replace)."""
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise ConfigError(
            f"--output={output} is a folder; give a file name, e.g. {os.path.join(output, 'predictions.jsonl')}."
        )
    if not os.path.isdir(folder):
        raise ConfigError(f"--output={output}: the folder {folder} does not exist; create it or write elsewhere.")
    if os.path.exists(output) and os.path.exists(inputs) and os.path.samefile(output, inputs):
        raise ConfigError(
            f"--output={output} is the --inputs file; the predictions would replace it. Write them to another file."
        )


def check_saved_model(path: str) -> str:
    """`path` when it is a SavedModel folder; else a ConfigError saying what it is and
    what to give instead (a run folder, a model folder of versions, nothing)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(
            f"--saved_model={path} is a training run (it holds config.json); give it as --model_dir={path}."
        )
    versions = sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []
    if versions:
        raise ConfigError(
            f"--saved_model={path} holds versions {', '.join(map(str, versions))}; give one version "
            f"folder, e.g. --saved_model={os.path.join(path, str(versions[-1]))}."
        )
    raise ConfigError(f"--saved_model={path} is not a SavedModel folder (no saved_model.pb in it).")


_BATCH_LIMIT = re.compile(r"this export answers at most (\d+) per request")


def _call(serve, feed, batch_size):
    """`serve(**feed)`; a request above the export's batch limit becomes the flag to
    lower."""
    try:
        return serve(**feed)
    except tf.errors.InvalidArgumentError as error:
        limit = _BATCH_LIMIT.search(error.message)
        if limit is None:
            raise
        raise ConfigError(
            f"--batch_size={batch_size} is above the {limit.group(1)} inputs this export answers "
            f"per call; lower --batch_size to <= {limit.group(1)}."
        ) from None


def _record(out, row, position, source):
    record = {
        "input": position,
        "source": source,
        "class_id": int(out["class_ids"][row]),
        "class_name": out["class_names"][row].decode(),
        "probabilities": [round(float(p), 6) for p in out["probabilities"][row]],
    }
    if "confidence" in out:
        record["confidence"] = round(float(out["confidence"][row]), 6)
        record["abstained"] = bool(out["abstained"][row]) if "abstained" in out else False
        record["prototypes"] = [
            {"database_row": int(i), "weight": round(float(w), 6), "label": int(y), "label_name": n.decode()}
            for i, w, y, n in zip(
                out["prototype_indices"][row],
                out["prototype_weights"][row],
                out["prototype_labels"][row],
                out["prototype_label_names"][row],
            )
            if w > 0
        ]
    return record
