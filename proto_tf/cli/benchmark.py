"""Benchmarks, printed as Markdown tables with the command, machine and date.

  python run/benchmark.py --suite=input --datasets=adult,fashion_mnist
  python run/benchmark.py --suite=train
  python run/benchmark.py --suite=authors --authors_code=PATH/protoattend --attention=sparsemax
  python run/benchmark.py --suite=inference --model_dir=runs/adult_sparsemax
  python run/benchmark.py --suite=sparsemax --model_dir=runs/adult_sparsemax_small
  python run/benchmark.py --suite=scale --database_sizes=262144,1048576,4194304 --batch_sizes=128
  python run/benchmark.py --suite=backbone

input: steps/s of the input pipeline alone against steps/s of a full training step at
  the paper's batch size and D_train (each dataset's flagfile), in the same run.
train: the trainer's default step against a bare step of the same model (one
  tf.function: forward, loss, gradient, clip, Adam), one step of each in turn; then ms
  per training step of each encoder family (small variants, the paper's batch and
  D_train) for the baseline encoder, ProtoAttend as in the paper, with
  candidates encoded forward-only, with a candidate memory refreshed by 128 per step,
  with XLA, and with mixed precision.
authors: ms per step of the trainer's step, the bare step and the authors' released TF1
  graph (their code, in its own process; needs `pip install --no-deps tf-keras==2.21.0`),
  in turn, on Fashion-MNIST at --small (ResNet-8, batch 64, 128 candidates).
inference: latency of a trained tabular run against D_infer, batch 1 and 128, softmax
  and sparsemax: the attention alone, the serving function in memory, and the same
  function from the exported SavedModel.
sparsemax: the default sparsemax against softmax on the same logits, D x batch, in a
  tf.function and under XLA, on random logits and (with --model_dir) on a trained
  tabular run's attention logits.
scale: serving attention over large databases (random 16-d keys): the key scan alone
  (three ways), FAISS's exact inner-product top 64 (when installed), the dense layer with
  its top 5 (up to 1M prototypes) and the streamed attention (blocks of the database, no
  [batch, D] tensor), per D and batch, with the peak RSS of the process during each and
  the error against float64 NumPy; the streamed attention over float16 and bfloat16
  keys; and with --model_dir (a trained tabular run) its exported SavedModel with a
  database of each size, served from raw rows in a process of its own.
"""

import os
import platform
import sys
import tempfile
import time

from absl import flags

from proto_tf import normalizations
from proto_tf.analysis import attention_benchmarks, serving_benchmarks, training_benchmarks
from proto_tf.cli import experiment_flags
from proto_tf.cli.common import run_command
from proto_tf.data import MissingDataError, dataset_info
from proto_tf.errors import ConfigError
from proto_tf.peak_memory import peak_resident_gib
from proto_tf.training.run_store import load_experiment_dataset

FLAGS = flags.FlagValues()  # The command's own flags: --help lists exactly these.

flags.DEFINE_enum(
    "suite",
    "input",
    ["input", "train", "authors", "inference", "sparsemax", "scale", "backbone"],
    "Which benchmark to run.",
    flag_values=FLAGS,
)
flags.DEFINE_list("datasets", ["adult", "fashion_mnist"], "input: datasets to measure.", flag_values=FLAGS)
flags.DEFINE_string("attention", "softmax", "input, train: attention of the measured model.", flag_values=FLAGS)
flags.DEFINE_integer("train_steps_timed", 10, "input, train: training steps timed per row.", flag_values=FLAGS)
flags.DEFINE_list(
    "train_modes",
    ["baseline", "faithful", "fast", "memory", "faithful_xla", "fast_xla", "faithful_bfloat16"],
    "train: modes to time (see TRAIN_MODES).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "against_bare",
    True,
    "train: first time the default step against the bare step (one "
    "tf.function of forward, loss, gradient, clip and Adam), in turn.",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "families", ["adult", "fashion_mnist", "dbpedia"], "train: datasets of the encoder families.", flag_values=FLAGS
)
flags.DEFINE_string(
    "model_dir", None, "inference, sparsemax, scale: a trained tabular run (run/train.py).", flag_values=FLAGS
)
flags.DEFINE_list(
    "database_sizes",
    ["4096", "32768", "262144", "1048576"],
    "inference, sparsemax, scale: D values.",
    flag_values=FLAGS,
)
flags.DEFINE_list("batch_sizes", ["1", "128"], "inference, sparsemax, scale: batch sizes.", flag_values=FLAGS)
flags.DEFINE_string(
    "authors_code", None, "authors: folder of a checkout of the authors' protoattend/ code.", flag_values=FLAGS
)
flags.DEFINE_integer("rounds", 3, "authors: rounds of --train_steps_timed steps of each.", flag_values=FLAGS)
flags.DEFINE_list(
    "train_flags",
    [],
    "authors: extra run/train.py flags of the measured steps.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("profile_lines", 8, "authors: op types in the kernel profile.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", 112, "backbone: image side of the ResNet-18 steps.", flag_values=FLAGS)
flags.DEFINE_integer("head_rows", 1_281_167, "backbone: cached features of the ImageNet-sized head.", flag_values=FLAGS)
flags.DEFINE_integer("head_steps", 2000, "backbone: training steps of the ImageNet-sized head.", flag_values=FLAGS)

# Training-step variants: extra run/train.py flags, and the Keras dtype policy.
TRAIN_MODES = {
    "baseline": (["--attention=none"], "float32"),
    "faithful": ([], "float32"),
    "fast": (["--nocandidate_gradients"], "float32"),
    "memory": (["--candidate_refresh=128"], "float32"),
    "faithful_xla": (["--jit_compile"], "float32"),
    "fast_xla": (["--nocandidate_gradients", "--jit_compile"], "float32"),
    "faithful_bfloat16": ([], "mixed_bfloat16"),
}

# Small variants of each encoder family at the paper's batch size and D_train.
TRAIN_FAMILIES = {
    "adult": ("LSTM (paper size)", []),
    "fashion_mnist": ("ResNet-8", ["--resnet_depth=8"]),
    "dbpedia": (
        "VDCNN, 16-128 filters",
        ["--vdcnn_first_filters=16", "--vdcnn_block_filters=16,16,32,32,64,64,128,128", "--dense_units=128,128"],
    ),
}


def _print_header():
    print(f"`python {' '.join(sys.argv)}`  ")
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores\n")


def input_suite():
    print("| dataset | batch | D_train | input steps/s | train steps/s | input / train |")
    print("| --- | --- | --- | --- | --- | --- |")
    for dataset in FLAGS.datasets:
        config = experiment_flags.config_for([f"--dataset={dataset}", f"--attention={FLAGS.attention}"])
        data = load_experiment_dataset(config)
        info = dataset_info(dataset)
        train_rate = training_benchmarks.training_step_rate(config, data, FLAGS.train_steps_timed)
        input_rate = training_benchmarks.input_pipeline_rate(data, info, config.batch_size, config.train_database_size)
        print(
            f"| {dataset} | {config.batch_size} | {config.train_database_size} | "
            f"{input_rate:.1f} | {train_rate:.2f} | {input_rate / train_rate:.0f}× |",
            flush=True,
        )


# The default step against the bare step: Adult at the paper's size, Fashion-MNIST and
# DBPedia at --small.
BARE_FAMILIES = {"adult": [], "fashion_mnist": ["--small"], "dbpedia": ["--small"]}


def against_bare_table():
    print("| dataset | flags | batch | D_train | bare ms / step | default ms / step | default / bare |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for dataset in FLAGS.families:
        extra = BARE_FAMILIES.get(dataset, [])
        config = experiment_flags.config_for([f"--dataset={dataset}", f"--attention={FLAGS.attention}", *extra])
        try:
            data, source = load_experiment_dataset(config), ""
        except MissingDataError:
            data, source = training_benchmarks.synthetic_dataset(config), " (synthetic data)"
        default, bare = training_benchmarks.trainer_against_bare(config, data, FLAGS.train_steps_timed)
        print(
            f"| {dataset}{source} | {' '.join(extra)} | {config.batch_size} | {config.train_database_size} | "
            f"{1000 * bare:.0f} | {1000 * default:.0f} | {default / bare:.3f}× |",
            flush=True,
        )
    print()


def train_suite():
    if FLAGS.against_bare:
        against_bare_table()
    if not FLAGS.train_modes:
        return
    print("| dataset | encoder | data | batch | D_train | mode | ms / step | / baseline |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in FLAGS.train_modes:
        if name not in TRAIN_MODES:
            raise ConfigError(f"Unknown train mode {name!r}; valid: {', '.join(TRAIN_MODES)}.")
    for dataset in FLAGS.families:
        encoder, encoder_flags = TRAIN_FAMILIES[dataset]
        base = [f"--dataset={dataset}", f"--attention={FLAGS.attention}", *encoder_flags]
        config = experiment_flags.config_for(base)
        try:
            data, source = load_experiment_dataset(config), "real"
        except MissingDataError:
            data, source = training_benchmarks.synthetic_dataset(config), "synthetic"
        baseline_seconds = None
        for mode in FLAGS.train_modes:
            mode_flags, dtype_policy = TRAIN_MODES[mode]
            mode_config = experiment_flags.config_for(base + mode_flags)
            try:
                seconds = training_benchmarks.training_step_seconds(
                    mode_config, data, FLAGS.train_steps_timed, dtype_policy
                )
            except Exception as error:  # A mode this stack cannot run is a result too.
                message = str(error).strip().splitlines()[0][:80]
                print(f"| {dataset} | {encoder} | {source} | | | {mode} | fails: {message} | |")
                continue
            if mode == "baseline":
                baseline_seconds = seconds
            ratio = f"{seconds / baseline_seconds:.2f}×" if baseline_seconds else "–"
            print(
                f"| {dataset} | {encoder} | {source} | {config.batch_size} | "
                f"{config.train_database_size} | {mode} | {1000 * seconds:.0f} | {ratio} |",
                flush=True,
            )


# The configuration of --suite=authors: Fashion-MNIST --small (ResNet-8, batch 64, 128
# candidates) with the decay interval the step-time comparison was specified at.
AUTHORS_CONFIG = ["--dataset=fashion_mnist", "--small", "--decay_steps=80"]


def authors_suite():
    if FLAGS.authors_code is None or not os.path.isfile(os.path.join(FLAGS.authors_code, "model.py")):
        raise ConfigError(
            f"--suite=authors needs --authors_code, the folder of the authors' protoattend/ code "
            f"(model.py, input_data.py, options.py); got {FLAGS.authors_code!r}."
        )
    config = experiment_flags.config_for(AUTHORS_CONFIG + [f"--attention={FLAGS.attention}", *FLAGS.train_flags])
    results = training_benchmarks.against_authors_graph(
        config, load_experiment_dataset(config), FLAGS.authors_code, FLAGS.rounds, FLAGS.train_steps_timed
    )
    print(f"{FLAGS.rounds} rounds of {FLAGS.train_steps_timed} steps of each, in turn; medians.\n")
    print("| step | ms / step | / authors' TF1 graph | / bare step | page faults / step | system ms / step |")
    print("| --- | --- | --- | --- | --- | --- |")
    labels = {"authors": "authors' TF1 graph", "bare": "bare step", "trainer": "trainer (default)"}
    for name, label in labels.items():
        row = results[name]
        print(
            f"| {label} | {1000 * row['seconds']:.0f} | "
            f"{row['seconds'] / results['authors']['seconds']:.3f}× | "
            f"{row['seconds'] / results['bare']['seconds']:.3f}× | {row['page_faults']:.0f} | "
            f"{1000 * row['system_seconds']:.0f} |"
        )
    print("\nKernel ms per step by op type (summed over compute threads; 5 steps):\n")
    kernels = {name: results[name]["kernels"] for name in labels}
    top = sorted(
        set().union(*kernels.values()),
        key=lambda op: -kernels["authors"].get(op, 0.0) - kernels["trainer"].get(op, 0.0),
    )[: FLAGS.profile_lines]
    print("| op | " + " | ".join(labels.values()) + " |")
    print("| --- | --- | --- | --- |")
    for op in top:
        print(f"| {op} | " + " | ".join(f"{kernels[name].get(op, 0.0):.1f}" for name in labels) + " |")
    print("| all kernels | " + " | ".join(f"{sum(kernels[name].values()):.1f}" for name in labels) + " |")


def inference_suite():
    if FLAGS.model_dir is None:
        raise ConfigError("--suite=inference needs --model_dir of a trained tabular run.")
    print(
        "| attention | D_infer | batch | attention ms | serving in memory ms | "
        "SavedModel ms | SavedModel / in memory | examples/s (SavedModel) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    with tempfile.TemporaryDirectory() as export_root:
        for row in serving_benchmarks.inference_latencies(
            FLAGS.model_dir,
            [int(size) for size in FLAGS.database_sizes],
            [int(size) for size in FLAGS.batch_sizes],
            export_root,
        ):
            rows.append(row)
            print(
                f"| {row['attention']} | {row['database_size']} | {row['batch_size']} | "
                f"{1000 * row['attention_seconds']:.1f} | {1000 * row['in_memory_seconds']:.1f} | "
                f"{1000 * row['saved_model_seconds']:.1f} | "
                f"{row['saved_model_seconds'] / row['in_memory_seconds']:.2f} | "
                f"{row['batch_size'] / row['saved_model_seconds']:.0f} |",
                flush=True,
            )
    print_sparse_over_softmax(rows)


def print_sparse_over_softmax(rows):
    """The ratio of each sparse normalisation's latency to softmax's at each D and batch,
    from `rows` of one run."""
    by_key = {(r["attention"], r["database_size"], r["batch_size"]): r for r in rows}
    print("\n| attention | D_infer | batch | / softmax: attention | serving in memory | SavedModel |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (attention, size, batch), sparse in by_key.items():
        dense = by_key.get(("softmax", size, batch))
        if not normalizations.get(attention).sparse or dense is None:
            continue
        ratios = [sparse[key] / dense[key] for key in ("attention_seconds", "in_memory_seconds", "saved_model_seconds")]
        print(f"| {attention} | {size} | {batch} | " + " | ".join(f"{ratio:.2f}×" for ratio in ratios) + " |")


def sparsemax_suite():
    sizes = [int(size) for size in FLAGS.database_sizes]
    batches = [int(size) for size in FLAGS.batch_sizes]
    logit_sets = {"random": attention_benchmarks.random_attention_logits(max(sizes), max(batches))}
    if FLAGS.model_dir is not None:
        logit_sets["trained"] = attention_benchmarks.trained_attention_logits(FLAGS.model_dir, max(sizes), max(batches))
    print(
        "| logits | D | batch | compiler | softmax ms | tf.nn.softmax ms | sparsemax ms | "
        "sparsemax / softmax | sparsemax / tf.nn.softmax |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, logits in logit_sets.items():
        for row in attention_benchmarks.normalization_latencies(logits, sizes, batches):
            print(
                f"| {kind} | {row['database_size']} | {row['batch_size']} | {row['compiler']} | "
                f"{1000 * row['softmax_seconds']:.2f} | {1000 * row['nn_softmax_seconds']:.2f} | "
                f"{1000 * row['sparsemax_seconds']:.2f} | {row['sparsemax_seconds'] / row['softmax_seconds']:.2f}× | "
                f"{row['sparsemax_seconds'] / row['nn_softmax_seconds']:.2f}× |",
                flush=True,
            )


def scale_suite():
    gib = 2**30
    sizes, batches = [int(size) for size in FLAGS.database_sizes], [int(size) for size in FLAGS.batch_sizes]
    print(
        "| D | batch | attention | key scan ms (q kᵀ / k qᵀ / NumPy) | FAISS flat top-64 ms | dense ms | "
        "streamed ms | streamed / best scan | streamed / dense | peak RSS streamed GiB | database GiB | "
        "max error vs float64 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    narrow_rows = []
    for row in attention_benchmarks.streaming_latencies(sizes, batches):
        dense, faiss = row["dense_seconds"], row["faiss_seconds"]
        scans = " / ".join(f"{1000 * row[name]:.1f}" for name in ("scan_qk", "scan_kq", "scan_numpy"))
        print(
            f"| {row['database_size']} | {row['batch_size']} | {row['attention']} | {scans} | "
            + (f"{1000 * faiss:.1f}" if faiss else "faiss not installed")
            + " | "
            + (f"{1000 * dense:.1f}" if dense else "not run")
            + f" | {1000 * row['streamed_seconds']:.1f} | "
            f"{row['streamed_seconds'] / row['scan_seconds']:.2f}× | "
            + (f"{row['streamed_seconds'] / dense:.2f}×" if dense else "–")
            + f" | {row['streamed_peak_rss_bytes'] / gib:.2f} | {row['database_bytes'] / gib:.2f} | "
            f"{row['max_error']:.1e} |",
            flush=True,
        )
        narrow_rows.append(row)
    print("\nKeys stored narrower (streamed attention, float32 accumulation):\n")
    print(
        "| D | batch | attention | keys | streamed ms | vs float32 keys | max error vs float64 | same first prototype |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in narrow_rows:
        cells = [("float32", {"seconds": row["streamed_seconds"], "max_error": row["max_error"], "top1_agreement": 1})]
        for dtype, measured in [*cells, *row["narrow"].items()]:
            print(
                f"| {row['database_size']} | {row['batch_size']} | {row['attention']} | {dtype} | "
                f"{1000 * measured['seconds']:.1f} | {measured['seconds'] / row['streamed_seconds']:.2f}× | "
                f"{measured['max_error']:.1e} | {100 * measured['top1_agreement']:.1f} % |",
                flush=True,  # Before the exports' subprocesses start.
            )
    if FLAGS.model_dir is None:
        print("\n(With --model_dir of a trained tabular run, the exported SavedModel is measured too.)")
        return
    print(f"\nThe exported SavedModel of {FLAGS.model_dir}, served from raw test rows in its own process:\n")
    print(
        "| D | attention | keys | batch | export GiB | database GiB | RSS after load GiB | peak RSS GiB | "
        "load s | first call ms | ms per call |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as export_root:
        for row in serving_benchmarks.export_latencies(FLAGS.model_dir, sizes, batches, export_root):
            print(
                f"| {row['database_size']} | {row['attention']} | {row['key_dtype']} | {row['batch_size']} | "
                f"{row['export_bytes'] / gib:.3f} | {row['database_bytes'] / gib:.3f} | "
                f"{row['rss_after_load_bytes'] / gib:.2f} | {row['peak_rss_bytes'] / gib:.2f} | "
                f"{row['load_seconds']:.1f} | {1000 * row['first_call_seconds']:.1f} | {1000 * row['seconds']:.1f} |",
                flush=True,
            )


def backbone_suite():
    from proto_tf.analysis import backbone_benchmarks

    steps = backbone_benchmarks.cached_against_backbone_step(FLAGS.image_size)
    print(
        f"ResNet-18 (keras-hub layout, {steps['parameters']:,} parameters) at {FLAGS.image_size}², "
        "sparsemax, batch 32, D_train 64:\n"
    )
    print("| step | ms / step | / cached |")
    print("| --- | --- | --- |")
    for name in ("cached", "frozen_backbone", "fine_tuned"):
        print(f"| {name} | {1000 * steps[name]:.1f} | {steps[name] / steps['cached']:.1f}× |")
    print(f"\nfeature pass: {steps['feature_pass_images_per_second']:.0f} images / s\n", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        head = backbone_benchmarks.imagenet_sized_head(
            os.path.join(folder, "run"), rows=FLAGS.head_rows, train_steps=FLAGS.head_steps
        )
        print(
            f"ImageNet-sized head: {FLAGS.head_rows:,} cached 512-d float16 features of 1,000 classes "
            f"({head['feature_bytes'] / 2**30:.2f} GiB; made in {head['features_made_seconds']:.0f} s), "
            f"{FLAGS.head_steps} steps of batch 128, D_train 1024: {head['ms_per_step']:.1f} ms / step, "
            f"test accuracy {100 * head['test'].get('accuracy', float('nan')):.2f} % (D_infer up to 32,768), "
            f"{head['wall_seconds']:.0f} s in all, "
            f"peak RSS {head['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
        served = backbone_benchmarks.served_latencies(head["model"], head["dataset"], export_root=folder)
        print(
            f"served with all {served['database_rows']:,} as the database (export {served['export_seconds']:.0f} s): "
            f"batch 1 {served['batch_1_ms']:.1f} ms, batch 128 {served['batch_128_ms']:.1f} ms; "
            f"peak RSS {peak_resident_gib():.2f} GiB"
        )


def main(argv):
    del argv
    _print_header()
    suites = {
        "input": input_suite,
        "train": train_suite,
        "authors": authors_suite,
        "inference": inference_suite,
        "sparsemax": sparsemax_suite,
        "scale": scale_suite,
        "backbone": backbone_suite,
    }
    suites[FLAGS.suite]()


def run():
    """Console-script entry point."""
    run_command(main, __doc__, FLAGS)


if __name__ == "__main__":
    run()
