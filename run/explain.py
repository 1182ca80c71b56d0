"""Shows the prototypes behind decisions: an image grid (image datasets) or texts / rows

Runs `proto_tf.cli.explain` (installed as `proto-tf-explain`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.explain import run  # noqa: E402

if __name__ == "__main__":
    run()
