"""Inference and export latencies over growing databases (run by run/benchmark.py,
never by tests)."""

import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from proto_tf import normalizations
from proto_tf.analysis import serving_probe
from proto_tf.data import Split, dataset_info, raw_examples
from proto_tf.errors import ConfigError
from proto_tf.serving import export, warmup
from proto_tf.training import run_store


def jittered_database(split, size, seed=0, scale=0.05):
    """`size` rows drawn with replacement from a tabular `split`, each feature vector
    jittered by N(0, scale^2): a stand-in for a larger database of the same kind, in
    which copies of a row are near, not identical (exact copies would tie)."""
    rng = np.random.default_rng(seed)
    positions = rng.integers(0, len(split), size)
    inputs = split.inputs[positions] + rng.normal(scale=scale, size=(size, split.inputs.shape[1]))
    return Split(inputs.astype(split.inputs.dtype), split.labels[positions], split.indices[positions])


def seconds_per_call(call, min_calls=3, min_seconds=1.0, warmup=2):
    """Median wall time of `call()` after `warmup` untimed calls, over at least
    `min_calls` calls and `min_seconds`."""
    for _ in range(warmup):
        call()
    times = []
    while len(times) < min_calls or sum(times) < min_seconds:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def tabular_run(model_dir):
    """`(config, dataset, info)` of a trained tabular run; any other run is refused
    before its data is loaded."""
    config = run_store.read_config(model_dir)
    info = dataset_info(config.dataset)
    if info.kind.name != "tabular":
        raise ConfigError(
            f"--model_dir={model_dir} is a {config.dataset} run; this benchmark takes a tabular (adult) run."
        )
    return config, run_store.load_experiment_dataset(config), info


def inference_latencies(model_dir, database_sizes, batch_sizes, export_root):
    """Serving latency of a trained tabular run against the database size: for each
    attention (softmax, sparsemax: the run's weights, either normalisation), D and
    batch, seconds per call of the attention alone, of the serving function in
    memory, and of the same function loaded from the exported SavedModel.

    Yields one dict per (attention, D, batch).
    """
    config, dataset, info = tabular_run(model_dir)
    models = {}
    for attention in normalizations.names():
        attention_config = dataclasses.replace(config, attention=attention)
        models[attention] = run_store.load_trained_model(model_dir, attention_config, dataset)[0]
    raw = raw_examples.load_raw(config.dataset, config.data_dir)
    for size in database_sizes:
        database_split = jittered_database(dataset.train, size, config.seed)
        database = export.encode_database(models["sparsemax"], dataset.preprocess, database_split)
        for attention, model in models.items():
            serve = tf.function(
                lambda raw, model=model: export.build_serving_function(model, info, dataset.preprocess, database)[0](
                    raw
                )
            )
            path = os.path.join(export_root, f"{attention}_{size}")
            export.export_saved_model(model, info, dataset.preprocess, database, path)
            loaded = tf.saved_model.load(path).signatures[export.SERVING_SIGNATURE]
            attend = tf.function(
                lambda queries, model=model: model.prototype_attention(queries, database.keys, database.values)[0]
            )
            for batch_size in batch_sizes:
                request = info.kind.request(raw_examples.take(raw["test"], np.arange(batch_size)), raw)
                queries = model.encode(dataset.preprocess(dataset.test.inputs[:batch_size]))[0]
                yield {
                    "attention": attention,
                    "database_size": size,
                    "batch_size": batch_size,
                    "attention_seconds": seconds_per_call(lambda: attend(queries).numpy()),
                    "in_memory_seconds": seconds_per_call(lambda: serve(request)["class_ids"].numpy()),
                    "saved_model_seconds": seconds_per_call(lambda: loaded(**request)["class_ids"].numpy()),
                }
            shutil.rmtree(path)


# (attention, key dtype) of the exports measured at each database size.
EXPORT_VARIANTS = (("softmax", "float32"), ("sparsemax", "float32"), ("sparsemax", "float16"))


def export_latencies(
    model_dir, database_sizes, batch_sizes, export_root, stream_above=None, seed=0, variants=EXPORT_VARIANTS
):
    """The exported SavedModel end to end at each database size: a trained tabular
    run's weights (either normalisation) with a database of `size` prototypes, each a
    training row's encoding jittered by 5 % of each dimension's spread (near, not
    identical: copies would tie), exported, then served from raw test rows by
    `serving_probe` in a process of its own (TensorFlow alone, as TF Serving). Sizes:
    the export on disk against the database's own bytes (stored once, the two are
    close); the served process's memory after loading and at its peak per batch.

    Yields one dict per (D, `variants` entry (attention, key dtype), batch).
    """
    config, dataset, info = tabular_run(model_dir)
    raw = raw_examples.load_raw(config.dataset, config.data_dir, config.data_options(), config.seed)
    request = info.kind.request(raw_examples.take(raw["test"], np.arange(max(batch_sizes))), raw)
    requests_path = os.path.join(export_root, "requests.npz")
    # Strings as fixed-width bytes: loadable without pickle, and tf.string again in the probe.
    np.savez(
        requests_path,
        **{name: np.asarray(t.numpy(), np.bytes_ if t.dtype == tf.string else None) for name, t in request.items()},
    )
    models = {}
    for attention in sorted({attention for attention, _ in variants}):
        attention_config = dataclasses.replace(config, attention=attention)
        models[attention] = run_store.load_trained_model(model_dir, attention_config, dataset)[0]
    # The encodings of the training rows (one encoder: both models share the weights).
    base = export.encode_database(next(iter(models.values())), dataset.preprocess, dataset.train)
    base_keys, base_values = (t.numpy() for t in base.tensors()[:2])
    rng = np.random.default_rng(seed)
    for size in database_sizes:
        rows = rng.integers(0, len(base_keys), size)
        keys, values = _jittered(base_keys, rows, rng), _jittered(base_values, rows, rng)
        labels, indices = dataset.train.labels[rows], dataset.train.indices[rows]
        for attention, key_dtype in variants:
            model = models[attention]
            model.set_database(keys, values, labels, indices, key_dtype)
            path = os.path.join(export_root, f"{attention}_{key_dtype}_{size}")
            export.export_saved_model(
                model,
                info,
                dataset.preprocess,
                model.database,
                path,
                class_names=dataset.class_names,
                stream_above=stream_above or export.DEFAULT_STREAM_ABOVE,
            )
            stored = warmup.memory_estimate(model, model.database, 1, 1, 1)  # Weights and database bytes.
            model.database = None  # The next model's copy is made only once this one is freed.
            gc.collect()
            served = _probe(path, requests_path, batch_sizes)
            export_bytes = warmup.folder_bytes(path)
            shutil.rmtree(path)
            for batch_size in batch_sizes:
                yield {
                    "database_size": size,
                    "attention": attention,
                    "key_dtype": key_dtype,
                    "batch_size": batch_size,
                    "export_bytes": export_bytes,
                    "database_bytes": stored["database"],
                    "weight_bytes": stored["weights"],
                    "load_seconds": served["load_seconds"],
                    "rss_after_load_bytes": served["rss_after_load_bytes"],
                    **served[str(batch_size)],
                }
        del keys, values
        gc.collect()


def _jittered(base, rows, rng, scale=0.05, chunk=1 << 20):
    """`base[rows]` plus N(0, (scale * each column's sd)^2), made by chunks of rows."""
    out = base[rows]
    spread = (scale * base.std(axis=0)).astype(np.float32)
    for start in range(0, len(out), chunk):
        part = out[start : start + chunk]
        part += rng.standard_normal(part.shape, dtype=np.float32) * spread
    return out


def _probe(path, requests_path, batch_sizes):
    """`serving_probe` on the export at `path`, in a process of its own."""
    command = [sys.executable, serving_probe.__file__, path, requests_path, *map(str, batch_sizes)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"serving_probe failed on {path}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
