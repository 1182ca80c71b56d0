"""Benchmarks, printed as a Markdown table with the command and machine.

  python run/benchmark.py --suite=input --datasets=adult,fashion_mnist

input: steps/s of the input pipeline alone against steps/s of a full training step at
the paper's batch size and D_train (each dataset's flagfile), in the same run.
"""

import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from absl import app, flags, logging  # noqa: E402

import experiment_flags  # noqa: E402
from proto_tf import benchmarks  # noqa: E402
from proto_tf.data import dataset_info  # noqa: E402
from proto_tf.training import load_experiment_dataset  # noqa: E402

flags.DEFINE_enum("suite", "input", ["input"], "Which benchmark to run.")
flags.DEFINE_list("datasets", ["adult", "fashion_mnist"], "Datasets to measure.")
flags.DEFINE_string("attention", "softmax", "Attention of the measured model.")
flags.DEFINE_integer("train_steps_timed", 10, "Training steps timed per dataset.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    print(f"`python {' '.join(sys.argv)}`  ")
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores\n")  # fmt: skip
    print("| dataset | batch | D_train | input steps/s | train steps/s | input / train |")
    print("| --- | --- | --- | --- | --- | --- |")
    for dataset in FLAGS.datasets:
        config = experiment_flags.config_for([f"--dataset={dataset}", f"--attention={FLAGS.attention}"])
        data = load_experiment_dataset(config)
        info = dataset_info(dataset)
        train_rate = benchmarks.training_step_rate(config, data, FLAGS.train_steps_timed)
        input_rate = benchmarks.input_pipeline_rate(
            data, info, config.batch_size, config.train_database_size
        )
        print(
            f"| {dataset} | {config.batch_size} | {config.train_database_size} | "
            f"{input_rate:.1f} | {train_rate:.2f} | {input_rate / train_rate:.0f}× |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
