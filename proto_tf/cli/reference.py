"""The accuracy of a plain reference (scikit-learn) on a run's own split, to compare with
the run's: gradient boosting for tables, an SVM for images.

  python run/reference.py --model_dir=runs/csv_sparsemax_small

Needs scikit-learn (`pip install proto_tf[compare]`).
"""

import json
import os

from absl import flags

from proto_tf.analysis.reference import reference_accuracy
from proto_tf.cli.common import run_command
from proto_tf.json_files import read_json
from proto_tf.training import run_store

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.
flags.DEFINE_string(
    "model_dir", None, "A run/train.py model_dir (its data and split are used).", required=True, flag_values=FLAGS
)


def main(argv):
    del argv
    config = run_store.read_config(FLAGS.model_dir)
    dataset = run_store.load_experiment_dataset(config)
    result = reference_accuracy(dataset, config.seed)
    summary_path = os.path.join(FLAGS.model_dir, run_store.SUMMARY_FILE)
    if os.path.isfile(summary_path):
        summary = read_json(summary_path, "the run's final results")
        test = summary.get("test_best", summary["test_last"])
        result["run_accuracy"] = test["accuracy"]
        result["gap"] = round(test["accuracy"] - result["accuracy"], 6)
    print(json.dumps(result, indent=2))


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
