"""Table 3: baseline, baseline + dropout, and sparsemax + sparsity regularisation with

Runs `proto_tf.cli.label_noise` (installed as `proto-tf-label-noise`); see there for the flags.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from proto_tf.cli.label_noise import run  # noqa: E402

if __name__ == "__main__":
    run()
