"""Plain-path accuracy of a trained run on training images: with BatchNorm's moving
statistics, with batch statistics, and with re-estimated moving statistics.

  python run/batchnorm_check.py --model_dir=runs/fashion_mnist_6000/sparsemax
"""

from absl import flags

from proto_tf.cli.common import run_command
from proto_tf.training import batchnorm, run_store

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string("model_dir", None, "A trained run (run/train.py).", required=True, flag_values=FLAGS)
flags.DEFINE_enum("checkpoint", "last", ["best", "last"], "Which checkpoint to load.", flag_values=FLAGS)
flags.DEFINE_integer("examples", 1024, "Training examples the accuracies are measured on.", flag_values=FLAGS)
flags.DEFINE_integer(
    "batchnorm_batches", 100, "Training batches the statistics are re-estimated from.", flag_values=FLAGS
)


def main(argv):
    del argv
    config, dataset, model, path = run_store.load_run(FLAGS.model_dir, FLAGS.checkpoint)
    inputs = dataset.preprocess(dataset.train.inputs[: FLAGS.examples])
    labels = dataset.train.labels[: FLAGS.examples]
    moving = batchnorm.plain_accuracy(model, inputs, labels)
    batch = batchnorm.plain_accuracy(model, inputs, labels, batch_statistics=True)
    # A fresh copy: the batch-statistics pass above moved the moving statistics.
    model, _ = run_store.load_trained_model(FLAGS.model_dir, config, dataset, FLAGS.checkpoint)
    batchnorm.reestimate_from_training_split(model, dataset, config, FLAGS.batchnorm_batches)
    reestimated = batchnorm.plain_accuracy(model, inputs, labels)
    print(f"{path}: plain-path accuracy on {len(labels)} training examples")
    print(
        f"  moving statistics {moving:.4f}, batch statistics {batch:.4f}, "
        f"re-estimated ({FLAGS.batchnorm_batches} batches) {reestimated:.4f}"
    )


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
