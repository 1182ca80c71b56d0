"""The normalisations' cost and exactness over large databases, dense and streamed,
against float64 references (run by run/benchmark.py, never by tests)."""

import gc

import numpy as np
import tensorflow as tf

from proto_tf import normalizations, streaming
from proto_tf.analysis import serving_probe
from proto_tf.analysis.serving_benchmarks import jittered_database, seconds_per_call, tabular_run
from proto_tf.attention import PrototypeAttention, masked_softmax
from proto_tf.serving import export
from proto_tf.sparsemax import sparsemax
from proto_tf.training import run_store


def random_attention_logits(max_size, batch_size, seed=0, scale=3.0):
    """`[batch_size, max_size]` logits drawn from N(0, scale^2): a database unlike any
    trained one (supports of a few entries, no structure)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch_size, max_size)) * scale).astype(np.float32)


def trained_attention_logits(model_dir, max_size, batch_size):
    """`[batch_size, max_size]` attention logits of a trained tabular run: its first
    test examples' queries against the keys of a jittered database of `max_size` rows
    (`jittered_database`). Any prefix of the columns is such a database too."""
    config, dataset, _ = tabular_run(model_dir)
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
