import dataclasses
import json
import os
import subprocess
import sys

import pytest
from run_helpers import REPO

from proto_tf.analysis import attention_benchmarks, comparison, plots, serving_benchmarks
from proto_tf.errors import ConfigError, RunDirectoryError
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.run_store import CONFIG_FILE


def _summary(**config):
    base = {
        "dataset": "adult",
        "attention": "sparsemax",
        "sparsity_weight": 0.0,
        "label_noise": 0.0,
        "encoder_dropout": 0.0,
        "train_database_size": 4096,
        "infer_database_size": 15360,
        "batch_size": 128,
    }
    base.update(config)
    test = {
        "accuracy": 0.8512,
        "median_prototypes_50": 18.0,
        "median_prototypes_90": 50.0,
        "median_prototypes_95": 61.0,
    }
    return {"config": base, "steps": 11500, "train_seconds": 1200.0, "test_last": test}


def test_experiment_keys_match_the_paper_tables():
    assert comparison.experiment_key({"dataset": "adult", "attention": "none"}) == "adult_baseline"
    assert (
        comparison.experiment_key({"dataset": "fashion_mnist", "attention": "sparsemax", "sparsity_weight": 3e-4})
        == "fashion_mnist_sparsemax_sparsity"
    )
    assert (
        comparison.experiment_key(
            {"dataset": "cifar10", "attention": "none", "label_noise": 0.6, "encoder_dropout": 0.3}
        )
        == "cifar10_noise60_dropout"
    )


def test_row_and_table_show_the_gap():
    row = comparison.comparison_row(_summary())
    assert row["paper_accuracy"] == 85.58 and row["accuracy"] == 85.12 and row["gap"] == -0.46
    assert row["paper_prototypes"] == (20, 57, 67) and row["prototypes"] == (18, 50, 61)
    table = comparison.markdown_table([row], hardware="test machine")
    assert (
        "| adult_sparsemax | 85.58 | 85.12 | -0.46 | 20/57/67 | 18/50/61 | 11500 | 128 | 4096/15360 | 20.0 |" in table
    )
    assert "test machine" in table


def test_rows_name_the_cheaper_training_modes():
    fast = comparison.comparison_row(_summary(candidate_gradients=False))
    memory = comparison.comparison_row(_summary(candidate_gradients=True, candidate_refresh=128))
    assert fast["experiment"] == "adult_sparsemax (forward-only candidates)"
    assert memory["experiment"] == "adult_sparsemax (memory, 128 fresh/step)"
    ablation = comparison.comparison_row(_summary(matching_loss_weight=0.25))
    assert ablation["experiment"] == "adult_sparsemax (ablation: matching terms x0.25)"
    assert fast["paper_accuracy"] == 85.58  # Still compared with the paper's row.


def test_missing_summary_names_the_run(tmp_path):
    with pytest.raises(RunDirectoryError, match="not a finished run"):
        comparison.read_summary(str(tmp_path))


def test_cli_on_a_directory_without_a_run_is_one_line(tmp_path):
    # A user's mistake: one line and exit status 2, no traceback.
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "run", "report.py"), f"--model_dirs={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: No {tmp_path}/summary.json")


@pytest.mark.parametrize(
    "given, message",
    [
        ("", "error: --model_dirs is empty: give the run folders to compare"),
        ("{run},{run}/", "error: --model_dirs names {run} more than once: each run would be counted twice"),
    ],
)
def test_cli_without_runs_or_with_a_run_twice_is_one_line(tmp_path, given, message):
    # Were an empty table with exit 0, and a seed spread that counted one run twice.
    run = str(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run", "report.py"),
            "--seed_spread",
            f"--model_dirs={given.format(run=run)}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message.format(run=run))


def _fmnist(attention, steps, accuracy, **config):
    settings = {
        "dataset": "fashion_mnist",
        "attention": attention,
        "sparsity_weight": 0.0,
        "model_dir": f"runs/{attention}_{steps}",
        **config,
    }
    return {"config": settings, "steps": steps, "test_last": {"accuracy": accuracy}}


def test_budget_gaps_pair_each_row_with_the_baseline_at_the_same_share(tmp_path):
    paper_steps = {"fashion_mnist_baseline": 332000, "fashion_mnist_sparsemax": 392000}.get
    summaries = [
        _fmnist("none", 3320, 0.8818),
        _fmnist("none", 1660, 0.8502),
        _fmnist("sparsemax", 3920, 0.8264),
        _fmnist("sparsemax", 1960, 0.7781),
        _fmnist("sparsemax", 3920, 0.8500, matching_loss_weight=0.25),
    ]
    gaps = comparison.budget_gaps(summaries, paper_steps)
    assert gaps["fashion_mnist_sparsemax"] == {
        "points": [(0.005, -7.21), (0.01, -5.54)],
        "paper_gap": -0.32,  # 94.42 - 94.74
    }
    assert gaps["fashion_mnist_sparsemax (ablation: matching terms x0.25)"] == {
        "points": [(0.01, -3.18)],
        "paper_gap": None,
    }
    path = plots.plot_budget_gap(gaps, str(tmp_path / "gap.png"))
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(
        ConfigError, match=r"--model_dirs: no baseline run of fashion_mnist at 0.005 .* runs/sparsemax_1960"
    ):
        comparison.budget_gaps(summaries[:1] + summaries[2:4], paper_steps)


def test_benchmarks_refuse_a_non_tabular_run_before_loading_its_data(tmp_path):
    # data_dir points nowhere: loading the data first would fail with another error.
    config = ExperimentConfig(dataset="fashion_mnist", data_dir=str(tmp_path / "absent"))
    (tmp_path / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config)))
    message = rf"^--model_dir={tmp_path} is a fashion_mnist run; this benchmark takes a tabular"
    with pytest.raises(ConfigError, match=message):
        attention_benchmarks.trained_attention_logits(str(tmp_path), 4096, 1)
    with pytest.raises(ConfigError, match=message):
        next(serving_benchmarks.inference_latencies(str(tmp_path), [4096], [1], str(tmp_path)))


def test_seed_spreads_group_runs_that_differ_only_in_their_seed():
    def run(seed, accuracy, **config):
        summary = _summary(seed=seed, train_steps=1000, model_dir=f"runs/s{seed}", **config)
        summary["test_last"] = dict(summary["test_last"], accuracy=accuracy)
        return summary

    summaries = [run(0, 0.85), run(1, 0.86), run(2, 0.84), run(0, 0.80, attention="softmax")]
    spreads = comparison.seed_spreads(summaries)
    assert [row["experiment"] for row in spreads] == ["adult_sparsemax", "adult_softmax"]
    first = spreads[0]
    assert first["seeds"] == [0, 1, 2] and first["mean"] == pytest.approx(85.0)
    assert first["std"] == pytest.approx(1.0)  # Sample sd of 85, 86, 84 (hand: sqrt(2 / 2)).
    assert first["gap"] == pytest.approx(85.0 - 85.58)
    assert spreads[1]["std"] is None  # One seed.
    table = comparison.seed_table(spreads)
    assert "| adult_sparsemax | 1000 | 0,1,2 | 85.00 ± 1.00 | 85.58 | -0.58 |" in table
    assert "| adult_softmax | 1000 | 0 | 80.00 (one seed) |" in table


def test_hub_trace_reads_the_training_logs_and_averages_each_stretch_of_steps(tmp_path):
    import tensorflow as tf

    from proto_tf.analysis import hub_trace
    from proto_tf.training.progress import TRAIN_TAGS

    writer = tf.summary.create_file_writer(str(tmp_path / "logs" / "train"))
    with writer.as_default():
        for step in range(1, 5):  # Steps 1-2 collapsed, 3-4 spread.
            shares = {"top3_weight_share": 0.9 if step <= 2 else 0.3, "distinct_top_share": 0.1 * step}
            for key, value in {**shares, "prototype_accuracy": 0.1, "plain_accuracy": 0.5}.items():
                tf.summary.scalar(TRAIN_TAGS[key], value, step=step)
    writer.close()
    table = hub_trace.hub_trace_table(str(tmp_path), points=2).splitlines()
    assert table[2] == "| 1–2 | 0.900 | 0.150 | 0.100 | 0.500 |"
    assert table[3] == "| 3–4 | 0.300 | 0.350 | 0.100 | 0.500 |"
    (tmp_path / "base" / "logs" / "train").mkdir(parents=True)
    assert "no attention in its logs" in hub_trace.hub_trace_table(str(tmp_path / "base"))


def _evaluation(folder, threshold, validation, test, target=("accuracy", 0.95)):
    os.makedirs(folder)
    promised = {"target": target[0], "target_value": target[1], "threshold": threshold, "bound": 0.96}
    promised.update(coverage=validation[0], accuracy=validation[1], delta=0.05, examples=1000)
    calibration = {"validation": promised, "test": {"coverage": test[0], "accuracy": test[1]}}
    with open(os.path.join(folder, "evaluation.json"), "w") as handle:
        json.dump({"calibration": calibration}, handle)
    return folder


def test_calibration_table_sets_each_promise_beside_the_test_and_averages_the_runs(tmp_path):
    folders = [
        _evaluation(str(tmp_path / "a"), 0.9, (0.5, 0.97), (0.48, 0.96)),
        _evaluation(str(tmp_path / "b"), 0.95, (0.4, 0.98), (0.42, 0.94)),  # Misses the target on test.
        _evaluation(str(tmp_path / "c"), 0.85, (0.6, 0.96), (0.62, 0.955)),
    ]
    table = comparison.calibration_table([comparison.read_calibration(f) for f in folders]).splitlines()
    assert table[2] == f"| {folders[0]} | accuracy ≥ 0.95 | 0.9 | 50.0 %, 97.00 % | 0.9600 | 48.0 %, 96.00 % | yes |"
    assert table[3].endswith("| 42.0 %, 94.00 % | no |")
    # Mean ± sample sd by hand: kept 48, 42, 62 -> 50.67 ± 10.26; accuracy 96, 94, 95.5 -> 95.17 ± 1.04.
    assert table[5] == "| mean ± sd of 3 | | | | | 50.67 ± 10.26 %, 95.17 ± 1.04 % | 2 of 3 |"
    coverage = _evaluation(str(tmp_path / "d"), 0.5, (0.81, 0.9), (0.79, 0.91), target=("coverage", 0.8))
    assert comparison.calibration_table([comparison.read_calibration(coverage)]).splitlines()[2].endswith("| no |")
    os.makedirs(tmp_path / "plain")
    with open(tmp_path / "plain" / "evaluation.json", "w") as handle:
        json.dump({"test": {}}, handle)
    with pytest.raises(RunDirectoryError, match="holds no calibration: run run/evaluate.py with --calibrated_export"):
        comparison.read_calibration(str(tmp_path / "plain"))
    with pytest.raises(RunDirectoryError, match="No .*evaluation.json: evaluate the run"):
        comparison.read_calibration(str(tmp_path / "none"))
