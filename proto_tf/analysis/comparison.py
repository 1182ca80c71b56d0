"""Side-by-side tables of the paper's numbers and a run's own."""

import json
import os
import platform

import numpy as np

from proto_tf.analysis.paper_numbers import REPORTED
from proto_tf.errors import ConfigError, RunDirectoryError
from proto_tf.json_files import read_json


def experiment_key(config):
    """The paper's name for the experiment a config describes (see paper.REPORTED)."""
    method = "baseline" if config["attention"] == "none" else config["attention"]
    if config["attention"] != "none" and config.get("sparsity_weight"):
        method = f"{config['attention']}_sparsity"
    if config.get("label_noise"):
        noise = f"noise{int(round(config['label_noise'] * 100))}"
        if config["attention"] == "none":
            method = "dropout" if config.get("encoder_dropout") else "baseline"
        return f"{config['dataset']}_{noise}_{method}"
    return f"{config['dataset']}_{method}"


def read_summary(model_dir):
    """The `summary.json` that `run/train.py` writes at the end of a run."""
    path = os.path.join(model_dir, "summary.json")
    if not os.path.isfile(path):
        raise RunDirectoryError(
            f"No {path}: {model_dir} is not a finished run of run/train.py (the summary is written when training ends)."
        )
    summary = read_json(path, f"the results of the run in {model_dir}; train it again to rewrite it")
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        raise RunDirectoryError(
            f"{path} holds no config (the flags of the run): it was not written by run/train.py, or is "
            "damaged; train the run again to rewrite it."
        )
    return summary


def _mode(config):
    """How the run departs from the paper's training step, if it does."""
    if config.get("matching_loss_weight", 1.0) != 1.0 and config["attention"] != "none":
        return f" (ablation: matching terms x{config['matching_loss_weight']:g})"
    if config.get("candidate_refresh"):
        return f" (memory, {config['candidate_refresh']} fresh/step)"
    if config.get("candidate_gradients") is False and config["attention"] != "none":
        return " (forward-only candidates)"
    return ""


def comparison_row(summary):
    """One row: the paper's accuracy and prototype counts next to the run's, with the
    scale the run had."""
    config = summary["config"]
    key = experiment_key(config)
    test = summary.get("test_best", summary["test_last"])
    paper = REPORTED.get(key, {})
    ours = 100 * test["accuracy"]
    row = {
        "experiment": key + _mode(config),
        "paper_accuracy": paper.get("accuracy"),
        "accuracy": round(ours, 2),
        "gap": None if "accuracy" not in paper else round(ours - paper["accuracy"], 2),
        "paper_prototypes": paper.get("prototypes"),
        "prototypes": None,
        "steps": summary["steps"],
        "batch": config["batch_size"],
        "database": f"{config['train_database_size']}/{config['infer_database_size']}",
        "train_minutes": round(summary["train_seconds"] / 60, 1),
    }
    if "median_prototypes_95" in test:
        row["prototypes"] = tuple(int(test[f"median_prototypes_{p}"]) for p in (50, 90, 95))
    return row


def markdown_table(rows, hardware=None):
    """Rows of `comparison_row` as a Markdown table."""
    hardware = hardware or f"{os.cpu_count()} CPU cores ({platform.machine()})"
    lines = [
        f"Hardware: {hardware}. Prototypes: median count for 50/90/95 % of the weight; database: D_train/D_infer.",
        "",
        "| experiment | paper acc. % | ours % | gap | paper prototypes | ours | steps | batch | database | train min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def show(value):
        if value is None:
            return "–"
        if isinstance(value, (tuple, list)):
            return "/".join(str(v) for v in value)
        return str(value)

    for row in rows:
        gap = "–" if row["gap"] is None else f"{row['gap']:+.2f}"
        lines.append(
            f"| {row['experiment']} | {show(row['paper_accuracy'])} | {row['accuracy']:.2f} | {gap} | "
            f"{show(row['paper_prototypes'])} | {show(row['prototypes'])} | {row['steps']} | {row['batch']} | "
            f"{row['database']} | {row['train_minutes']} |"
        )
    return "\n".join(lines)


def budget_gaps(summaries, paper_steps):
    """Accuracy gap to the baseline against the share of the paper's training steps.

    Args:
      summaries: `summary.json` contents of finished runs: baselines and prototype
        rows, each at some share of its paper row's steps.
      paper_steps: function from an experiment key (`experiment_key`) to the paper's
        step count for that row (its flagfile's `--train_steps`).

    Returns:
      `{experiment: {"points": [(share, gap in points), ...], "paper_gap": gap}}`,
      points sorted by share: each prototype run (last checkpoint) against the
      baseline of its dataset at the same share; `paper_gap` from Table 2 (None for
      rows the paper does not have, such as ablations).
    """

    def share(summary):
        return round(summary["steps"] / paper_steps(experiment_key(summary["config"])), 6)

    baselines = {
        (s["config"]["dataset"], share(s)): 100 * s["test_last"]["accuracy"]
        for s in summaries
        if s["config"]["attention"] == "none"
    }
    gaps = {}
    for summary in summaries:
        config = summary["config"]
        if config["attention"] == "none":
            continue
        baseline = baselines.get((config["dataset"], share(summary)))
        if baseline is None:
            raise ConfigError(
                f"--model_dirs: no baseline run of {config['dataset']} at {share(summary):g} of "
                f"the paper's steps for {config['model_dir']}; give one baseline per budget."
            )
        key, mode = experiment_key(config), _mode(config)
        entry = gaps.setdefault(
            key + mode, {"points": [], "paper_gap": None if mode else paper_gap(config["dataset"], key)}
        )
        gap = 100 * summary["test_last"]["accuracy"] - baseline
        entry["points"].append((share(summary), round(gap, 2)))
    for entry in gaps.values():
        entry["points"].sort()
    return gaps


def paper_gap(dataset, key):
    """The paper's accuracy gap (points) of a Table 2 row to its dataset's baseline;
    None when the paper has no such row."""
    if key not in REPORTED or f"{dataset}_baseline" not in REPORTED:
        return None
    return round(REPORTED[key]["accuracy"] - REPORTED[f"{dataset}_baseline"]["accuracy"], 2)


def seed_spreads(summaries) -> list[dict]:
    """Runs that differ only in their seed, grouped: per group the experiment, the seeds,
    the mean and sample standard deviation of the test accuracy (in %), the paper's
    number and the mean's gap to it. Groups keep the order of their first run."""
    groups = {}
    for summary in summaries:
        config = dict(summary["config"])
        seed = config.pop("seed")
        config.pop("model_dir", None)
        config.pop("data_dir", None)
        key = json.dumps(config, sort_keys=True)
        test = summary.get("test_best", summary["test_last"])
        groups.setdefault(key, (summary["config"], []))[1].append((seed, 100 * test["accuracy"]))
    spreads = []
    for config, runs in groups.values():
        accuracies = np.array([accuracy for _, accuracy in runs])
        experiment = experiment_key(config) + _mode(config)
        paper = REPORTED.get(experiment_key(config), {}).get("accuracy")
        mean = float(accuracies.mean())
        spreads.append(
            {
                "experiment": experiment,
                "seeds": [seed for seed, _ in runs],
                "mean": mean,
                "std": float(accuracies.std(ddof=1)) if len(runs) > 1 else None,
                "steps": config["train_steps"],
                "paper_accuracy": paper,
                "gap": None if paper is None else mean - paper,
            }
        )
    return spreads


def seed_table(spreads) -> str:
    """`seed_spreads` as a Markdown table."""
    lines = [
        "| experiment | steps | seeds | ours % (mean ± sd) | paper % | gap of the mean |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in spreads:
        spread = f"{row['mean']:.2f} ± {row['std']:.2f}" if row["std"] is not None else f"{row['mean']:.2f} (one seed)"
        paper = "–" if row["paper_accuracy"] is None else f"{row['paper_accuracy']:.2f}"
        gap = "–" if row["gap"] is None else f"{row['gap']:+.2f}"
        seeds = ",".join(str(s) for s in row["seeds"])
        lines.append(f"| {row['experiment']} | {row['steps']} | {seeds} | {spread} | {paper} | {gap} |")
    return "\n".join(lines)


def read_calibration(evaluation_dir: str) -> dict:
    """The calibrated abstention of one evaluation (`run/evaluate.py --calibrated_export`):
    what the export promised on validation and what it gave on test."""
    path = os.path.join(evaluation_dir, "evaluation.json")
    if not os.path.isfile(path):
        raise RunDirectoryError(f"No {path}: evaluate the run with run/evaluate.py --calibrated_export=EXPORT first.")
    report = read_json(path, "the evaluation; run run/evaluate.py again to rewrite it")
    if "calibration" not in report:
        raise RunDirectoryError(
            f"{path} holds no calibration: run run/evaluate.py with --calibrated_export=EXPORT "
            "(an export made with --target_accuracy or --target_coverage)."
        )
    return {"evaluation_dir": evaluation_dir, **report["calibration"]}


def calibration_table(calibrations: list[dict]) -> str:
    """One row per evaluated run (threshold, validation and test share kept and
    accuracy, the guaranteed bound, whether test meets the target), then the mean ±
    sample sd over the runs of the test's share kept and accuracy, as Markdown."""
    lines = [
        "| run | target | threshold | validation: kept, accuracy | bound | test: kept, accuracy | test meets the target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    kept, accurate, met = [], [], 0
    for calibration in calibrations:
        promised, test = calibration["validation"], calibration["test"]
        achieved = test["accuracy"] if promised["target"] == "accuracy" else test["coverage"]
        meets = achieved is not None and achieved >= promised["target_value"]
        met += meets
        kept.append(100 * test["coverage"])
        accurate.append(100 * test["accuracy"] if test["accuracy"] is not None else np.nan)
        lines.append(
            f"| {calibration['evaluation_dir']} | {promised['target']} ≥ {promised['target_value']} | "
            f"{promised['threshold']} | {100 * promised['coverage']:.1f} %, {100 * promised['accuracy']:.2f} % | "
            f"{promised['bound']:.4f} | {kept[-1]:.1f} %, {accurate[-1]:.2f} % | {'yes' if meets else 'no'} |"
        )
    if len(calibrations) > 1:
        spread = lambda values: f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"  # noqa: E731
        lines.append(
            f"| mean ± sd of {len(calibrations)} | | | | | {spread(kept)} %, {spread(accurate)} % | "
            f"{met} of {len(calibrations)} |"
        )
    return "\n".join(lines)
