"""Prints the paper's numbers next to finished runs as a Markdown table.

  python run/comparison.py --model_dirs=runs/adult_baseline,runs/adult_softmax
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from proto_tf.analysis import comparison  # noqa: E402
from proto_tf.cli.common import run_command  # noqa: E402

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_list("model_dirs", None, "model_dirs of finished run/train.py runs.", required=True, flag_values=FLAGS)
flags.DEFINE_string("hardware", None, "Hardware description for the table's header.", flag_values=FLAGS)


def main(argv):
    del argv
    rows = [comparison.comparison_row(comparison.read_summary(d)) for d in FLAGS.model_dirs]
    print(comparison.markdown_table(rows, FLAGS.hardware))


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
