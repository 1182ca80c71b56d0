"""Test setup: `tests/` on the path for shared helpers, quiet TF logs, the commands' host
allocator (TensorFlow's BFC one) for the steps trained in-process, and two logical CPU
devices so that tf.distribute tests run real 2-replica steps on one CPU."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # As proto_tf.cli sets it.
# TensorFlow's oneDNN kernels are on by default on some CPUs (AVX-512) and off on others;
# they rename ops in traces (_MklMatMul) and round differently. Off, so the suite checks
# the same kernels against its references on every machine.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(__file__))

import tensorflow as tf  # noqa: E402  (after the log level is set)

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
