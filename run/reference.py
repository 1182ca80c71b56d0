"""The accuracy of a scikit-learn reference on a run's own split.

Runs `proto_tf.cli.reference` (installed as `proto-tf-reference`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.reference import run  # noqa: E402

if __name__ == "__main__":
    run()
