"""Exports a trained run as a SavedModel for TF Serving, with its database baked in.

Runs `proto_tf.cli.export` (installed as `proto-tf-export`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.export import run  # noqa: E402

if __name__ == "__main__":
    run()
