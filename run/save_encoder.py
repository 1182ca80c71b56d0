"""Saves a trained run's encoder as a `.keras` backbone for `--backbone`.

Runs `proto_tf.cli.save_encoder` (installed as `proto-tf-save-encoder`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.save_encoder import run  # noqa: E402

if __name__ == "__main__":
    run()
