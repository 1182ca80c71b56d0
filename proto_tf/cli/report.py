"""Prints the paper's numbers next to finished runs as a Markdown table.

  python run/report.py --model_dirs=runs/adult_baseline,runs/adult_softmax

With --seed_spread, runs that differ only in their seed are also grouped: the mean and
standard deviation of their test accuracy beside the paper's number.

  for s in 0 1 2; do python run/train.py --dataset=adult --attention=sparsemax --small \
    --seed=$s --model_dir=runs/adult_sparsemax_small_seed$s; done
  python run/report.py --seed_spread --model_dirs=runs/adult_sparsemax_small_seed0,runs/adult_sparsemax_small_seed1,runs/adult_sparsemax_small_seed2

With --budget_plot, runs of the same rows at reduced step budgets (each a share of its
paper row's steps, with a baseline at every share) also give the gap to the baseline
against the budget: a table and a PNG. With --calibrations (run/evaluate.py
--calibrated_export output folders), each calibrated threshold's promise on validation
beside what it gave on test. With --hub_trace, each run's attention-hub
diagnostic over its training steps (docs/training.md, "Attention hubs").
"""

import os

from absl import flags

from proto_tf.analysis import comparison, hub_trace, plots
from proto_tf.cli import experiment_flags
from proto_tf.cli.common import run_command
from proto_tf.errors import ConfigError

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_list("model_dirs", None, "model_dirs of finished run/train.py runs.", required=True, flag_values=FLAGS)
flags.DEFINE_string("hardware", None, "Hardware description for the table's header.", flag_values=FLAGS)
flags.DEFINE_bool(
    "seed_spread",
    False,
    "Also group runs that differ only in their seed: mean ± sd of the test accuracy.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "hub_trace",
    False,
    'Also print each run\'s attention-hub diagnostic (docs/training.md, "Attention hubs") over its training steps.',
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "calibrations",
    None,
    "Also print the calibrated abstention of these run/evaluate.py --calibrated_export output folders "
    "(default <model_dir>/evaluation): per run and mean ± sd of the test's share kept and accuracy.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "budget_plot", None, "PNG path: gap to the baseline against the share of the paper's steps.", flag_values=FLAGS
)


def main(argv):
    del argv
    model_dirs = [d for d in FLAGS.model_dirs if d.strip()]
    if not model_dirs:
        raise ConfigError("--model_dirs is empty: give the run folders to compare, e.g. --model_dirs=runs/a,runs/b.")
    real = [os.path.realpath(d) for d in model_dirs]
    repeated = [d for n, d in enumerate(model_dirs) if real.count(real[n]) > 1 and real.index(real[n]) == n]
    if repeated:
        raise ConfigError(
            f"--model_dirs names {', '.join(repeated)} more than once: each run would be counted twice "
            "(in a seed spread too); give each run once."
        )
    summaries = [comparison.read_summary(d) for d in model_dirs]
    print(comparison.markdown_table([comparison.comparison_row(s) for s in summaries], FLAGS.hardware))
    if FLAGS.seed_spread:
        print("\n" + comparison.seed_table(comparison.seed_spreads(summaries)))
    if FLAGS.calibrations:
        print("\n" + comparison.calibration_table([comparison.read_calibration(d) for d in FLAGS.calibrations]))
    if FLAGS.budget_plot:
        print_budget_gaps(summaries, FLAGS.budget_plot)
    if FLAGS.hub_trace:
        for model_dir in model_dirs:
            print(f"\n{model_dir}\n\n{hub_trace.hub_trace_table(model_dir)}")


def print_budget_gaps(summaries, path):
    """The gap to the baseline per row and budget, as a table and a PNG at `path`."""
    gaps = comparison.budget_gaps(summaries, _paper_steps)
    print("\n| row | share of the paper's steps: gap to the baseline (points) | the paper's gap |")
    print("| --- | --- | --- |")
    for name, entry in gaps.items():
        shown = ", ".join(f"1/{round(1 / share)}: {gap:+.2f}" for share, gap in entry["points"])
        paper = "–" if entry["paper_gap"] is None else f"{entry['paper_gap']:+.2f}"
        print(f"| {name} | {shown} | {paper} |")
    print(f"\n{plots.plot_budget_gap(gaps, path)}")


def _paper_steps(key):
    return experiment_flags.config_for([f"--experiment={key}"]).train_steps


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
