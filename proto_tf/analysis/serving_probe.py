"""Serves an exported SavedModel in a process of its own, as TF Serving would: TensorFlow
alone (no proto_tf, no Keras), the export loaded once and called with saved requests.

  python serving_probe.py EXPORT_DIR REQUESTS.npz BATCH [BATCH ...]

REQUESTS.npz holds the raw `serving_default` inputs of the largest batch; each batch
size takes its first rows. Prints one JSON line: the resident memory after loading, the
load time, and per batch the first call's time, the median time of later calls and the
peak resident memory while serving them (VmHWM, reset before each batch). Run by the
scale benchmark (`benchmarks.export_latencies`); the benchmarks also use its memory
readers (it imports nothing of proto_tf, so it runs from its file alone).
"""

import json
import sys
import time

import numpy as np
import tensorflow as tf


def peak_rss_reset() -> bool:
    """Resets the process's peak resident memory (Linux `/proc/self/clear_refs`); False
    where that is not possible (then VmHWM is the peak since the start)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def memory_bytes(field: str) -> int | None:
    """A memory line of /proc/self/status in bytes: `VmRSS` (resident now) or `VmHWM`
    (the peak since the last `peak_rss_reset`); None where it cannot be read."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main(path, requests_path, batch_sizes):
    requests = dict(np.load(requests_path))
    start = time.perf_counter()
    serve = tf.saved_model.load(path).signatures["serving_default"]
    result = {"load_seconds": time.perf_counter() - start, "rss_after_load_bytes": memory_bytes("VmRSS")}
    for batch in batch_sizes:
        request = {name: tf.constant(column[:batch]) for name, column in requests.items()}
        peak_rss_reset()
        start = time.perf_counter()
        serve(**request)["class_ids"].numpy()
        first = time.perf_counter() - start
        times = []
        while len(times) < 3 or sum(times) < 1.0:
            start = time.perf_counter()
            serve(**request)["class_ids"].numpy()
            times.append(time.perf_counter() - start)
        result[str(batch)] = {
            "first_call_seconds": first,
            "seconds": float(np.median(times)),
            "peak_rss_bytes": memory_bytes("VmHWM"),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(size) for size in sys.argv[3:]])
