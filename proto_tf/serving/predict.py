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
import numpy as np
import tensorflow as tf

from proto_tf.data import adult, images, tabular, text_csv
from proto_tf.data.common import csv_rows, iterate_text_lines
from proto_tf.data.csv_dataset import read_table
from proto_tf.errors import ConfigError, DataError
from proto_tf.json_files import read_json
from proto_tf.serving.export import TABLE_FILE, TEXT_FILE

IMAGE_EXTENSIONS = images.IMAGE_EXTENSIONS


def signature_inputs(serve) -> dict:
    """`{name: TensorSpec}` of a loaded signature's inputs."""
    return dict(serve.structured_input_signature[1])


def input_kind(specs: dict) -> str:
    """"image", "text" or "tabular", from a signature's input names."""
    if "images" in specs:
        return "image"
    return "text" if "texts" in specs else "tabular"


def read_inputs(path: str, specs: dict, batch_size: int, table: tabular.TableFormat | None = None,
                text_columns: tuple | None = None) -> Iterator[tuple[dict, list[str]]]:  # fmt: skip
    """Batches `(raw inputs for the signature, source of each input)` from `path`,
    read as they are needed; a table's columns as `table` says (Adult's by default); a
    CSV of documents by its header's `text_columns` (DBPedia's rows without them)."""
    kind = input_kind(specs)
    if kind == "image":
        return _image_batches(path, specs["images"].shape, batch_size)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; expected a {'CSV' if kind == 'tabular' else 'text or CSV'} file.")
    if kind == "text":
        return _text_batches(path, batch_size, text_columns)
    return _table_batches(path, table or adult.TABLE, batch_size)


def table_format(saved_model: str) -> tabular.TableFormat:
    """The TableFormat written with a tabular export (Adult's for older exports)."""
    path = os.path.join(saved_model, TABLE_FILE)
    if not os.path.isfile(path):
        return adult.TABLE
    return tabular.TableFormat.from_json(read_json(path, "the columns this export reads"))


def _text_columns(saved_model):
    """The text columns a CSV of new documents is read by (exports of a user's
    documents), else None."""
    path = os.path.join(saved_model, TEXT_FILE)
    if not os.path.isfile(path):
        return None
    return tuple(read_json(path, "the columns this export reads texts from")["text_columns"])


def _batches_of(rows, batch_size):
    """Lists of up to `batch_size` items of the iterable `rows`, streamed."""
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _header_order(path, row, schema, label_column, required):
    """Positions of `schema.columns` in the rows of a file whose first row is `row`, and
    the header's width; None when `row` is a data row (rows are then read in the
    schema's order). A header is read by name, the columns in any order (by their names
    or their serving input names), the label column allowed and ignored; unknown,
    missing or repeated names are a DataError naming them."""
    aliases = {name: column for column, name in schema.input_names().items()}
    aliases.update({column: column for column in schema.columns})
    names = [field.strip() for field in row]
    mapped = [aliases.get(name, name) for name in names]
    if not set(mapped) & set(schema.columns):
        if required:
            raise DataError(f"{path}:1: expected a header row naming the columns ({', '.join(schema.columns)}).")
        return None
    unknown = [name for name, column in zip(names, mapped) if column not in schema.columns and name != label_column]
    missing = [column for column in schema.columns if column not in mapped]
    repeated = sorted({column for column in mapped if mapped.count(column) > 1})
    if unknown or missing or repeated:
        problems = [
            f"{kind}: {', '.join(found)}"
            for kind, found in (("unknown", unknown), ("missing", missing), ("repeated", repeated))
            if found
        ]
        label = f", and optionally {label_column}" if label_column else ""
        raise DataError(
            f"{path}:1: the header's columns do not match the model's ({'; '.join(problems)}); "
            f"expected {', '.join(schema.columns)} in any order{label}."
        )
    return [mapped.index(column) for column in schema.columns], len(names)


def _table_rows(path, schema, label_column, header_required):
    """`(line number, the fields in schema.columns order)` of each data row."""
    order, count = None, len(schema.columns)
    expected = (count, count + 1) if label_column else (count,)
    for line_number, row in csv_rows(path, skipinitialspace=True):
        if row[0].startswith("|"):
            continue  # The UCI test file's first line.
        if order is None and line_number == 1:
            found = _header_order(path, row, schema, label_column, header_required)
            if found is not None:
                order, width = found
                expected = (width,)
                continue
        if len(row) not in expected:
            layout = (
                f"the {expected[0]} columns of the header" if order is not None
                else f"{count} comma-separated fields ({', '.join(schema.columns)})"
                + (f", optionally followed by {label_column}" if label_column else "")
            )  # fmt: skip
            raise DataError(f"{path}:{line_number}: expected {layout}; got {len(row)}.")
        yield line_number, row if order is None else [row[i] for i in order]


def _table_batches(path, table, batch_size):
    schema, label_column = table.schema, table.label_column
    names = schema.input_names()
    found = False
    rows = _table_rows(path, schema, label_column, table.header_required)
    for chunk in _batches_of(rows, batch_size):
        found = True
        columns = {name: [] for name in schema.columns}
        for line_number, row in chunk:
            for number, (name, value) in enumerate(zip(schema.columns, row), 1):
                where = f"{path}:{line_number}: column {number} ({name})"
                columns[name].append(tabular.parse_value(schema, name, value, where))
        raw = {names[name]: array for name, array in tabular.as_arrays(schema, columns).items()}
        yield raw, [f"{path}:{line_number}" for line_number, _ in chunk]
    if not found:
        raise DataError(f"{path}: no rows found; expected rows of {', '.join(schema.columns)}.")


def _documents(path, text_columns=None):
    if path.lower().endswith(".csv") and text_columns:
        table = read_table(path)
        missing = [name for name in text_columns if name not in table.header]
        if missing:
            raise DataError(f"{path}:1: the header lacks the text column(s) {', '.join(missing)}; its columns: "
                            f"{', '.join(table.header)}.")  # fmt: skip
        yield from zip(table.lines, text_csv.joined_texts(table, text_columns))
    elif path.lower().endswith(".csv"):
        for line_number, row in csv_rows(path):
            if len(row) != 3:
                raise DataError(f'{path}:{line_number}: expected class,"title","content"; got {len(row)} field(s).')
            yield line_number, f"{row[1]} {row[2]}"
    else:
        for line_number, line in enumerate(iterate_text_lines(path), 1):
            if line.strip():
                yield line_number, line


def _text_batches(path, batch_size, text_columns=None):
    found = False
    for chunk in _batches_of(_documents(path, text_columns), batch_size):
        found = True
        yield {"texts": np.asarray([text for _, text in chunk], object)}, [f"{path}:{n}" for n, _ in chunk]
    if not found:
        raise DataError(f"{path}: no documents found.")


def _image_batches(folder, shape, batch_size):
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder; expected a folder of PNG or JPEG images.")
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found.")
    size, channels = (int(shape[1]), int(shape[2])), int(shape[-1])
    for chunk in _batches_of(files, batch_size):
        pictures = [images.read_image(path, size, channels) for path in chunk]
        yield {"images": np.stack(pictures).astype(np.uint8)}, list(chunk)


def predict_file(saved_model: str, inputs: str, output: str, confidence_threshold: float | None = None,
                 batch_size: int = 256, show_progress: bool | None = None) -> dict:  # fmt: skip
    """Writes one JSON line per input of `inputs` to `output` and returns a summary
    (`inputs`, `per_class` counts with abstentions under "(abstained)", `abstained_share`).

    Each line: `input` (position, from 0), `source` (file:line or image file),
    `class_id`, `class_name`, `probabilities`, and with prototypes `confidence`,
    `abstained` (confidence below `confidence_threshold`; then class_id is -1 and
    class_name ""), and `prototypes`: `{database_row, weight, label, label_name}`, the
    row in the database's source file (the training file, or the `--database` file).
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
    if confidence_threshold is not None:
        serve = loaded.signatures["abstain"]
    specs = {k: v for k, v in signature_inputs(serve).items() if k != "confidence_threshold"}
    show_progress = sys.stdout.isatty() if show_progress is None else show_progress
    progress = keras.utils.Progbar(None, unit_name="input") if show_progress else None
    counts, abstained, total = {}, 0, 0
    # Written beside the output and renamed when complete: a failing run leaves an
    # existing output as it was, never a truncated or partial file.
    temporary = os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as handle:
            for raw, sources in read_inputs(inputs, specs, batch_size, table_format(saved_model), _text_columns(saved_model)):
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
        raise ConfigError(  # A full disk, a read-only folder.
            f"--output={output}: could not write the predictions ({error.strerror}); an existing "
            "output is left as it was."
        ) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return {"inputs": total, "per_class": counts, "abstained_share": abstained / max(total, 1)}


def check_output_path(output: str, inputs: str) -> None:
    """Refuses an `--output` that is a folder, lies in a missing folder, or is the
    input file itself (which the predictions would replace)."""
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise ConfigError(f"--output={output} is a folder; give a file name, e.g. {os.path.join(output, 'predictions.jsonl')}.")
    if not os.path.isdir(folder):
        raise ConfigError(f"--output={output}: the folder {folder} does not exist; create it or write elsewhere.")
    if os.path.exists(output) and os.path.exists(inputs) and os.path.samefile(output, inputs):
        raise ConfigError(f"--output={output} is the --inputs file; the predictions would replace it. Write them to another file.")


def check_saved_model(path: str) -> str:
    """`path` when it is a SavedModel folder; else a ConfigError saying what it is and
    what to give instead (a run folder, a model folder of versions, nothing)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"--saved_model={path} is a training run (it holds config.json); give it as --model_dir={path}.")
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
            for i, w, y, n in zip(out["prototype_indices"][row], out["prototype_weights"][row],
                                  out["prototype_labels"][row], out["prototype_label_names"][row])  # fmt: skip
            if w > 0
        ]
    return record
