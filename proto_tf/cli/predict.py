"""Predictions for new inputs: one JSON line per input, from an exported SavedModel or a run.

  proto-tf-predict --saved_model=exports/adult_sparsemax_small/1 --inputs=new_people.csv
  proto-tf-predict --model_dir=runs/fashion_mnist_sparsemax_small --inputs=photos/ --confidence_threshold=0.8

Inputs: a CSV with Adult's 14 columns (header and income column optional), a folder of
PNG/JPEG images, a text file with one document per line, or a DBPedia-format CSV. Each
line of --output holds the class id and name, the probabilities, the confidence, whether
the model abstained, and the top prototypes (row in the database's source file, weight,
label name). A summary (counts per class, share abstained) is printed at the end.
"""

import json
import tempfile

from absl import flags

from proto_tf.cli.common import run_command
from proto_tf.errors import ConfigError
from proto_tf.serving import export, predict

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.
flags.DEFINE_string("saved_model", None, "An exported SavedModel version folder.", flag_values=FLAGS)
flags.DEFINE_string(
    "model_dir",
    None,
    "A run/train.py model_dir (its best checkpoint is exported on the fly).",
    flag_values=FLAGS,
)
flags.DEFINE_string("inputs", None, "The file or image folder to predict.", required=True, flag_values=FLAGS)
flags.DEFINE_string("output", "predictions.jsonl", "JSON Lines output file.", flag_values=FLAGS)
flags.DEFINE_float(
    "confidence_threshold",
    None,
    "Abstain (class_id -1) where the confidence is below this value in [0, 1]; unset: never.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "calibrated",
    False,
    "Abstain below the threshold calibrated at export (run/export.py --target_accuracy).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("batch_size", 256, "Inputs per call of the model.", flag_values=FLAGS)
flags.DEFINE_enum(
    "checkpoint",
    "best",
    ["best", "last"],
    "With --model_dir: the checkpoint to predict with (last: also of an unfinished run).",
    flag_values=FLAGS,
)


def main(argv):
    del argv
    if bool(FLAGS.saved_model) == bool(FLAGS.model_dir):
        raise ConfigError("give exactly one of --saved_model and --model_dir.")
    if FLAGS.saved_model:
        summary = _predict(FLAGS.saved_model)
    else:
        with tempfile.TemporaryDirectory(prefix="proto_tf_predict_") as exports:
            summary = _predict(export.export_model_dir(FLAGS.model_dir, exports, "predict", FLAGS.checkpoint))
    print(json.dumps({"output": FLAGS.output, **summary}, indent=2))


def _predict(saved_model):
    return predict.predict_file(
        saved_model,
        FLAGS.inputs,
        FLAGS.output,
        FLAGS.confidence_threshold,
        FLAGS.batch_size,
        calibrated=FLAGS.calibrated,
    )


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
