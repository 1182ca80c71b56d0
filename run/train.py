"""Trains a ProtoAttend (or baseline) model with the paper's settings for an experiment.

Runs `proto_tf.cli.train` (installed as `proto-tf-train`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.train import run  # noqa: E402

if __name__ == "__main__":
    run()
