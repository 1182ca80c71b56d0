"""Transfer from an encoder pretrained with proto_tf (Fashion-MNIST classes 0-4 to 5-9).

Runs `proto_tf.cli.transfer` (installed as `proto-tf-transfer`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.transfer import run  # noqa: E402

if __name__ == "__main__":
    run()
