"""Trains a ProtoAttend (or baseline) model with the paper's settings for an experiment.

  proto-tf-train --dataset=dbpedia --attention=softmax --data_dir=~/dbpedia_csv
  proto-tf-train --dataset=adult --attention=sparsemax --small
  proto-tf-train --experiment=fashion_mnist_sparsemax_sparsity
  proto-tf-train --dataset=adult --attention=sparsemax --small --print_config

`--dataset=D --attention=A` loads the flagfile flags/D_A.cfg (the paper's settings),
`--experiment=NAME` loads flags/NAME.cfg, `--small` adds flags/small/D.cfg (CPU-sized);
flags given here override them. The defaults shown below are the library's, before any
flagfile: `--print_config` prints the resolved configuration and exits. Running the same
command again after an interruption resumes from the last checkpoint.
"""

import dataclasses
import json

from absl import flags

from proto_tf.cli import experiment_flags
from proto_tf.cli.callbacks import load_callbacks
from proto_tf.cli.common import run_command
from proto_tf.training import trainer

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.
experiment_flags.define_flags(FLAGS)
flags.DEFINE_bool(
    "print_config",
    False,
    "Print the resolved configuration (flagfiles + command-line flags) as JSON and exit.",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "callbacks",
    [],
    "Keras callbacks, each MODULE:FACTORY or FILE.py:FACTORY where FACTORY() returns a "
    "callback or a list of them (e.g. early stopping on val_accuracy; see docs/training.md).",
    flag_values=FLAGS,
)


def main(argv):
    del argv
    config = experiment_flags.config_from_flags(FLAGS)
    if FLAGS.print_config:
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return
    summary = trainer.train(config, callbacks=load_callbacks(FLAGS.callbacks))
    test = summary.get("test_best", summary["test_last"])
    print(json.dumps({"model_dir": config.model_dir, "steps": summary["steps"], "test": test}, indent=2))


def run():
    """Console-script entry point."""
    run_command(
        main,
        __doc__,
        FLAGS,
        parse=lambda argv: experiment_flags.parse_with_flagfiles(argv, FLAGS),
        interrupted="the run's checkpoints are intact: run the same command again to resume "
        "from the last one (saved every --checkpoint_every steps)",
    )


if __name__ == "__main__":
    run()
