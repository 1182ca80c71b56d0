"""Predictions for new inputs: one JSON line per input, from an exported SavedModel or a run.

Runs `proto_tf.cli.predict` (installed as `proto-tf-predict`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.predict import run  # noqa: E402

if __name__ == "__main__":
    run()
