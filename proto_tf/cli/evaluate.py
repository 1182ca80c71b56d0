"""Evaluates a trained run: accuracy of both paths, prototype counts (Table 2), the
confidence-controlled accuracy curve (Fig. 6) and, for Fashion-MNIST, confidence under
distribution shift (Fig. 8). Writes evaluation.json and PNG plots.

  python run/evaluate.py --model_dir=runs/adult_sparsemax_small
  python run/evaluate.py --model_dir=runs/fashion_mnist_softmax_small --shift_data_dirs=mnist=~/mnist
"""

import os

from absl import flags

from proto_tf.analysis import evaluate_run
from proto_tf.cli.common import run_command
from proto_tf.errors import ConfigError
from proto_tf.json_files import read_json
from proto_tf.serving import export
from proto_tf.training import run_directory

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string("model_dir", None, "A run/train.py model_dir.", required=True, flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where to write (default <model_dir>/evaluation).", flag_values=FLAGS)
flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint to evaluate.", flag_values=FLAGS)
flags.DEFINE_integer("infer_database_size", None, "Database size (default: the run's D_infer).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data folder, if not the one the run used.", flag_values=FLAGS)
flags.DEFINE_list(
    "shift_data_dirs", [], "For Fashion-MNIST: name=folder pairs of shifted sets (mnist, cifar10).", flag_values=FLAGS
)
flags.DEFINE_integer("dknn_neighbours", 0, "k of a deep k-NN comparison (Fig. 7); 0 skips it.", flag_values=FLAGS)
flags.DEFINE_string(
    "calibrated_export",
    None,
    "A SavedModel exported with --target_accuracy or --target_coverage: report the test "
    "coverage and accuracy at its calibrated threshold.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "batchnorm_batches",
    0,
    "Re-estimate BatchNorm statistics from this many training steps' batches before "
    "evaluating; 0 uses the checkpoint's (re-estimated already if the run was trained with "
    "--batchnorm_batches).",
    flag_values=FLAGS,
)


def main(argv):
    shift_dirs = _shift_dirs(FLAGS.shift_data_dirs)
    calibration = _calibration(FLAGS.calibrated_export, FLAGS.model_dir) if FLAGS.calibrated_export else None
    report = evaluate_run.evaluate_model_dir(
        FLAGS.model_dir,
        FLAGS.output_dir,
        FLAGS.checkpoint,
        FLAGS.infer_database_size,
        FLAGS.data_dir,
        shift_dirs,
        FLAGS.dknn_neighbours,
        FLAGS.batchnorm_batches,
        calibration,
    )
    for line in evaluate_run.summary_lines(report):
        print(line)


def _calibration(path, model_dir):
    """The calibration stored in the export at `path`, which must have been exported
    from the run in `model_dir` (its flags and training data: `RUN_FILE`)."""
    stored = os.path.join(path, export.CALIBRATION_FILE)
    if not os.path.isfile(stored):
        raise ConfigError(
            f"--calibrated_export={path}: no {export.CALIBRATION_FILE} in it; export the run with "
            "--target_accuracy or --target_coverage first."
        )
    origin = os.path.join(path, export.RUN_FILE)
    if not os.path.isfile(origin):
        raise ConfigError(
            f"--calibrated_export={path} does not say which run it was exported from (an export of an "
            f"earlier version); export --model_dir={model_dir} again with --target_accuracy or --target_coverage."
        )
    made_from = read_json(origin, "the run the export was made from")
    identity = run_directory.run_identity(model_dir)
    differing = [name for name in ("config_sha256", "data") if made_from.get(name) != identity[name]]
    if differing:
        what = " and ".join({"config_sha256": "flags", "data": "training data"}[name] for name in differing)
        raise ConfigError(
            f"--calibrated_export={path} was exported from another run than --model_dir={model_dir} "
            f"(their {what} differ): its threshold was calibrated on that run's model. Give this run's "
            "calibrated export."
        )
    return read_json(stored, "the export's calibration")


def _shift_dirs(pairs):
    """--shift_data_dirs as {name: folder} (the run's dataset says which names it has)."""
    found = {}
    for pair in pairs:
        name, _, folder = pair.partition("=")
        if not name or not folder:
            raise ConfigError(
                f"--shift_data_dirs={','.join(pairs)}: {pair!r} is not name=folder "
                "(e.g. --shift_data_dirs=mnist=~/mnist)."
            )
        found[name] = folder
    return found


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
