"""Mislabel audit: ranks a run's training examples by how little weight their
prototypes (the rest of the training split, the example itself left out) put on the
example's own label, and writes audit.csv, audit.jsonl and audit.png.

  python run/audit.py --model_dir=runs/fashion_mnist_sparsemax_sparsity_small
  python run/audit.py --model_dir=RUN --compare_cleanlab --folds=3   # runs with --label_noise

With --compare_cleanlab (needs `pip install proto_tf[compare]`), the ranking is scored
against the flips the run's --label_noise made, beside cleanlab's on out-of-fold
probabilities of the baseline encoder trained with the run's flags (one model per fold).
"""

import os

from absl import flags

from proto_tf.analysis import audit
from proto_tf.analysis.audit_comparison import check_comparable, compare_with_cleanlab, markdown
from proto_tf.cli.common import run_command
from proto_tf.json_files import write_json

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.
flags.DEFINE_string("model_dir", None, "A run/train.py model_dir with attention.", required=True, flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where to write the audit (default <model_dir>/audit).", flag_values=FLAGS)
flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "The checkpoint to audit with.", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Prototypes listed per example.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("show", 10, "Suspects printed on the console.", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_bool("compare_cleanlab", False, "Score against the run's known flips, beside cleanlab.", flag_values=FLAGS)
flags.DEFINE_integer("folds", 3, "cleanlab: folds of out-of-fold probabilities.", lower_bound=2, flag_values=FLAGS)


def main(argv):
    del argv
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "audit")
    if FLAGS.compare_cleanlab:
        check_comparable(FLAGS.model_dir)  # Before the audit's work.
    result = audit.audit_run(FLAGS.model_dir, output_dir, FLAGS.checkpoint, FLAGS.top_k)
    print(f"Audited {len(result['order'])} training labels with {result['checkpoint']}.")
    print(f"  flagged (more weight on another class than on the own label): {result['flagged']}")
    for record in result["records"][: FLAGS.show]:
        print(
            f"  #{record['rank']} train row {record['train_row']}: label {record['label_name']}, "
            f"weight on it {record['own_label_mass']:.3f}; prototypes say {record['suggested_name']} "
            f"({record['suggested_mass']:.3f})"
        )
    print(f"  ranking: {result['csv']} and {result['jsonl']}; figure: {result['png']}")
    if FLAGS.compare_cleanlab:
        rows = compare_with_cleanlab(FLAGS.model_dir, FLAGS.folds, os.path.join(output_dir, "cleanlab"), result)
        write_json(os.path.join(output_dir, "comparison.json"), rows)
        print(markdown(rows))


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
