"""What a training step costs: its time, page faults and system time, and per-op-type
kernel times from TensorFlow's profiler trace (BENCHMARKS.md). Imports nothing but
TensorFlow, so the authors' TF1 graph (`authors_graph`) is measured the same way in
its own process."""

import collections
import glob
import os
import resource
import tempfile
import time
from typing import Callable

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

# Trace events that are not kernels: the executor's own spans and the thread-pool
# spans nested inside kernels (counting them would count kernel time twice).
_NOT_KERNELS = ("ExecutorState", "ParallelFor", "ExecutorDoneCallback")


def kernel_milliseconds(trace_file: str, steps: int) -> dict[str, float]:
    """Milliseconds per step of each op type's kernels in a profiler trace
    (`*.xplane.pb`) of `steps` steps, summed over TensorFlow's compute threads,
    largest first."""
    space = xplane_pb2.XSpace()
    with open(trace_file, "rb") as handle:
        space.ParseFromString(handle.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                metadata = plane.event_metadata[event.metadata_id]
                name = metadata.display_name or metadata.name
                if not name.startswith(_NOT_KERNELS):
                    totals[name] += event.duration_ps / 1e9 / steps
    return dict(totals.most_common())


def profile_steps(step: Callable[[], object], steps: int = 5) -> dict[str, float]:
    """`kernel_milliseconds` of `steps` calls of `step()` (warm it up first)."""
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        try:
            for _ in range(steps):
                step()
        finally:
            tf.profiler.experimental.stop()
        (trace_file,) = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)
        return kernel_milliseconds(trace_file, steps)


def resource_use(step: Callable[[], object], steps: int) -> dict[str, float]:
    """Median seconds of `steps` calls of `step()`, and this process's page faults
    (minor: pages the kernel mapped in again) and system seconds per call."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": sorted(times)[len(times) // 2],
        "page_faults": (after.ru_minflt - before.ru_minflt) / steps,
        "system_seconds": (after.ru_stime - before.ru_stime) / steps,
    }
