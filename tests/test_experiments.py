"""Every dataset trains end to end through its real flagfiles (small variant), on small
files in the real on-disk formats."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from data_files import write_adult, write_cifar10, write_dbpedia, write_fruits, write_isic, write_mnist
from run_helpers import logged_tags

from proto_tf.cli import experiment_flags
from proto_tf.training.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITERS = {
    "mnist": lambda d: write_mnist(d, train=60, test=20),
    "fashion_mnist": lambda d: write_mnist(d, train=60, test=20),
    "cifar10": lambda d: write_cifar10(d, per_batch=12),
    "fruits": lambda d: write_fruits(d, per_class=8),
    "isic": lambda d: write_isic(d, train=40, test=10, melanoma_every=3),
    "dbpedia": lambda d: write_dbpedia(d, train=70, test=28),
    "adult": lambda d: write_adult(d, train_rows=200, test_rows=40),
}


def test_flagfiles_hold_the_paper_values_and_command_line_overrides():
    config = experiment_flags.config_for(["--dataset=fashion_mnist", "--attention=sparsemax"])
    assert (config.learning_rate, config.decay_rate, config.decay_steps) == (0.001, 0.9, 8000)
    assert (config.train_steps, config.batch_size, config.clip_value) == (392000, 128, 20.0)
    assert (config.train_database_size, config.infer_database_size) == (1024, 32768)
    assert config.model_dir == os.path.join("runs", "fashion_mnist_sparsemax")
    small = experiment_flags.config_for(["--dataset=cifar10", "--attention=none", "--small", "--train_steps=7"])
    assert small.resnet_depth == 8 and small.dense_units == (256, 512) and small.train_steps == 7
    noisy = experiment_flags.config_for(["--experiment=cifar10_noise60_sparsemax_sparsity"])
    assert (noisy.label_noise, noisy.sparsity_weight, noisy.train_steps) == (0.6, 0.0005, 92000)


# Each dataset with one attention, cycling through the three.
CASES = [
    ("mnist", "sparsemax"),
    ("fashion_mnist", "none"),
    ("cifar10", "softmax"),
    ("fruits", "sparsemax"),
    ("isic", "softmax"),
    ("dbpedia", "none"),
    ("adult", "sparsemax"),
]


@pytest.mark.parametrize("dataset,attention", CASES)
def test_small_variant_trains_end_to_end(tmp_path, dataset, attention):
    WRITERS[dataset](str(tmp_path / "data"))
    config = experiment_flags.config_for(
        [
            f"--dataset={dataset}",
            f"--attention={attention}",
            "--small",
            f"--data_dir={tmp_path / 'data'}",
            f"--model_dir={tmp_path / 'run'}",
            "--train_steps=2",
            "--batch_size=8",
            "--train_database_size=8",
            "--infer_database_size=16",
            "--validation_fraction=0.2",
            "--eval_every=2",
        ]
    )
    assert config.data_dir == str(tmp_path / "data")
    summary = Trainer(config, verbose=False).train()
    assert summary["steps"] == 2
    assert 0.0 <= summary["test_best"]["accuracy"] <= 1.0
    if attention != "none":
        assert 1 <= summary["test_best"]["median_prototypes_95"] <= 16
    if attention != "none" and dataset in ("mnist", "fruits", "isic", "cifar10"):
        assert "input_and_prototypes" in logged_tags(tmp_path / "run" / "logs" / "validation")


@pytest.mark.slow
def test_dbpedia_softmax_command_runs_end_to_end(tmp_path):
    write_dbpedia(str(tmp_path / "dbpedia_csv"))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run", "train.py"),
            "--dataset=dbpedia",
            "--attention=softmax",
            f"--data_dir={tmp_path / 'dbpedia_csv'}",
            "--small",
            f"--model_dir={tmp_path / 'run'}",
            "--train_steps=3",
            "--batch_size=8",
            "--train_database_size=16",
            "--infer_database_size=32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run" / "summary.json") as handle:
        summary = json.load(handle)
    assert summary["steps"] == 3 and summary["config"]["dataset"] == "dbpedia"
    assert summary["config"]["learning_rate"] == 0.0008  # From flags/dbpedia_softmax.cfg.


def _label_noise_command(tmp_path, *flags):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run", "label_noise.py"),
            "--noise_levels=0.4",
            "--small",
            f"--runs_dir={tmp_path / 'runs'}",
            f"--output={tmp_path / 'table.md'}",
            *flags,
            "--",
            "--train_steps=2",
            "--batch_size=8",
            "--train_database_size=8",
            "--infer_database_size=16",
            "--validation_fraction=0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return (tmp_path / "table.md").read_text()


def _run_config(tmp_path, name):
    with open(tmp_path / "runs" / name / "summary.json") as handle:
        return json.load(handle)["config"]


@pytest.mark.slow
def test_label_noise_command_writes_the_table(tmp_path):
    write_cifar10(str(tmp_path / "cifar"), per_batch=12)
    table = _label_noise_command(tmp_path, f"--data_dir={tmp_path / 'cifar'}")
    for method, paper in (("baseline", "77.47"), ("dropout", "78.99"), ("sparsemax_sparsity", "80.04")):
        assert f"| cifar10_noise40_{method} | {paper} |" in table
    config = _run_config(tmp_path, "cifar10_noise40_dropout_small")
    assert config["label_noise"] == 0.4 and config["encoder_dropout"] == 0.5


@pytest.mark.slow
def test_label_noise_command_on_another_dataset_uses_its_table_2_flagfiles(tmp_path):
    write_mnist(str(tmp_path / "fmnist"), train=60, test=20)
    table = _label_noise_command(
        tmp_path, "--dataset=fashion_mnist", "--dropout=0.2", f"--data_dir={tmp_path / 'fmnist'}"
    )
    for method in ("baseline", "dropout", "sparsemax_sparsity"):
        assert f"| fashion_mnist_noise40_{method} | – |" in table  # No paper number.
    baseline, dropout, sparse = (
        _run_config(tmp_path, f"fashion_mnist_noise40_{method}_small")
        for method in ("baseline", "dropout", "sparsemax_sparsity")
    )
    assert {c["label_noise"] for c in (baseline, dropout, sparse)} == {0.4}
    assert (baseline["encoder_dropout"], dropout["encoder_dropout"]) == (0.0, 0.2)
    # From flags/fashion_mnist_baseline.cfg and flags/fashion_mnist_sparsemax_sparsity.cfg.
    assert (baseline["learning_rate"], sparse["sparsity_weight"]) == (0.0015, 0.0003)
    assert sparse["attention"] == "sparsemax" and baseline["attention"] == "none"


def test_learning_rate_decays_continuously_as_in_the_authors_code():
    from proto_tf.training.config import ExperimentConfig, learning_rate_schedule

    config = ExperimentConfig(learning_rate=0.002, decay_rate=0.9, decay_steps=4000)
    schedule = learning_rate_schedule(config)
    for step in (0, 1, 1999, 4000, 6500, 123457):
        # tf.train.exponential_decay(staircase=False): lr * rate^(step / decay_steps).
        expected = 0.002 * 0.9 ** (step / 4000)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step


def test_every_flag_has_written_help_and_help_lists_only_the_commands_flags(tmp_path):
    import dataclasses

    from absl import flags as absl_flags

    from proto_tf.training.config import ExperimentConfig

    flag_values = absl_flags.FlagValues()
    experiment_flags.define_flags(flag_values)
    for field in dataclasses.fields(ExperimentConfig):
        help_text = flag_values[field.name].help
        assert help_text and help_text != field.name.replace("_", " ") + ".", field.name
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "run", "train.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0
    assert "--train_steps: Training steps" in result.stdout and "--print_config" in result.stdout
    for foreign in ("test_random_seed", "hbm_oom_exit", "verbosity", "only_check_args"):
        assert foreign not in result.stdout, foreign


def test_print_config_shows_flagfile_and_overrides(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run", "train.py"),
            "--dataset=adult",
            "--attention=sparsemax",
            "--small",
            "--seed=7",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads(result.stdout)
    expected = experiment_flags.config_for(["--dataset=adult", "--attention=sparsemax", "--small", "--seed=7"])
    assert config == json.loads(json.dumps(dataclasses.asdict(expected)))
    assert config["seed"] == 7 and config["learning_rate"] == 0.0005  # flags/adult_sparsemax.cfg
    assert not os.path.exists(tmp_path / "runs")  # Nothing trained or written.


def test_the_configuration_is_frozen_after_validation():
    """A validated configuration cannot be changed in place (it was, by the training
    benchmark, which left the caller's config pointing at a deleted folder); changes go
    through `dataclasses.replace`, which validates again."""
    from proto_tf.analysis import training_benchmarks
    from proto_tf.training.config import ExperimentConfig

    config = ExperimentConfig(dataset="adult", attention="sparsemax", dense_units=[8, 4], model_dir="/tmp/x")
    assert config.dense_units == (8, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train_steps = 3
    dataset = training_benchmarks.synthetic_dataset(
        dataclasses.replace(config, value_size=8, lstm_embedding_size=8), size=64
    )
    small = dataclasses.replace(
        config,
        value_size=8,
        lstm_embedding_size=8,
        batch_size=8,
        train_database_size=8,
        infer_database_size=16,
        validation_fraction=0.0,
    )
    training_benchmarks.training_step_rate(small, dataset, steps=1, warmup=1)
    assert small.model_dir == "/tmp/x" and small.train_steps == config.train_steps
    with pytest.raises(ValueError, match="--batch_size=0"):
        dataclasses.replace(config, batch_size=0)


def test_label_noise_uses_a_datasets_per_level_flagfile_where_one_exists(tmp_path, monkeypatch):
    """Per-level flagfiles are found by name, for any dataset: a folder of flagfiles with
    one for Fashion-MNIST at 40 % is used; at 60 % (none) the Table 2 flagfile and --dropout."""
    import shutil

    from proto_tf.cli import label_noise

    flags_dir = tmp_path / "flags"
    shutil.copytree(experiment_flags.FLAGS_DIR, flags_dir)
    (flags_dir / "fashion_mnist_noise40_dropout.cfg").write_text(
        "--dataset=fashion_mnist\n--attention=none\n--label_noise=0.4\n--encoder_dropout=0.45\n--train_steps=77\n"
    )
    monkeypatch.setattr(experiment_flags, "FLAGS_DIR", str(flags_dir))
    label_noise.FLAGS(["label_noise", "--dataset=fashion_mnist", f"--runs_dir={tmp_path}"])
    try:
        own = label_noise._config("fashion_mnist", "0.4", "dropout", [])
        table_2 = label_noise._config("fashion_mnist", "0.6", "dropout", [])
    finally:
        label_noise.FLAGS.unparse_flags()
    assert (own.encoder_dropout, own.train_steps, own.label_noise) == (0.45, 77, 0.4)
    assert (table_2.encoder_dropout, table_2.label_noise) == (0.3, 0.6)  # --dropout's default.
    assert table_2.train_steps == experiment_flags.config_for(["--experiment=fashion_mnist_baseline"]).train_steps


def test_each_experiment_file_holds_only_what_its_row_changes():
    """Every dataset has its shared settings in flags/datasets/ (and a CPU-sized variant);
    an experiment's own file restates none of them."""
    import glob

    from proto_tf.data.registry import DATASETS

    root = experiment_flags.FLAGS_DIR
    for dataset in DATASETS:
        for folder in ("datasets", "small"):
            assert os.path.isfile(os.path.join(root, folder, dataset + ".cfg")), (folder, dataset)
    for path in glob.glob(os.path.join(root, "*.cfg")):
        lines = {line.strip() for line in open(path) if line.startswith("--")}
        dataset = next(line.split("=", 1)[1] for line in lines if line.startswith("--dataset="))
        shared = {line.strip() for line in open(os.path.join(root, "datasets", dataset + ".cfg"))}
        assert not (lines - {f"--dataset={dataset}"}) & shared, path


def test_a_dataset_whose_rows_differ_only_in_the_attention_needs_no_row_files(capsys):
    # Fruits: flags/datasets/fruits.cfg alone, whatever the attention; `--experiment=fruits_A`
    # still names its rows, an unknown name is one line listing the valid ones.
    for args in (["--dataset=fruits", "--attention=softmax"], ["--experiment=fruits_softmax"]):
        config = experiment_flags.config_for(args)
        assert (config.attention, config.learning_rate, config.train_steps, config.resnet_depth) == (
            "softmax",
            0.001,
            100000,
            32,
        )
        assert config.model_dir == os.path.join("runs", "fruits_softmax")
    assert experiment_flags.config_for(["--experiment=fruits_baseline"]).attention == "none"
    assert experiment_flags.config_for(["--dataset=fruits", "--attention=entmax15", "--small"]).resnet_depth == 8
    with pytest.raises(SystemExit):
        experiment_flags.config_for(["--experiment=fruits_cosine"])
    error = capsys.readouterr().err
    assert error.startswith("error: no flagfile") and "adult_softmax" in error and error.count("\n") == 1


def test_every_experiment_reads_the_shared_paper_settings_first(tmp_path, monkeypatch):
    """flags/base/paper.cfg (batch 128, clip 20, attention size 16) is read before each
    experiment's flagfile, which no longer restates it and may override it."""
    import glob
    import shutil

    base = open(os.path.join(experiment_flags.FLAGS_DIR, "base", "paper.cfg")).read().split()
    shared = [line for line in base if line.startswith("--")]
    assert shared == ["--batch_size=128", "--clip_value=20", "--attention_size=16"]
    for path in glob.glob(os.path.join(experiment_flags.FLAGS_DIR, "*.cfg")):
        assert not set(shared) & set(open(path).read().split()), path
    flags_dir = tmp_path / "flags"
    shutil.copytree(experiment_flags.FLAGS_DIR, flags_dir)
    (flags_dir / "base" / "paper.cfg").write_text("--clip_value=7\n--attention_size=8\n")
    (flags_dir / "adult_softmax.cfg").write_text(
        (flags_dir / "adult_softmax.cfg").read_text() + "--attention_size=12\n"
    )
    monkeypatch.setattr(experiment_flags, "FLAGS_DIR", str(flags_dir))
    config = experiment_flags.config_for(["--dataset=adult", "--attention=softmax"])
    assert (config.clip_value, config.attention_size) == (7, 12)  # The base's, then the experiment's.
