"""Mislabel audit: training examples whose own label disagrees with the labels of the
prototypes they attend to: in-sample (the run's model, each example attending over the
rest of the training split) or out-of-fold (`out_of_fold`: models that never saw the
example's label), with the evidence, a figure of the first suspects and cleaning lists."""

import csv
import json
import os
from typing import Callable

import numpy as np

from proto_tf.analysis import out_of_fold
from proto_tf.analysis.agreement import leave_one_out_agreement
from proto_tf.analysis.explain import render_images
from proto_tf.analysis.plots import plot_agreement
from proto_tf.data import cleaning
from proto_tf.data.raw_examples import load_raw
from proto_tf.errors import ConfigError
from proto_tf.json_files import make_output_folder, write_atomically
from proto_tf.training import run_store

AUDIT_CSV, AUDIT_JSONL, AUDIT_PNG = "audit.csv", "audit.jsonl", "audit.png"
SUSPECTS_PNG, SUSPECTS_SHOWN = "suspects.png", 8


def rank_suspects(own_label_mass: np.ndarray, class_mass: np.ndarray) -> np.ndarray:
    """Positions from the most to the least suspect: least weight on the own label
    first; ties broken by the larger weight on the most-attended other class."""
    return np.lexsort((-class_mass.max(axis=1), own_label_mass))


def audit_run(
    model_dir: str,
    output_dir: str | None = None,
    checkpoint: str = "best",
    top_k: int = 5,
    folds: int = 0,
    ranking: str = "self_confidence",
    log: Callable[[str], None] = print,
    folds_dir: str | None = None,
) -> dict:
    """Audits the training labels of the run in `model_dir` (as it trained on them,
    label noise included) and writes `audit.csv`, `audit.jsonl` (every training example,
    most suspect first) and `audit.png` to `output_dir` (default `<model_dir>/audit`).

    `folds=0`: the cheap in-sample audit, the run's own model (trained on the labels it
    judges) with each example attending over the others; ranked by own-label mass,
    flagged where another class outweighs it. `folds=K >= 2`: the out-of-fold audit
    (`out_of_fold`): K models trained with the run's flags on the other folds, in
    `folds_dir` (default `<model_dir>/out_of_fold/<K>_folds`, shared by every audit of
    the run), each example judged by prototypes of other folds; flagged by confident
    learning, ranked by `ranking` ("self_confidence" or "margin").

    Returns the paths, the ranking (`order`: positions in the training split), the
    `flagged` count, the evidence (`class_mass`, ...) and its `records`."""
    if folds == 1 or folds < 0:
        raise ConfigError(f"--folds={folds} must be 0 (the in-sample audit) or at least 2.")
    if ranking not in out_of_fold.RANKINGS:
        raise ConfigError(f"--ranking={ranking!r} is not valid; valid: {', '.join(out_of_fold.RANKINGS)}.")
    config, dataset, model, checkpoint_path = run_store.load_run(model_dir, checkpoint)
    warning = run_store.unfinished_warning(model_dir, checkpoint_path)
    if warning:
        print(warning)
    if not model.uses_database:
        raise ConfigError(f"--model_dir={model_dir} is a baseline run: the audit needs a model with prototypes.")
    split = dataset.train
    output_dir = output_dir or os.path.join(model_dir, "audit")
    make_output_folder(output_dir)
    if folds:
        folds_dir = folds_dir or os.path.join(model_dir, "out_of_fold", f"{folds}_folds")
        found = out_of_fold.out_of_fold_evidence(config, dataset, folds, folds_dir, top_k, log)
        learned = out_of_fold.confident_learning(split.labels, found["class_mass"])
        order = out_of_fold.rank(split.labels, found["class_mass"], ranking)
        flagged = learned["flagged"]
        mode = f"{folds}-fold out-of-fold, confident learning, ranked by {ranking.replace('_', ' ')}"
    else:
        found = leave_one_out_agreement(
            model, dataset.preprocess, split, dataset.num_classes, top_k, config.eval_batch_size
        )
        order = rank_suspects(found["own_label_mass"], found["class_mass"])
        flagged = flagged_in_sample(found["own_label_mass"], found["class_mass"])
        mode = "in-sample (the run's own model, trained on these labels)"
    records = [
        _record(found, split, dataset.class_names, position, rank, bool(flagged[position]))
        for rank, position in enumerate(order, 1)
    ]
    paths = {
        "csv": write_atomically(os.path.join(output_dir, AUDIT_CSV), lambda handle: _write_csv(handle, records)),
        "jsonl": write_atomically(
            os.path.join(output_dir, AUDIT_JSONL),
            lambda handle: handle.writelines(json.dumps(record) + "\n" for record in records),
        ),
        "png": plot_agreement(found["own_label_mass"], os.path.join(output_dir, AUDIT_PNG)),
    }
    source = dataset.features.info if dataset.features is not None else dataset.info
    if source.kind.examples_are_images:
        raw = load_raw(config.dataset, config.data_dir, config.data_options(), config.seed)
        paths["suspects_png"] = render_suspects(records[:SUSPECTS_SHOWN], raw, os.path.join(output_dir, SUSPECTS_PNG))
    return {
        "checkpoint": checkpoint_path,
        "mode": mode,
        "folds": folds,
        "order": order,
        "flagged": int(np.sum(flagged)),
        "class_mass": found["class_mass"],
        "records": records,
        **paths,
    }


def render_suspects(records: list, raw: dict, path: str) -> str:
    """Image data: the first suspects (training examples), each beside its prototypes
    with their weights and labels: the evidence against its label."""

    def suspect_panel(record, raw):
        title = (
            f"train row {record['train_row']}: {record['label_name']}\n"
            f"prototypes: {record['suggested_name']} ({record['suggested_mass']:.2f})"
        )
        return raw["train"][record["train_row"]], title

    caption = "First suspects of the audit, each beside its prototypes (weight and label)."
    return render_images(records, raw, path, caption=caption, first_panel=suspect_panel)[0]


def write_cleaning(result: dict, output_dir: str, drop: bool, relabel: bool) -> dict:
    """The audit's flagged examples as `drop_rows.csv` (rows to leave out) and/or
    `relabel_rows.csv` (rows with the class their prototypes suggest), for
    `run/train.py --drop_rows` / `--relabel_rows`; written atomically."""
    flagged = [record for record in result["records"] if record["flagged"]]
    paths = {}
    if drop:
        path = os.path.join(output_dir, "drop_rows.csv")
        paths["drop_rows"] = write_atomically(
            path, lambda handle: cleaning.write_drop_rows(handle, [r["train_row"] for r in flagged])
        )
    if relabel:
        path = os.path.join(output_dir, "relabel_rows.csv")
        paths["relabel_rows"] = write_atomically(
            path,
            lambda handle: cleaning.write_relabel_rows(
                handle, [r["train_row"] for r in flagged], [r["suggested_name"] for r in flagged]
            ),
        )
    return paths


def flagged_in_sample(own_label_mass: np.ndarray, class_mass: np.ndarray) -> np.ndarray:
    """True for the examples whose prototypes put more weight on another class than on
    their own label (the in-sample audit's flag)."""
    return class_mass.max(axis=1) > own_label_mass


def flagged_count(own_label_mass: np.ndarray, class_mass: np.ndarray) -> int:
    """How many examples `flagged_in_sample` flags."""
    return int(flagged_in_sample(own_label_mass, class_mass).sum())


def _record(found, split, class_names, position, rank, flagged):
    label = int(split.labels[position])
    suggested = int(np.argmax(found["class_mass"][position]))
    rows = found["prototype_rows"][position]
    weights = found["prototype_weights"][position]
    record = {
        "rank": rank,
        "train_row": int(split.indices[position]),
        "label": label,
        "label_name": class_names[label],
        "own_label_mass": round(float(found["own_label_mass"][position]), 6),
        "suggested_label": suggested,
        "suggested_name": class_names[suggested],
        "suggested_mass": round(float(found["class_mass"][position, suggested]), 6),
        "flagged": flagged,
        "prototypes": [
            {
                "train_row": int(split.indices[row]),
                "weight": round(float(weight), 6),
                "label": int(split.labels[row]),
                "label_name": class_names[int(split.labels[row])],
            }
            for row, weight in zip(rows, weights)
            if weight > 0
        ],
    }
    if "fold" in found:
        record["fold"] = int(found["fold"][position])
    return record


def _write_csv(handle, records):
    columns = [
        "rank",
        "train_row",
        "label",
        "label_name",
        "own_label_mass",
        "suggested_label",
        "suggested_name",
        "suggested_mass",
        "flagged",
        "prototype_rows",
        "prototype_weights",
    ]
    writer = csv.writer(handle)
    writer.writerow(columns)
    for record in records:
        prototypes = record["prototypes"]
        writer.writerow(
            [record[name] for name in columns[:-2]]
            + [" ".join(str(p["train_row"]) for p in prototypes), " ".join(str(p["weight"]) for p in prototypes)]
        )
