"""Evaluates a trained run: accuracy of both paths, prototype counts (Table 2), the

Runs `proto_tf.cli.evaluate` (installed as `proto-tf-evaluate`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.evaluate import run  # noqa: E402

if __name__ == "__main__":
    run()
