"""Shows the prototypes behind decisions: an image grid (image datasets) or texts / rows
(DBPedia, Adult) for chosen test examples, and the misclassified ones with their
wrong-label prototypes. Works from an exported SavedModel or from a run (exported first).

  python run/explain.py --saved_model=exports/adult_sparsemax_small/1 --dataset=adult
  python run/explain.py --model_dir=runs/fashion_mnist_sparsemax_small --examples=0,1,2,3
"""

import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from proto_tf import explain, export, training  # noqa: E402
from proto_tf.cli.common import run_command  # noqa: E402
from proto_tf.data import dataset_info  # noqa: E402
from proto_tf.errors import ConfigError  # noqa: E402

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string("saved_model", None, "An exported SavedModel version directory.", flag_values=FLAGS)
flags.DEFINE_string("model_dir", None, "A run/train.py model_dir (exported on the fly).", flag_values=FLAGS)
flags.DEFINE_string("dataset", None, "Dataset of the SavedModel (read from model_dir otherwise).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data folder (default: the dataset's usual place).", flag_values=FLAGS)
flags.DEFINE_list("examples", ["0", "1", "2", "3", "4", "5"], "Test-set positions to explain.", flag_values=FLAGS)
flags.DEFINE_integer("misclassified", 4, "How many misclassified test examples to show.", flag_values=FLAGS)
flags.DEFINE_integer("scan", 2000, "Test examples scanned for misclassified ones.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", "explanations", "Where PNGs and Markdown go.", flag_values=FLAGS)


def main(argv):
    del argv
    if bool(FLAGS.saved_model) == bool(FLAGS.model_dir):
        raise ConfigError("Give exactly one of --saved_model and --model_dir.")
    dataset, data_dir, path = FLAGS.dataset, FLAGS.data_dir, FLAGS.saved_model
    if FLAGS.model_dir:
        config = training.read_config(FLAGS.model_dir)
        dataset, data_dir = config.dataset, data_dir or config.data_dir
        path = export.export_model_dir(FLAGS.model_dir, tempfile.mkdtemp(), "explain", data_dir=data_dir)
    if dataset is None:
        raise ConfigError("--dataset is needed with --saved_model.")
    raw = explain.load_raw(dataset, data_dir)
    chosen = explain.explain(path, dataset, raw, [int(e) for e in FLAGS.examples])
    scanned = explain.explain(path, dataset, raw, list(range(min(FLAGS.scan, len(raw["test_labels"])))))
    wrong = explain.misclassified(scanned)[: FLAGS.misclassified]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    if dataset_info(dataset).kind == "image":
        for name, items in (("prototypes", chosen), ("misclassified", wrong)):
            if items:
                print("Wrote", explain.render_images(items, raw, os.path.join(FLAGS.output_dir, f"{name}.png")))
    else:
        for name, items in (("prototypes", chosen), ("misclassified", wrong)):
            target = os.path.join(FLAGS.output_dir, f"{name}.md")
            with open(target, "w") as handle:
                handle.write(explain.render_text(items, raw, dataset))
            print("Wrote", target)
    with open(os.path.join(FLAGS.output_dir, "explanations.json"), "w") as handle:
        json.dump({"examples": chosen, "misclassified": wrong}, handle, indent=1)


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
