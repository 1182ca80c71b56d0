"""Evaluating a run of run/train.py: the measurements of Section 4.2 as JSON and PNGs."""

import json
import os

from proto_tf import evaluation, plots, training
from proto_tf.data import candidates, dataset_info, load_dataset, shift


def evaluate_model_dir(
    model_dir,
    output_dir=None,
    checkpoint="best",
    infer_database_size=None,
    data_dir=None,
    shift_data_dirs=None,
):
    """Test accuracy of both paths, median prototype counts, the confidence curve, the
    confidence of right and wrong decisions, and for Fashion-MNIST the shares above
    each confidence level on shifted sets (rotated Fashion-MNIST, and MNIST / CIFAR-10
    when `shift_data_dirs` names their folders). Writes `evaluation.json` and PNGs
    to `output_dir` (default `<model_dir>/evaluation`); returns the report dict."""
    config, dataset, model, checkpoint_path = training.load_run(model_dir, checkpoint, data_dir)
    info = dataset_info(config.dataset)
    size = infer_database_size or config.infer_database_size
    evaluator = evaluation.Evaluator(model, dataset.preprocess, config.eval_batch_size)
    if not model.is_baseline:
        evaluator.set_database(
            candidates.inference_database(dataset.train, size, config.seed, info.class_shares)
        )
    report = {
        "model_dir": model_dir,
        "checkpoint": checkpoint_path,
        "dataset": config.dataset,
        "attention": config.attention,
        "infer_database_size": None if model.is_baseline else min(size, len(dataset.train)),
        "test": evaluation.confidence_report(evaluator.predict(dataset.test)),
    }
    output_dir = output_dir or os.path.join(model_dir, "evaluation")
    os.makedirs(output_dir, exist_ok=True)
    if "coverage_curve" in report["test"]:
        report["coverage_png"] = plots.plot_coverage(
            {f"{config.dataset} {config.attention}": report["test"]["coverage_curve"]},
            os.path.join(output_dir, "coverage.png"),
        )
        if config.dataset == "fashion_mnist":
            shifted = _shifted_sets(dataset, shift_data_dirs or {})
            report["shift_levels"] = list(evaluation.SHIFT_LEVELS)
            report["shift"] = evaluation.shift_report(evaluator, shifted)
            report["shift_png"] = plots.plot_shift(
                report["shift"], evaluation.SHIFT_LEVELS, os.path.join(output_dir, "shift.png")
            )
    with open(os.path.join(output_dir, "evaluation.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    return report


def _shifted_sets(dataset, shift_data_dirs):
    sets = {"fashion_mnist (test)": dataset.test, "rotated fashion_mnist": shift.rotated(dataset.test)}
    for name, folder in shift_data_dirs.items():
        other = load_dataset(name, folder, validation_fraction=0)
        sets[name] = shift.as_fashion_mnist_inputs(other.test)
    return sets
