"""Transfer from an encoder pretrained with proto_tf: Fashion-MNIST classes 0-4 train a
baseline encoder (saved as a `.keras` backbone); classes 5-9 are then learnt from 10, 50
or all labelled examples per class by three methods at the same training budget:

- `prototype_heads`: ProtoAttend's heads on the frozen backbone's cached features;
- `linear_probe`: the baseline (`--attention=none`) on the same features;
- `scratch`: ProtoAttend with the Appendix A ResNet, trained from nothing;
- `*_pooled`: the first two on the encoder's pooled last stage (`save_encoder --layer=pooled`).

Every run is the user's command (`run/train.py --dataset=image_folder --small`) on image
folders written from the real Fashion-MNIST files; a run that finished is kept, so a
killed experiment continues where it stopped. `transfer.json` holds each run's test
accuracy (the last checkpoint: the same budget for every method, no selection).
"""

import json
import os
import subprocess
import sys
from typing import Callable

import numpy as np
import tensorflow as tf

from proto_tf import json_files
from proto_tf.data import images

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
METHODS = {
    "prototype_heads": ["--attention=sparsemax", "--backbone={output}"],
    "linear_probe": ["--attention=none", "--backbone={output}"],
    "scratch": ["--attention=sparsemax"],
    # The same on the pooled last stage (before the encoder's dense head, trained for 0-4).
    "prototype_heads_pooled": ["--attention=sparsemax", "--backbone={pooled}"],
    "linear_probe_pooled": ["--attention=none", "--backbone={pooled}"],
}
RESULTS_FILE = "transfer.json"


def write_folder(folder: str, inputs: np.ndarray, labels: np.ndarray, classes: tuple) -> None:
    """`folder/<class>/<row>.png` for the examples of `classes` (class names as digits)."""
    if os.path.isdir(folder):
        return  # Written by an earlier, finished call (written under a temporary name).
    temporary = f"{folder}.{json_files.owner_tag()}.tmp"
    for label in classes:
        os.makedirs(os.path.join(temporary, str(label)), exist_ok=True)
    for row in np.flatnonzero(np.isin(labels, classes)):
        png = tf.io.encode_png(inputs[row]).numpy()
        with open(os.path.join(temporary, str(labels[row]), f"{row}.png"), "wb") as handle:
            handle.write(png)
    os.replace(temporary, folder)


def budget_rows(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """`per_class` rows of each target class drawn with `seed` (all rows for 0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in TARGET_CLASSES:
        of_class = np.flatnonzero(labels == label)
        rows.append(of_class if per_class == 0 else rng.choice(of_class, per_class, replace=False))
    return np.sort(np.concatenate(rows))


def prepare(fashion_dir: str, work_dir: str, budgets: tuple, seeds: tuple) -> dict:
    """Writes the source set and each budget's target training folder (a shared test
    folder linked into each); returns `{(budget, seed): data_dir}` and the source dir."""
    train, test = images.load_mnist_like("fashion_mnist", fashion_dir, download=False)
    source = os.path.join(work_dir, "data", "source")
    write_folder(os.path.join(source, "train"), train.inputs, train.labels, SOURCE_CLASSES)
    write_folder(os.path.join(source, "test"), test.inputs, test.labels, SOURCE_CLASSES)
    target_test = os.path.join(work_dir, "data", "target_test")
    write_folder(target_test, test.inputs, test.labels, TARGET_CLASSES)
    folders = {}
    for budget in budgets:
        for seed in seeds:
            data_dir = os.path.join(work_dir, "data", f"target_{budget or 'all'}_seed{seed}")
            rows = budget_rows(train.labels, budget, seed)
            kept = np.zeros(len(train.labels), bool)
            kept[rows] = True
            write_folder(
                os.path.join(data_dir, "train"), train.inputs, np.where(kept, train.labels, -1), TARGET_CLASSES
            )
            if not os.path.exists(os.path.join(data_dir, "test")):
                os.symlink(os.path.abspath(target_test), os.path.join(data_dir, "test"))
            folders[(budget, seed)] = data_dir
    return {"source": source, "targets": folders}


def train_command(data_dir: str, model_dir: str, flags: list) -> list:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [
        sys.executable,
        os.path.join(repo, "run", "train.py"),
        "--dataset=image_folder",
        "--small",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        *flags,
    ]


def run_once(command: list, model_dir: str, log) -> dict:
    """The run's summary, training it first unless it finished before."""
    summary = os.path.join(model_dir, "summary.json")
    if not os.path.isfile(summary):
        log(" ".join(command))
        with open(f"{model_dir}.log", "w") as output:
            subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=True)
    with open(summary) as handle:
        return json.load(handle)


def run_experiment(
    fashion_dir: str, work_dir: str, budgets=(10, 50, 0), seeds=(0, 1, 2), log: Callable[[str], None] = print
) -> dict:
    """Pretrains, saves the encoder, trains every (budget, seed, method) run and writes
    `transfer.json` (rewritten after every run)."""
    os.makedirs(work_dir, exist_ok=True)
    data = prepare(fashion_dir, work_dir, tuple(budgets), tuple(seeds))
    runs = os.path.join(work_dir, "runs")
    os.makedirs(runs, exist_ok=True)
    pretrained = os.path.join(runs, "pretrain_classes_0_4")
    run_once(train_command(data["source"], pretrained, ["--attention=none"]), pretrained, log)
    from proto_tf.training.encoder_file import save_encoder

    encoders = {}
    for layer, name in (("output", "encoder_classes_0_4.keras"), ("pooled", "pooled_classes_0_4.keras")):
        encoders[layer] = os.path.join(work_dir, name)
        if not os.path.isfile(encoders[layer]):
            save_encoder(pretrained, encoders[layer], layer=layer)
    rows = []
    for (budget, seed), data_dir in sorted(data["targets"].items()):
        for method, flags in METHODS.items():
            model_dir = os.path.join(runs, f"{method}_{budget or 'all'}_seed{seed}")
            flags = [flag.format(**encoders) for flag in flags] + [f"--seed={seed}"]
            summary = run_once(train_command(data_dir, model_dir, flags), model_dir, log)
            rows.append(
                {
                    "method": method,
                    "per_class": budget or "all",
                    "seed": seed,
                    "train_examples": _train_examples(data_dir),
                    "steps": summary["steps"],
                    "train_seconds": summary["train_seconds"],
                    "test_accuracy": summary["test_last"]["accuracy"],
                }
            )
            json_files.write_json(os.path.join(work_dir, RESULTS_FILE), rows)
    return {"rows": rows, "table": table(rows)}


def _train_examples(data_dir):
    train = os.path.join(data_dir, "train")
    return sum(len(os.listdir(os.path.join(train, name))) for name in os.listdir(train))


def table(rows: list) -> str:
    """Markdown: mean ± sd (over seeds) of test accuracy per budget and method."""
    budgets = list(dict.fromkeys(row["per_class"] for row in rows))
    lines = ["| labelled per class | " + " | ".join(METHODS) + " |", "| --- |" + " --- |" * len(METHODS)]
    for budget in budgets:
        cells = []
        for method in METHODS:
            values = [100 * r["test_accuracy"] for r in rows if r["per_class"] == budget and r["method"] == method]
            cells.append(f"{np.mean(values):.2f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2f}")
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
