"""TF Serving conveniences of an export: warm-up requests, and its size and memory.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (PredictionLog records)
when it loads a version, so the first user request does not pay for tracing and memory
allocation. The records need TF Serving's protos (`tensorflow-serving-api`, installed
with `--no-deps`: its own requirement would add the full `tensorflow` package over
`tensorflow-cpu`); without them the export is written without warm-up requests.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from proto_tf.index import PrototypeIndex

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def serving_protos_available() -> bool:
    """True when TF Serving's protos (`tensorflow_serving.apis`) can be imported."""
    try:
        from tensorflow_serving.apis import prediction_log_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def write_warmup_requests(
    path: str, requests: list[dict], model_name: str, signature: str = "serving_default"
) -> str | None:
    """Writes one PredictLog per `{input name: tensor}` of `requests` to the SavedModel
    at `path`; returns the file, or None without TF Serving's protos."""
    if not serving_protos_available():
        return None
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    file = os.path.join(path, WARMUP_FILE)
    os.makedirs(os.path.dirname(file), exist_ok=True)
    with tf.io.TFRecordWriter(file) as writer:
        for inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return file


def read_warmup_requests(path: str) -> list[dict]:
    """The `{input name: array}` of each warm-up request stored in the SavedModel at `path`."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(os.path.join(path, WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append({name: tf.make_ndarray(proto) for name, proto in log.predict_log.request.inputs.items()})
    return requests


def folder_bytes(path: str) -> int:
    """The bytes of every file under `path`."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, files in os.walk(path) for name in files)


def memory_estimate(
    model: keras.Model,
    database: PrototypeIndex | None,
    max_batch_size: int,
    stream_above: int,
    block_size: int,
    tracked_layers: tuple = (),
) -> dict:
    """What serving the export holds, in bytes: the weights of the model and of the
    layers its preprocessing runs (a frozen backbone), its database, and the attention
    of one request of `max_batch_size` instances (dense `[B, D]` logits and weights up
    to `stream_above` prototypes, `[B, block]` blocks above)."""
    weights = sum(_bytes(v) for v in [*model.weights, *(w for layer in tracked_layers for w in layer.weights)])
    rows = len(database) if database is not None else 0
    stored = sum(_bytes(t) for t in database.static_tensors()) if rows else 0
    # A block is at most the whole database: one smaller than a block is read at once.
    width = rows if rows <= stream_above else min(rows, block_size)
    return {"weights": weights, "database": stored, "per_request": 2 * 4 * max_batch_size * width if rows else 0}


def _bytes(tensor) -> int:
    return int(np.prod(tensor.shape)) * tf.as_dtype(tensor.dtype).size


def describe(path: str, estimate: dict, rows: int, max_batch_size: int, warmup: str | None) -> str:
    """One line on the export's size, its expected memory and its warm-up requests."""
    megabytes = lambda count: f"{count / 2**20:.1f} MB"
    text = (
        f"The export is {megabytes(folder_bytes(path))} on disk; expected memory when served: about "
        f"{megabytes(estimate['weights'] + estimate['database'])} (weights and"
        + (f" a database of {rows:,} prototypes)" if rows else " no database)")
        + (f", plus {megabytes(estimate['per_request'])} per request of {max_batch_size} instances." if rows else ".")
    )
    if warmup is None:
        return text + " No TF Serving warm-up requests (they need `pip install --no-deps tensorflow-serving-api`)."
    return text + f" TF Serving warm-up requests: {os.path.relpath(warmup, path)}."
