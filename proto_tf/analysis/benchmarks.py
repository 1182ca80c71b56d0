"""Throughput measurements (run by run/benchmark.py, never by tests)."""

import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from proto_tf import normalizations, streaming
from proto_tf.analysis import serving_probe, step_profile
from proto_tf.attention import PrototypeAttention, masked_softmax
from proto_tf.data import Split, candidates, class_names, dataset_info, raw_examples
from proto_tf.data.common import LoadedDataset, cast_only
from proto_tf.errors import ConfigError
from proto_tf.serving import export, warmup
from proto_tf.sparsemax import sparsemax
from proto_tf.training import config as config_lib
from proto_tf.training import health, run_store, trainer


def _rate(step, steps, warmup):
    """Steps per second of `step()` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def input_pipeline_rate(dataset, info, batch_size, database_size, steps=50, warmup=5):
    """Training steps per second the input pipeline alone produces (batch, fresh
    candidate database, augmentation), for one process."""
    iterator = iter(
        candidates.training_batches(
            dataset.train,
            dataset.augment,
            batch_size,
            database_size,
            class_shares=info.class_shares,
        )
    )
    return _rate(lambda: next(iterator), steps, warmup)


def training_step_rate(config, dataset, steps=10, warmup=2):
    """Training steps per second of the full step (input pipeline included), as the
    Trainer takes it between logs (`trainer_step`)."""
    with tempfile.TemporaryDirectory() as model_dir:
        return _rate(trainer_step(config, dataset, steps + warmup, model_dir), steps, warmup)


def bare_step(config, dataset, steps):
    """The floor the trainer is measured against: a function running one training step
    of the same model (forward pass, loss, gradient, clipping, Adam update) in one
    tf.function, fed by the same input pipeline, with nothing around it (no
    distribution strategy, metrics, health checks or logs); it returns the loss."""
    keras.utils.set_random_seed(config.seed)
    info = dataset.info or dataset_info(config.dataset)
    config = config_lib.fit_to_data(config, len(dataset.train), report=lambda line: None)
    model = config_lib.build_model(config, info, dataset.num_classes)
    optimizer = config_lib.build_optimizer(config)
    optimizer.build(model.trainable_variables)
    iterator = iter(
        candidates.training_batches(
            dataset.train,
            dataset.augment,
            config.batch_size,
            config.candidates_per_step,
            seed=config.seed,
            num_steps=steps,
            class_shares=info.class_shares,
        )
    )
    variables = model.trainable_variables

    @tf.function
    def step():
        data = next(iterator)
        with tf.GradientTape() as tape:
            outputs = model.forward_train(data, model.sample_alpha(optimizer.iterations))
            loss = model.loss_terms(data["labels"], outputs)["loss"]
            if model.losses:
                loss += tf.add_n(model.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return lambda: float(step())


def trainer_step(config, dataset, steps, model_dir):
    """A function running one step as `Trainer.train` does between its logs: the
    distributed step function (without the metrics' values), then the health monitor's
    check of its logs."""
    config = dataclasses.replace(config, model_dir=model_dir, train_steps=steps)
    run_trainer = trainer.Trainer(config, dataset=dataset, verbose=False)
    iterator = iter(run_trainer.distributed_steps(0))
    step_function = run_trainer.make_step_function(results=False)
    monitor = health.HealthMonitor(run_trainer.model.trainable_variables, config.divergence_factor)
    counter = iter(range(1, steps + 1))

    def step():
        logs = step_function(iterator)
        monitor.check(next(counter), logs, None)
        return float(logs["step_loss"])  # "loss" is the mean since the last log.

    return step


def trainer_against_bare(config, dataset, steps=20, warmup=3):
    """Seconds per step of the trainer's step and of `bare_step`, timed one step each in
    turn (so the machine's drifts reach both alike): medians `(trainer, bare)`."""
    with tempfile.TemporaryDirectory() as model_dir:
        steps_made = {
            "trainer": trainer_step(config, dataset, steps + warmup, model_dir),
            "bare": bare_step(config, dataset, steps + warmup),
        }
        times = {name: [] for name in steps_made}
        for round_ in range(steps + warmup):
            for name, step in steps_made.items():
                start = time.perf_counter()
                step()
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    return float(np.median(times["trainer"])), float(np.median(times["bare"]))


def against_authors_graph(config, dataset, authors_code, rounds=3, steps=20, warmup=5):
    """The trainer's step, `bare_step` and the authors' TF1 graph (`authors_graph`, in
    its own process) at `config`'s batch, database, ResNet depth and decay interval, on
    `dataset`'s training images: rounds of `steps` steps of each in turn (the other two
    wait), then a kernel profile of 5 steps of each. Returns `{name: {"seconds",
    "page_faults", "system_seconds", "kernels"}}` for "authors", "bare" and "trainer",
    the first three the medians over rounds (`step_profile.resource_use`)."""
    if not config.dataset.endswith("mnist"):
        raise ConfigError(
            f"--suite=authors times the authors' Fashion-MNIST graph; --dataset={config.dataset} "
            "is not a 28x28 grey image set (valid: fashion_mnist, mnist)."
        )
    rows = {"authors": [], "trainer": [], "bare": []}
    with tempfile.TemporaryDirectory() as folder:
        data_file = os.path.join(folder, "train.npz")
        np.savez(data_file, images=dataset.train.inputs[..., 0], labels=dataset.train.labels)
        command = [
            sys.executable,
            "-m",
            "proto_tf.analysis.authors_graph",
            f"--authors_code={authors_code}",
            f"--data={data_file}",
            f"--batch_size={config.batch_size}",
            f"--candidates={config.train_database_size}",
            f"--depth={config.resnet_depth}",
            f"--decay_every={config.decay_steps}",
            f"--normalization={config.attention}",
            f"--steps={steps}",
            f"--warmup={warmup}",
        ]
        # This process's environment, TF_CPU_ALLOCATOR_USE_BFC included: both steps run
        # with the same allocator.
        environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        total = rounds * steps + warmup + 5
        ours = {
            "trainer": trainer_step(config, dataset, total, os.path.join(folder, "run")),
            "bare": bare_step(config, dataset, total),
        }
        for step in ours.values():
            for _ in range(warmup):
                step()
        with subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=environment,
        ) as authors:

            def ask(request):
                if request:
                    authors.stdin.write(request + "\n")
                    authors.stdin.flush()
                line = authors.stdout.readline()
                if not line:
                    raise RuntimeError(
                        "the authors' graph stopped; run `TF_USE_LEGACY_KERAS=1 "
                        f"{' '.join(command)}` to see why (it needs `pip install --no-deps tf-keras==2.21.0`)."
                    )
                return json.loads(line)

            ask(None)  # Built and warmed up.
            for _ in range(rounds):
                rows["authors"].append(ask("time"))
                for name, step in ours.items():
                    rows[name].append(step_profile.resource_use(step, steps))
            kernels = {"authors": ask("profile")}
            authors.stdin.close()
        kernels.update({name: step_profile.profile_steps(step, 5) for name, step in ours.items()})
    return {
        name: {**{key: float(np.median([row[key] for row in values])) for key in values[0]}, "kernels": kernels[name]}
        for name, values in rows.items()
    }


def training_step_seconds(config, dataset, steps=10, dtype_policy="float32"):
    """Seconds per training step of `config` with the Keras `dtype_policy` (e.g.
    "mixed_bfloat16"); the global policy is restored afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy)
    try:
        return 1.0 / training_step_rate(config, dataset, steps)
    finally:
        keras.config.set_dtype_policy(previous)


def synthetic_dataset(config, size=4096, seed=0):
    """A dataset of random examples in the stored form of `config.dataset`, for timing
    when its files are absent (a step's cost does not depend on the data's content).
    Tabular and text datasets only."""
    info = dataset_info(config.dataset)
    rng = np.random.default_rng(seed)
    inputs = info.kind.synthetic_inputs(info, size, rng)
    num_classes = len(class_names(config.dataset))
    split = Split(inputs.astype(info.input_dtype), rng.integers(0, num_classes, size), np.arange(size))
    augment, preprocess = cast_only(info.input_dtype)
    return LoadedDataset(
        config.dataset, num_classes, class_names(config.dataset), split, None, split, augment, preprocess
    )


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


def _tabular_run(model_dir):
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
    config, dataset, info = _tabular_run(model_dir)
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
    config, dataset, info = _tabular_run(model_dir)
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


def random_attention_logits(max_size, batch_size, seed=0, scale=3.0):
    """`[batch_size, max_size]` logits drawn from N(0, scale^2): a database unlike any
    trained one (supports of a few entries, no structure)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch_size, max_size)) * scale).astype(np.float32)


def trained_attention_logits(model_dir, max_size, batch_size):
    """`[batch_size, max_size]` attention logits of a trained tabular run: its first
    test examples' queries against the keys of a jittered database of `max_size` rows
    (`jittered_database`). Any prefix of the columns is such a database too."""
    config, dataset, _ = _tabular_run(model_dir)
    model = run_store.load_trained_model(model_dir, config, dataset)[0]
    database = export.encode_database(
        model, dataset.preprocess, jittered_database(dataset.train, max_size, config.seed)
    )
    queries = model.encode(dataset.preprocess(dataset.test.inputs[:batch_size]))[0]
    logits = tf.matmul(queries, database.keys, transpose_b=True) / np.sqrt(config.attention_size)
    return logits.numpy()


def normalization_latencies(logits, database_sizes, batch_sizes, rounds=3):
    """Seconds per call of softmax (the layer's masked one, and `tf.nn.softmax`) and of
    the default sparsemax on the first
    `batch_size` rows and `D` columns of `logits`, in a `tf.function` and compiled by
    XLA. Softmax and sparsemax alternate over `rounds`, and each keeps its median, so a
    machine's drift weighs on both.

    Yields one dict per (D, batch, compiler).
    """
    for size in database_sizes:
        for batch_size in batch_sizes:
            block = tf.constant(logits[:batch_size, :size])
            for compiler, jit_compile in (("graph", False), ("xla", True)):
                functions = {
                    "softmax": tf.function(masked_softmax, jit_compile=jit_compile),
                    "nn_softmax": tf.function(tf.nn.softmax, jit_compile=jit_compile),
                    "sparsemax": tf.function(lambda z: sparsemax(z), jit_compile=jit_compile),
                }
                times = {name: [] for name in functions}
                for _ in range(rounds):
                    for name, function in functions.items():
                        times[name].append(seconds_per_call(lambda: function(block).numpy(), min_seconds=0.3))
                yield {
                    "database_size": size,
                    "batch_size": batch_size,
                    "compiler": compiler,
                    **{f"{name}_seconds": float(np.median(t)) for name, t in times.items()},
                }


def _measured(call):
    """`(seconds per call, peak RSS bytes over those calls)`."""
    serving_probe.peak_rss_reset()
    seconds = seconds_per_call(call)
    return seconds, serving_probe.memory_bytes("VmHWM")


def float64_attention(queries, keys, values, labels, normalization, num_classes, block=1 << 20):
    """Weighted values and confidence (Eq. 3) of a few queries in float64 NumPy, by rows
    of the database in blocks (the exactness reference of the scale suite)."""
    q = np.asarray(queries, np.float64) / np.sqrt(keys.shape[1])
    logits = np.concatenate([q @ keys[i : i + block].astype(np.float64).T for i in range(0, len(keys), block)], 1)
    weights = normalizations.get(normalization).reference(logits)
    mass = np.stack([np.bincount(labels, row, num_classes) for row in weights])
    return weights @ values.astype(np.float64), np.minimum(mass.max(1), 1.0)


def streaming_latencies(
    database_sizes,
    batch_sizes=(1, 128),
    dense_limit=1 << 20,
    block_size=None,
    seed=0,
    checked=4,
    key_dtypes=("float16", "bfloat16"),
):
    """Per database size (random 16-d keys and values, queries scaled so sparsemax
    supports have a few dozen entries) and batch, in tf.functions, time and peak RSS of:

    - the key scan alone, the floor of any exact attention: `q @ k^T` with its row
      maximum, `k @ q^T` with its column maximum, and NumPy's `keys @ q.T`;
    - FAISS's exact inner-product search (`IndexFlatIP`, top 64) when faiss is
      installed, the retrieval peer;
    - for softmax and sparsemax the dense PrototypeAttention with its top 5 (up to
      `dense_limit` prototypes) and the streamed attention, whose weighted values and
      confidences are compared with `float64_attention` on the first `checked` queries;
    - the streamed attention over the same keys stored as each of `key_dtypes`: its
      time, its error against float64 over the float32 keys, and the share of queries
      whose first prototype is the float32 keys' one (`narrow`).

    Each database is made once, measured at every batch (smallest first) and freed
    before the next. The allocator keeps what it frees, so the float32 streamed
    attention of every batch is measured first: its peak then holds one database and
    nothing of the dense path or the narrow keys. Yields one dict per (D, batch,
    attention).
    """
    block_size = block_size or streaming.DEFAULT_BLOCK_SIZE
    rng = np.random.default_rng(seed)
    try:
        import faiss  # An optional peer (extra "compare"), never a requirement.
    except ImportError:
        faiss = None
    for size in database_sizes:
        database = _random_database(rng, size)
        queries = {b: rng.normal(size=(b, 16)).astype(np.float32) * 4.0 for b in sorted(batch_sizes)}
        measured = [
            row for batch in queries for row in _streamed_rows(database, queries[batch], block_size, checked, faiss)
        ]
        for row, (out, reference) in measured:
            _compare(row, out, reference, database, queries[row["batch_size"]], block_size, dense_limit, key_dtypes)
        yield from (row for row, _ in measured)
        del database, measured
        gc.collect()


def _random_database(rng, size):
    """Random keys, values and binary labels of `size` rows, as tensors and as NumPy
    views of the tensors' own buffers (the database is held once, so a peak RSS says
    what serving it costs)."""
    keys, values, labels = (
        tf.constant(rng.normal(size=(size, 16)).astype(np.float32)),
        tf.constant(rng.normal(size=(size, 16)).astype(np.float32)),
        tf.constant(rng.integers(0, 2, size).astype(np.int32)),
    )
    return {"tensors": (keys, values, labels), "arrays": tuple(np.asarray(t) for t in (keys, values, labels))}


def _streamed(queries, keys, values, labels, attention, block_size):
    return tf.function(lambda: streaming.streamed_attention(queries, keys, values, labels, attention, 2, 5, block_size))


def _streamed_rows(database, queries_array, block_size, checked, faiss):
    """The key scans, FAISS and the float32 streamed attention (time, peak RSS, error
    against float64) for one batch: `(row, (its output, the float64 reference))` per
    attention."""
    keys, values, labels = database["tensors"]
    keys_array, values_array, labels_array = database["arrays"]
    queries = tf.constant(queries_array)
    # The key scans run by blocks of rows, as the streamed attention does: a [B, D]
    # product would not fit at 16M (8 GB at batch 128).
    scan_qk = tf.function(lambda: streaming.key_scan(queries, keys, block_size))
    scan_kq = tf.function(lambda: streaming.key_scan(queries, keys, block_size, keys_first=True))
    scans = {
        "scan_qk": _measured(lambda: scan_qk().numpy())[0],
        "scan_kq": _measured(lambda: scan_kq().numpy())[0],
        "scan_numpy": _measured(lambda: _numpy_key_scan(queries_array, keys_array, block_size))[0],
    }
    faiss_seconds = None
    if faiss is not None:
        index = faiss.IndexFlatIP(16)
        index.add(keys_array)
        faiss_seconds = _measured(lambda: index.search(queries_array, 64))[0]
        del index
    for attention in normalizations.names():
        streamed = _streamed(queries, keys, values, labels, attention, block_size)
        seconds, peak = _measured(lambda: streamed()["weighted_values"].numpy())
        out = {name: tensor.numpy() for name, tensor in streamed().items()}
        reference = float64_attention(queries_array[:checked], keys_array, values_array, labels_array, attention, 2)
        row = {
            "database_size": len(keys_array),
            "batch_size": len(queries_array),
            "attention": attention,
            **scans,
            "scan_seconds": min(scans.values()),
            "faiss_seconds": faiss_seconds,
            "streamed_seconds": seconds,
            "streamed_peak_rss_bytes": peak,
            "database_bytes": keys_array.nbytes + values_array.nbytes + labels_array.nbytes,
            "max_error": _max_error(out, reference, checked),
            "dense_weights_mb": len(queries_array) * len(keys_array) * 4 / 2**20,
        }
        yield row, (out, reference)


def _compare(row, out, reference, database, queries_array, block_size, dense_limit, key_dtypes):
    """Adds to `row` the dense path's time and peak RSS (up to `dense_limit` prototypes)
    and, per narrow key dtype, the streamed attention's time, error against float64
    and share of queries with the float32 keys' first prototype (`narrow`)."""
    keys, values, labels = database["tensors"]
    queries, attention = tf.constant(queries_array), row["attention"]
    row["dense_seconds"] = row["dense_peak_rss_bytes"] = None
    if row["database_size"] <= dense_limit:
        layer = PrototypeAttention(attention)
        dense = tf.function(lambda: _dense_with_top(layer, queries, keys, values))
        row["dense_seconds"], row["dense_peak_rss_bytes"] = _measured(lambda: [t.numpy() for t in dense()])
    row["narrow"] = {}
    checked = len(reference[1])
    for dtype in key_dtypes:
        call = _streamed(queries, tf.cast(keys, dtype), values, labels, attention, block_size)
        narrow_out = {name: tensor.numpy() for name, tensor in call().items()}
        row["narrow"][dtype] = {
            "seconds": _measured(lambda call=call: call()["weighted_values"].numpy())[0],
            "max_error": _max_error(narrow_out, reference, checked),
            "top1_agreement": float(np.mean(narrow_out["top_rows"][:, 0] == out["top_rows"][:, 0])),
        }


def _max_error(out, reference, checked):
    """The largest difference of weighted values and confidences from the float64 ones."""
    weighted, confidence = reference
    return float(
        max(
            np.abs(np.asarray(out["weighted_values"])[:checked] - weighted).max(),
            np.abs(np.asarray(out["confidence"])[:checked] - confidence).max(),
        )
    )


def _numpy_key_scan(queries, keys, block_size):
    best = np.full(len(queries), -np.inf, np.float32)
    for start in range(0, len(keys), block_size):
        np.maximum(best, (keys[start : start + block_size] @ queries.T).max(0), out=best)
    return best


def _dense_with_top(layer, queries, keys, values, k=5):
    weighted, weights = layer(queries, keys, values)
    return weighted, tf.math.top_k(weights, k).values
