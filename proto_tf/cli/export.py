"""Exports a trained run as a SavedModel for TF Serving, with its database baked in.

  python run/export.py --model_dir=runs/adult_sparsemax --export_dir=exports

writes exports/adult_sparsemax/<next version>/ (TF Serving's layout).
"""


from absl import flags

from proto_tf.serving import export
from proto_tf.cli.common import run_command

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string("model_dir", None, "A run/train.py model_dir.", required=True, flag_values=FLAGS)
flags.DEFINE_string("export_dir", "exports", "Base folder of exported models.", flag_values=FLAGS)
flags.DEFINE_string("model_name", None, "Model name in export_dir (default: model_dir's name).", flag_values=FLAGS)
flags.DEFINE_enum(
    "checkpoint", "best", ["best", "last"],
    "Which checkpoint to export: best (on validation; a finished run only) or last (also of "
    "an unfinished run).",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_integer("infer_database_size", None, "Database size (default: the run's D_infer).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data folder, if not the one the run used.", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Prototypes returned per instance (>= 1).", flag_values=FLAGS)
flags.DEFINE_string(
    "database", None,
    "Labelled examples to use as the prototype database instead of training examples: an "
    "adult.data-like CSV, a DBPedia-like CSV, or an image folder with one subfolder per class.",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_integer(
    "max_batch_size", export.DEFAULT_MAX_BATCH_SIZE,
    "Most instances one request may hold; larger requests get InvalidArgument.",
    flag_values=FLAGS,
)


def main(argv):
    path = export.export_model_dir(
        FLAGS.model_dir,
        FLAGS.export_dir,
        FLAGS.model_name,
        FLAGS.checkpoint,
        FLAGS.infer_database_size,
        FLAGS.data_dir,
        FLAGS.top_k,
        FLAGS.max_batch_size,
        FLAGS.database,
    )
    print(f"Exported {path}")


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
