"""Table 3: baseline, baseline + dropout, and sparsemax + sparsity regularisation on
CIFAR-10 with noisy labels, trained and evaluated with one command.

  python run/label_noise.py --noise_levels=0.8,0.6,0.4            # the paper's settings
  python run/label_noise.py --noise_levels=0.4 --small --data_dir=~/cifar10

Extra flags after `--` go to every run (e.g. `-- --train_steps=100`). Each run lands in
<runs_dir>/cifar10_noise<NN>_<method>[_small] and resumes if interrupted.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import experiment_flags  # noqa: E402
from proto_tf import report, training  # noqa: E402

flags.DEFINE_list("noise_levels", ["0.8", "0.6", "0.4"], "Label-noise ratios (Table 3 has 0.8, 0.6, 0.4).")
flags.DEFINE_list("methods", ["baseline", "dropout", "sparsemax_sparsity"], "Methods of Table 3.")
flags.DEFINE_bool("small", False, "CPU-sized runs (flags/small/cifar10.cfg).")
flags.DEFINE_string("data_dir", None, "CIFAR-10 folder.")
flags.DEFINE_string("runs_dir", "runs", "Parent folder of the runs' model_dirs.")
flags.DEFINE_string("output", None, "Also write the Markdown table to this file.")
FLAGS = flags.FLAGS


def _config(experiment, extra):
    argv = [f"--experiment={experiment}"] + (["--small"] if FLAGS.small else [])
    if FLAGS.data_dir:
        argv.append(f"--data_dir={FLAGS.data_dir}")
    name = experiment + ("_small" if FLAGS.small else "")
    argv.append(f"--model_dir={os.path.join(FLAGS.runs_dir, name)}")
    return experiment_flags.config_for(argv + list(extra))


def main(argv):
    logging.set_verbosity(logging.WARNING)
    rows = []
    for level in FLAGS.noise_levels:
        for method in FLAGS.methods:
            experiment = f"cifar10_noise{int(round(float(level) * 100))}_{method}"
            summary = training.train(_config(experiment, argv[1:]))
            rows.append(report.comparison_row(summary))
    table = report.markdown_table(rows)
    print(table)
    if FLAGS.output:
        with open(FLAGS.output, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    app.run(main)
