"""Plain-path accuracy of a trained run on training images: with BatchNorm's moving

Runs `proto_tf.cli.batchnorm_check` (installed as `proto-tf-batchnorm-check`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.batchnorm_check import run  # noqa: E402

if __name__ == "__main__":
    run()
