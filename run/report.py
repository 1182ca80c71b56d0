"""Prints the paper's numbers next to finished runs as a Markdown table.

Runs `proto_tf.cli.report` (installed as `proto-tf-report`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.report import run  # noqa: E402

if __name__ == "__main__":
    run()
