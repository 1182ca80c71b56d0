"""Command-line entry points (installed as `proto-tf-*` console scripts; `run/*.py`
call the same functions from a checkout)."""

import os

# Before any command imports TensorFlow: no C++ start-up lines on the console (a user's
# own TF_CPP_MIN_LOG_LEVEL is kept).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's pooling (BFC) allocator for host memory. With the default allocator every
# CPU training step maps its freed activation buffers back in: 116,000 page faults per
# step on Fashion-MNIST --small and 1.8x the step time (BENCHMARKS.md).
# TF_CPU_ALLOCATOR_USE_BFC=false keeps the default.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with the process's C-level stderr closed, unless the user asked
    for its C++ logs (TF_CPP_MIN_LOG_LEVEL=0). Some builds write their start-up lines
    (oneDNN, CPU features) through absl before the log level is read, so the variable
    above does not silence them; Python's own errors still reach the console, since the
    import's exception is raised after stderr is restored."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
