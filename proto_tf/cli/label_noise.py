"""Table 3: baseline, baseline + dropout, and sparsemax + sparsity regularisation with
noisy training labels, trained and evaluated with one command.

  python run/label_noise.py --noise_levels=0.8,0.6,0.4            # the paper's settings
  python run/label_noise.py --noise_levels=0.4 --small --data_dir=~/cifar10
  python run/label_noise.py --dataset=fashion_mnist --noise_levels=0.6 --small

A dataset with per-level flagfiles (`flags/<dataset>_noise<NN>_<method>.cfg`: CIFAR-10 has
the paper's) uses them. Other datasets use their Table 2 flagfiles (`<dataset>_baseline`,
`<dataset>_sparsemax_sparsity`) with `--label_noise` set, and `--dropout` on the encoder
output for the dropout method.
Extra flags after `--` go to every run (e.g. `-- --train_steps=100`). Each run lands in
<runs_dir>/<dataset>_noise<NN>_<method>[_small] and resumes if interrupted.
"""

import os

from absl import flags

from proto_tf.analysis import comparison
from proto_tf.cli import experiment_flags
from proto_tf.cli.common import run_command
from proto_tf.errors import ConfigError
from proto_tf.training import trainer

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_list(
    "noise_levels", ["0.8", "0.6", "0.4"], "Label-noise ratios (Table 3 has 0.8, 0.6, 0.4).", flag_values=FLAGS
)
METHODS = ("baseline", "dropout", "sparsemax_sparsity")  # Table 3's columns.

flags.DEFINE_list("methods", list(METHODS), "Methods of Table 3.", flag_values=FLAGS)
flags.DEFINE_string("dataset", "cifar10", "Dataset (Table 3 is CIFAR-10).", flag_values=FLAGS)
flags.DEFINE_float(
    "dropout",
    0.3,
    "Encoder-output dropout of the dropout method (where no per-level flagfile sets it).",
    flag_values=FLAGS,
)
flags.DEFINE_bool("small", False, "CPU-sized runs (flags/small/<dataset>.cfg).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "The dataset's folder.", flag_values=FLAGS)
flags.DEFINE_string("runs_dir", "runs", "Parent folder of the runs' model_dirs.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "Also write the Markdown table to this file.", flag_values=FLAGS)


def _config(dataset, level, method, extra):
    """The ExperimentConfig of one method at one noise level."""
    name = f"{dataset}_noise{int(round(float(level) * 100))}_{method}"
    if experiment_flags.has_experiment(name):  # Per-level settings (the paper's for CIFAR-10).
        argv = [f"--experiment={name}"]
    else:
        base = "baseline" if method in ("baseline", "dropout") else method
        argv = [f"--experiment={dataset}_{base}", f"--label_noise={level}"]
        if method == "dropout":
            argv.append(f"--encoder_dropout={FLAGS.dropout}")
    argv += ["--small"] if FLAGS.small else []
    if FLAGS.data_dir:
        argv.append(f"--data_dir={FLAGS.data_dir}")
    name += "_small" if FLAGS.small else ""
    argv.append(f"--model_dir={os.path.join(FLAGS.runs_dir, name)}")
    return experiment_flags.config_for(argv + list(extra))


def main(argv):
    unknown = set(FLAGS.methods) - set(METHODS)
    if unknown:
        raise ConfigError(f"Unknown methods {sorted(unknown)}; valid: {', '.join(METHODS)}.")
    rows = []
    for level in FLAGS.noise_levels:
        for method in FLAGS.methods:
            summary = trainer.train(_config(FLAGS.dataset, level, method, argv[1:]))
            rows.append(comparison.comparison_row(summary))
    table = comparison.markdown_table(rows)
    print(table)
    if FLAGS.output:
        with open(FLAGS.output, "w") as handle:
            handle.write(table + "\n")


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS, allow_arguments=True)


if __name__ == "__main__":
    run()
