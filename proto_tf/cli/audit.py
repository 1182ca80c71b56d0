"""Mislabel audit: ranks a run's training examples by how little weight their
prototypes put on the example's own label, and writes audit.csv, audit.jsonl and
audit.png. In-sample (the default, cheap): the run's own model, each example attending
over the rest of the training split. Out-of-fold (--folds=K): K models trained with the
run's flags on the other folds, each example judged by prototypes of other folds (a
model that never saw its label), flagged and ranked as confident learning does.

  python run/audit.py --model_dir=runs/fashion_mnist_sparsemax_sparsity_small
  python run/audit.py --model_dir=RUN --folds=3                     # out-of-fold, confident learning
  python run/audit.py --model_dir=RUN --folds=3 --compare_cleanlab  # runs with --label_noise

With --compare_cleanlab (needs `pip install proto_tf[compare]` and --folds=K), the
ranking is scored against the flips the run's --label_noise made, beside cleanlab's on
out-of-fold probabilities of the baseline encoder trained with the run's flags on the
same folds (the same budget), and cleanlab on the audit's own class masses.
"""

import os

from absl import flags

from proto_tf.analysis import audit
from proto_tf.analysis.audit_comparison import check_comparable, compare_with_cleanlab, markdown
from proto_tf.cli.common import run_command
from proto_tf.errors import ConfigError
from proto_tf.json_files import write_json

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.
flags.DEFINE_string("model_dir", None, "A run/train.py model_dir with attention.", required=True, flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where to write the audit (default <model_dir>/audit).", flag_values=FLAGS)
flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "The checkpoint to audit with.", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Prototypes listed per example.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("show", 10, "Suspects printed on the console.", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_bool("compare_cleanlab", False, "Score against the run's known flips, beside cleanlab.", flag_values=FLAGS)
flags.DEFINE_integer(
    "folds",
    0,
    "0: the in-sample audit (the run's own model). K >= 2: the out-of-fold audit, K models trained "
    "with the run's flags on the other folds (resumable), ranked and flagged by confident learning; "
    "--compare_cleanlab then trains cleanlab's baseline on the same folds.",
    lower_bound=0,
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "drop", False, "Write drop_rows.csv: the flagged rows, for run/train.py --drop_rows.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "relabel",
    False,
    "Write relabel_rows.csv: the flagged rows with the class their prototypes suggest, for "
    "run/train.py --relabel_rows.",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "ranking", "self_confidence", ["self_confidence", "margin"], "Out-of-fold ranking.", flag_values=FLAGS
)


def main(argv):
    del argv
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "audit")
    if FLAGS.compare_cleanlab:
        check_comparable(FLAGS.model_dir)  # Before the audit's work.
    if FLAGS.compare_cleanlab and FLAGS.folds < 2:
        raise ConfigError("--compare_cleanlab needs --folds=K >= 2: cleanlab reads out-of-fold probabilities.")
    result = audit.audit_run(FLAGS.model_dir, output_dir, FLAGS.checkpoint, FLAGS.top_k, FLAGS.folds, FLAGS.ranking)
    print(f"Audited {len(result['order'])} training labels ({result['mode']}).")
    rule = "confident learning" if result["folds"] else "more weight on another class than on the own label"
    print(f"  flagged ({rule}): {result['flagged']}")
    for record in result["records"][: FLAGS.show]:
        print(
            f"  #{record['rank']} train row {record['train_row']}: label {record['label_name']}, "
            f"weight on it {record['own_label_mass']:.3f}; prototypes say {record['suggested_name']} "
            f"({record['suggested_mass']:.3f})"
        )
    print(f"  ranking: {result['csv']} and {result['jsonl']}; figure: {result['png']}")
    for flag, path in audit.write_cleaning(result, output_dir, FLAGS.drop, FLAGS.relabel).items():
        print(f"  {flag}: {path} (train again with --{flag}={path} and another --model_dir)")
    if FLAGS.compare_cleanlab:
        rows = compare_with_cleanlab(FLAGS.model_dir, FLAGS.folds, os.path.join(output_dir, "cleanlab"), result)
        write_json(os.path.join(output_dir, "comparison.json"), rows)
        print(markdown(rows))


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
