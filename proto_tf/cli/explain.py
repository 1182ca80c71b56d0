"""Shows the prototypes behind decisions: an image grid (image datasets) or texts / rows
(DBPedia, Adult) for chosen test examples, and the misclassified ones with their
wrong-label prototypes. Works from an exported SavedModel or from a run (exported first).

  python run/explain.py --saved_model=exports/adult_sparsemax_small/1 --dataset=adult
  python run/explain.py --model_dir=runs/fashion_mnist_sparsemax_small --examples=0,1,2,3
"""

import os
import tempfile

from absl import flags

from proto_tf import json_files
from proto_tf.analysis import explain
from proto_tf.cli.common import run_command
from proto_tf.data import dataset_info, raw_examples
from proto_tf.errors import ConfigError
from proto_tf.serving import export
from proto_tf.serving.predict import check_saved_model
from proto_tf.training import run_store

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string("saved_model", None, "An exported SavedModel version directory.", flag_values=FLAGS)
flags.DEFINE_string("model_dir", None, "A run/train.py model_dir (exported on the fly).", flag_values=FLAGS)
flags.DEFINE_string("dataset", None, "Dataset of the SavedModel (read from model_dir otherwise).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data folder (default: the dataset's usual place).", flag_values=FLAGS)
flags.DEFINE_list(
    "examples",
    ["0", "1", "2", "3", "4", "5"],
    "Test-set positions to explain (0 = the first).",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "checkpoint",
    "best",
    ["best", "last"],
    "With --model_dir: the checkpoint to explain (last: also of an unfinished run).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("misclassified", 4, "How many misclassified test examples to show.", flag_values=FLAGS)
flags.DEFINE_integer("scan", 2000, "Test examples scanned for misclassified ones.", flag_values=FLAGS)
flags.DEFINE_string(
    "output_dir",
    None,
    "Where figures (PNG + PDF), Markdown and explanations.json go (default: "
    "<model_dir>/explanations, or explanations/<model>_<version> for --saved_model).",
    flag_values=FLAGS,
)


def main(argv):
    del argv
    if bool(FLAGS.saved_model) == bool(FLAGS.model_dir):
        raise ConfigError("give exactly one of --saved_model and --model_dir.")
    if FLAGS.model_dir:
        config = run_store.read_config(FLAGS.model_dir)
        data_dir = FLAGS.data_dir or config.data_dir
        output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "explanations")
        # Exported on the fly into a folder removed afterwards.
        with tempfile.TemporaryDirectory(prefix="proto_tf_explain_") as exports:
            path = export.export_model_dir(FLAGS.model_dir, exports, "explain", FLAGS.checkpoint, data_dir=data_dir)
            _explain(path, config.dataset, data_dir, output_dir, config.data_options(), config.seed)
        return
    if FLAGS.dataset is None:
        raise ConfigError("--dataset is needed with --saved_model.")
    if dataset_info(FLAGS.dataset).user_data:
        raise ConfigError(
            f"--dataset={FLAGS.dataset}: explain your own data with --model_dir=RUN (the run "
            "knows how its files are read)."
        )
    version = os.path.normpath(FLAGS.saved_model)
    default = os.path.join("explanations", f"{os.path.basename(os.path.dirname(version))}_{os.path.basename(version)}")
    _explain(FLAGS.saved_model, FLAGS.dataset, FLAGS.data_dir, FLAGS.output_dir or default)


def _explain(path, dataset, data_dir, output_dir, options=None, seed=0):
    positions = _example_positions(FLAGS.examples)
    explain.check_export_matches(check_saved_model(path), dataset)  # Before any data is read.
    raw = raw_examples.load_raw(dataset, data_dir, options, seed)
    count = len(raw["test_labels"])
    outside = [p for p in positions if p >= count]
    if outside:
        raise ConfigError(
            f"--examples={','.join(FLAGS.examples)}: {', '.join(map(str, outside))} is past the "
            f"end of the test set; valid positions: 0..{count - 1}."
        )
    chosen = explain.explain(path, dataset, raw, positions)
    scanned = explain.explain(path, dataset, raw, list(range(min(FLAGS.scan, len(raw["test_labels"])))))
    wrong = explain.misclassified(scanned)[: FLAGS.misclassified]
    os.makedirs(output_dir, exist_ok=True)
    for name, items in (("prototypes", chosen), ("misclassified", wrong)):
        if not items:
            continue
        if dataset_info(dataset).kind.examples_are_images:
            caption = explain.MISCLASSIFIED_NOTE if name == "misclassified" else None
            written = explain.render_images(items, raw, os.path.join(output_dir, f"{name}.png"), caption=caption)
        else:
            written = (os.path.join(output_dir, f"{name}.md"),)
            with open(written[0], "w") as handle:
                if name == "misclassified":
                    handle.write(explain.MISCLASSIFIED_NOTE + "\n\n")
                handle.write(explain.render_text(items, raw, dataset))
        print("Wrote", ", ".join(written))
    json_files.write_json(
        os.path.join(output_dir, "explanations.json"),
        {"examples": chosen, "misclassified": wrong, "misclassified_note": explain.MISCLASSIFIED_NOTE},
    )
    print("Wrote", os.path.join(output_dir, "explanations.json"))


def _example_positions(values):
    """--examples as test-set positions: integers >= 0 (a negative one would count from
    the end, and name the wrong row)."""
    positions = []
    for value in values:
        try:
            position = int(value)
        except ValueError:
            position = -1
        if position < 0:
            raise ConfigError(
                f"--examples={','.join(values)}: {value!r} is not a test-set position; give "
                "integers >= 0, e.g. --examples=0,1,2."
            )
        positions.append(position)
    return positions


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
