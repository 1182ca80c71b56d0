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
