"""Trains a ProtoAttend (or baseline) model with the paper's settings for an experiment.

  python run/train.py --dataset=dbpedia --attention=softmax --data_dir=~/dbpedia_csv
  python run/train.py --dataset=adult --attention=sparsemax --small
  python run/train.py --experiment=fashion_mnist_sparsemax_sparsity

Running the same command again after an interruption resumes from the last checkpoint.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from absl import app, logging  # noqa: E402

from proto_tf.errors import exit_on_user_error  # noqa: E402
from proto_tf.cli import experiment_flags  # noqa: E402
from proto_tf import training  # noqa: E402

experiment_flags.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Keep the progress bar readable.
    config = experiment_flags.config_from_flags()
    summary = training.train(config)
    test = summary.get("test_best", summary["test_last"])
    print(json.dumps({"model_dir": config.model_dir, "steps": summary["steps"], "test": test}, indent=2))


def run():
    """Console-script entry point."""
    app.run(exit_on_user_error(main), flags_parser=experiment_flags.parse_with_flagfiles)


if __name__ == "__main__":
    run()
