"""Exports a trained run as a SavedModel for TF Serving, with its database baked in.

  python run/export.py --model_dir=runs/adult_sparsemax --export_dir=exports

writes exports/adult_sparsemax/<next version>/ (TF Serving's layout).

  python run/export.py --model_dir=runs/adult_sparsemax --target_accuracy=0.95

also serves `abstain_calibrated`: it refrains below a confidence threshold chosen on the
run's validation split so that the decisions kept are 95 % accurate on new data (with
probability 1 - --calibration_delta; proto_tf/calibration.py says how).

  python run/export.py --model_dir=runs/adult_sparsemax --shard=0/4 --model_name=adult_shard0

exports the first of 4 parts of the database with the `shard_answer` signature, which a
router merges across the 4 exports (proto_tf/serving/sharding.py).
"""

from absl import flags

from proto_tf.cli.common import run_command
from proto_tf.index import KEY_DTYPES
from proto_tf.serving import export

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string("model_dir", None, "A run/train.py model_dir.", required=True, flag_values=FLAGS)
flags.DEFINE_string("export_dir", "exports", "Base folder of exported models.", flag_values=FLAGS)
flags.DEFINE_string("model_name", None, "Model name in export_dir (default: model_dir's name).", flag_values=FLAGS)
flags.DEFINE_enum(
    "checkpoint",
    "best",
    ["best", "last"],
    "Which checkpoint to export: best (on validation; a finished run only) or last (also of an unfinished run).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("infer_database_size", None, "Database size (default: the run's D_infer).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data folder, if not the one the run used.", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Prototypes returned per instance (>= 1).", flag_values=FLAGS)
flags.DEFINE_string(
    "database",
    None,
    "Labelled examples to use as the prototype database instead of training examples: an "
    "adult.data-like CSV, a DBPedia-like CSV, or an image folder with one subfolder per class.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "max_batch_size",
    export.DEFAULT_MAX_BATCH_SIZE,
    "Most instances one request may hold; larger requests get InvalidArgument.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "stream_above",
    export.DEFAULT_STREAM_ABOVE,
    "Databases of more prototypes are attended over in blocks at serving: exact, and no "
    "[batch, database] tensor in memory.",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "database_key_dtype",
    "float32",
    list(KEY_DTYPES),
    "Dtype the database's keys are stored in: float32, or float16 / bfloat16 to halve their "
    "memory (attention still computes in float32; BENCHMARKS.md measures the cost).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "shard",
    None,
    "I/N: export only the I-th of N consecutive parts of the database, with the shard_answer "
    "signature a router merges across the N exports (proto_tf.serving.sharding), e.g. 0/4.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "shard_entries",
    None,
    f"Entries per query the shard_answer signature reports (default {export.DEFAULT_SHARD_ENTRIES} with "
    "--shard); the router refuses a sparsemax support that may not fit in them.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "target_accuracy",
    None,
    "Calibrate a confidence threshold on the run's validation split: the accuracy the kept "
    "decisions must have (e.g. 0.95); served by the abstain_calibrated signature.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "target_coverage",
    None,
    "Instead of --target_accuracy: the share of decisions to keep (e.g. 0.8), at the highest threshold that keeps it.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "calibration_delta",
    0.05,
    "The calibration's guarantee fails with probability at most this (over the validation draw).",
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
        target_accuracy=FLAGS.target_accuracy,
        target_coverage=FLAGS.target_coverage,
        calibration_delta=FLAGS.calibration_delta,
        stream_above=FLAGS.stream_above,
        key_dtype=FLAGS.database_key_dtype,
        shard=FLAGS.shard,
        shard_entries=FLAGS.shard_entries,
    )
    print(f"Exported {path}")


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
