"""Transfer from an encoder pretrained with proto_tf (RESULTS.md, "Pretrained backbones"):
Fashion-MNIST classes 0-4 pretrain a baseline encoder; classes 5-9 are learnt from 10, 50
and all labelled examples per class by ProtoAttend heads on the frozen encoder, a linear
probe on it, and ProtoAttend from scratch, at the same budget (`--small` steps).

  python run/transfer.py --work_dir=runs/transfer
"""

from absl import flags

from proto_tf.analysis import transfer
from proto_tf.cli.common import run_command
from proto_tf.data.images import FASHION_MNIST_SYSTEM_DIR

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_string(
    "fashion_dir", FASHION_MNIST_SYSTEM_DIR, "Folder of the Fashion-MNIST IDX files.", flag_values=FLAGS
)
flags.DEFINE_string(
    "work_dir", "runs/transfer", "Where the image folders, runs and transfer.json go.", flag_values=FLAGS
)
flags.DEFINE_list("budgets", ["10", "50", "0"], "Labelled examples per target class (0: all).", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each draws its own labelled examples).", flag_values=FLAGS)


def main(argv):
    del argv
    result = transfer.run_experiment(
        FLAGS.fashion_dir, FLAGS.work_dir, tuple(int(b) for b in FLAGS.budgets), tuple(int(s) for s in FLAGS.seeds)
    )
    print(result["table"])


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
