"""Saves a trained run's encoder as a `.keras` backbone for `--backbone`: pretrain on one
task, learn another from its features.

  python run/save_encoder.py --model_dir=runs/fashion_mnist_baseline_small --output=encoder.keras
"""

from absl import flags

from proto_tf.cli.common import run_command
from proto_tf.training.encoder_file import save_encoder

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string("model_dir", None, "A run/train.py model_dir.", required=True, flag_values=FLAGS)
flags.DEFINE_string("output", None, "The .keras file to write.", required=True, flag_values=FLAGS)
flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint's encoder.", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data folder, if not the one the run used.", flag_values=FLAGS)
flags.DEFINE_enum(
    "layer",
    "output",
    ["output", "pooled"],
    "The encoder's output, or a ResNet's pooled last stage before its dense head.",
    flag_values=FLAGS,
)


def main(argv):
    del argv
    path = save_encoder(FLAGS.model_dir, FLAGS.output, FLAGS.checkpoint, FLAGS.data_dir, FLAGS.layer)
    print(f"Wrote {path}: the encoder of {FLAGS.model_dir}, for --backbone={path}.")


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
