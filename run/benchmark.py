"""Benchmarks, printed as Markdown tables with the command, machine and date.

Runs `proto_tf.cli.benchmark` (installed as `proto-tf-benchmark`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.benchmark import run  # noqa: E402

if __name__ == "__main__":
    run()
