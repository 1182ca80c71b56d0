"""The mislabel audit of a run's training labels.

Runs `proto_tf.cli.audit` (installed as `proto-tf-audit`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.audit import run  # noqa: E402

if __name__ == "__main__":
    run()
