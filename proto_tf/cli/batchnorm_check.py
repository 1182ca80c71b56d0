"""Plain-path accuracy of a trained run on training images: with BatchNorm's moving
statistics, with batch statistics, and with re-estimated moving statistics.

  python run/batchnorm_check.py --model_dir=runs/fashion_mnist_6000/sparsemax
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from absl import app, flags, logging  # noqa: E402

from proto_tf.errors import exit_on_user_error  # noqa: E402
from proto_tf import batchnorm, training  # noqa: E402

flags.DEFINE_string("model_dir", None, "A trained run (run/train.py).", required=True)
flags.DEFINE_enum("checkpoint", "last", ["best", "last"], "Which checkpoint to load.")
flags.DEFINE_integer("examples", 1024, "Training examples the accuracies are measured on.")
flags.DEFINE_integer("batchnorm_batches", 100, "Training batches the statistics are re-estimated from.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config, dataset, model, path = training.load_run(FLAGS.model_dir, FLAGS.checkpoint)
    inputs = dataset.preprocess(dataset.train.inputs[: FLAGS.examples])
    labels = dataset.train.labels[: FLAGS.examples]
    moving = batchnorm.plain_accuracy(model, inputs, labels)
    batch = batchnorm.plain_accuracy(model, inputs, labels, batch_statistics=True)
    # A fresh copy: the batch-statistics pass above moved the moving statistics.
    model, _ = training.load_trained_model(FLAGS.model_dir, config, dataset, FLAGS.checkpoint)
    batchnorm.reestimate_from_training_split(model, dataset, config, FLAGS.batchnorm_batches)
    reestimated = batchnorm.plain_accuracy(model, inputs, labels)
    print(f"{path}: plain-path accuracy on {len(labels)} training examples")
    print(f"  moving statistics {moving:.4f}, batch statistics {batch:.4f}, "
          f"re-estimated ({FLAGS.batchnorm_batches} batches) {reestimated:.4f}")  # fmt: skip


def run():
    """Console-script entry point."""
    app.run(exit_on_user_error(main))


if __name__ == "__main__":
    run()
