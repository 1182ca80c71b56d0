"""Evaluating a run of run/train.py: the measurements of Section 4.2 as JSON and PNGs."""

import os

from proto_tf import evaluation, json_files, metrics
from proto_tf.analysis import dknn, plots
from proto_tf.calibration import at_threshold
from proto_tf.data import DATASETS, candidates, dataset_info, load_dataset, shift
from proto_tf.errors import ConfigError
from proto_tf.training import batchnorm, run_store
from proto_tf.work_progress import WorkProgress


def evaluate_model_dir(
    model_dir: str,
    output_dir: str | None = None,
    checkpoint: str = "best",
    infer_database_size: int | None = None,
    data_dir: str | None = None,
    shift_data_dirs: dict | None = None,
    dknn_neighbours: int = 0,
    batchnorm_batches: int = 0,
    calibration: dict | None = None,
) -> dict:
    """Test accuracy of both paths, median prototype counts, the confidence curve, the
    confidence of right and wrong decisions, and for Fashion-MNIST the shares above
    each confidence level on shifted sets (rotated Fashion-MNIST, and MNIST / CIFAR-10
    when `shift_data_dirs` names their folders). With `dknn_neighbours` > 0, also the
    curves of deep k-NN confidence and credibility on the same encoder (Fig. 7), with
    the inference database as its training points and the validation split for
    calibration. With `batchnorm_batches` > 0, BatchNorm statistics are first
    re-estimated from that many training batches (proto_tf/training/batchnorm.py). With a
    `calibration` (the JSON an export with a target accuracy or coverage stores), also
    the test coverage and accuracy at its threshold beside what validation promised. Writes
    `evaluation.json` and PNGs to `output_dir` (default `<model_dir>/evaluation`);
    returns the report dict."""
    _check_shift_sets(run_store.read_config(model_dir).dataset, shift_data_dirs or {}, model_dir)
    config, dataset, model, checkpoint_path = run_store.load_run(model_dir, checkpoint, data_dir)
    warning = run_store.unfinished_warning(model_dir, checkpoint_path)
    if warning:
        print(warning)
    if batchnorm_batches:
        batchnorm.reestimate_from_training_split(model, dataset, config, batchnorm_batches)
    info = dataset_info(config.dataset)
    size = infer_database_size or config.infer_database_size
    evaluator = evaluation.Evaluator(model, dataset.preprocess, config.eval_batch_size, progress=WorkProgress)
    if model.uses_database:
        evaluator.set_database(candidates.inference_database(dataset.train, size, config.seed, info.class_shares))
    test_predictions = evaluator.predict(dataset.test)
    report = {
        "model_dir": model_dir,
        "checkpoint": checkpoint_path,
        "batchnorm_batches": batchnorm_batches,
        "dataset": config.dataset,
        "attention": config.attention,
        "infer_database_size": min(size, len(dataset.train)) if model.uses_database else None,
        "test": evaluation.confidence_report(test_predictions),
    }
    if calibration is not None:
        report["calibration"] = _calibrated_test(model, test_predictions, calibration)
    output_dir = output_dir or os.path.join(model_dir, "evaluation")
    json_files.make_output_folder(output_dir)
    if "coverage_curve" in report["test"]:
        curves = {f"ProtoAttend ({config.attention})": report["test"]["coverage_curve"]}
        if dknn_neighbours and dataset.validation is not None:
            report["dknn"] = _dknn_curves(evaluator, dataset, dknn_neighbours)
            curves.update(report["dknn"])
        report["coverage_png"] = plots.plot_coverage(curves, os.path.join(output_dir, "coverage.png"))
        if info.shift_sets:
            shifted = _shifted_sets(dataset, info, shift_data_dirs or {})
            report["shift_levels"] = list(evaluation.SHIFT_LEVELS)
            report["shift"] = evaluation.shift_report(evaluator, shifted)
            report["shift_png"] = plots.plot_shift(
                report["shift"], evaluation.SHIFT_LEVELS, os.path.join(output_dir, "shift.png")
            )
    report["evaluation_json"] = os.path.join(output_dir, "evaluation.json")
    json_files.write_json(report["evaluation_json"], report)
    return report


def _calibrated_test(model, predictions, calibration):
    """What a stored calibration promised (on validation) and what it gives on the test
    `predictions`."""
    if not model.uses_database:
        raise ConfigError("--calibrated_export: a baseline run has no confidence to abstain by.")
    correct = predictions["predictions"] == predictions["labels"]
    promised = {
        key: calibration[key]
        for key in ("target", "target_value", "delta", "threshold", "coverage", "accuracy", "bound", "examples")
    }
    return {"validation": promised, "test": at_threshold(predictions["confidence"], correct, calibration["threshold"])}


def summary_lines(report: dict) -> list[str]:
    """A few lines for the console: the test accuracies, the median prototype count,
    the accuracy when keeping the most confident shares, and where the full report and
    plots were written."""
    test = report["test"]
    lines = [f"{report['dataset']} ({report['attention']}), {report['checkpoint']}:"]
    accuracy = f"  test accuracy {100 * test['accuracy']:.2f} %"
    if "plain_accuracy" in test and report["attention"] != "none":
        accuracy += f" (plain path {100 * test['plain_accuracy']:.2f} %)"
    lines.append(accuracy + f" on {test['examples']} examples")
    if "median_prototypes_50" in test:
        lines.append(f"  median prototypes for 50 % of the weight: {test['median_prototypes_50']:g}")
    if "accuracy_when_keeping" in test:
        kept = ", ".join(
            f"{100 * float(share):g} % kept: {100 * value:.2f} %"
            for share, value in test["accuracy_when_keeping"].items()
            if share in ("0.9", "0.5")
        )
        lines.append(f"  accuracy of the most confident ({kept})")
    if "calibration" in report:
        promised, test = report["calibration"]["validation"], report["calibration"]["test"]
        lines.append(
            f"  calibrated threshold {promised['threshold']} (target {promised['target']} {promised['target_value']}): "
            f"test keeps {100 * test['coverage']:.1f} % at "
            + (
                f"{100 * test['accuracy']:.2f} % accuracy"
                if test["accuracy"] is not None
                else "no accuracy (none kept)"
            )
            + f" (validation: {100 * promised['coverage']:.1f} % at {100 * promised['accuracy']:.2f} %)"
        )
    lines.append(f"  full report: {report['evaluation_json']}")
    for key in ("coverage_png", "shift_png"):
        if key in report:
            lines.append(f"  plot: {report[key]}")
    return lines


def _dknn_curves(evaluator, dataset, neighbours):
    database = evaluator.database_split
    model = dknn.DeepKNN(
        evaluator.features(database),
        database.labels,
        evaluator.features(dataset.validation),
        dataset.validation.labels,
        dataset.num_classes,
        k=min(neighbours, len(database)),
    )
    predictions, confidence, credibility = model.predict(evaluator.features(dataset.test))
    correct = predictions == dataset.test.labels
    return {
        f"dkNN confidence (k={model.k})": metrics.coverage_curve(confidence, correct, evaluation.COVERAGE_THRESHOLDS),
        f"dkNN credibility (k={model.k})": metrics.coverage_curve(credibility, correct, evaluation.COVERAGE_THRESHOLDS),
    }


def _check_shift_sets(dataset_name, shift_data_dirs, model_dir):
    """A ConfigError unless every name of `shift_data_dirs` is a shifted set of the run's dataset."""
    if not shift_data_dirs:
        return
    valid = dataset_info(dataset_name).shift_sets
    if not valid:
        studied = ", ".join(name for name, info in DATASETS.items() if info.shift_sets)
        raise ConfigError(
            f"--shift_data_dirs: {model_dir} is a run of {dataset_name}, which has no shifted test sets "
            f"(Fig. 8's study is of {studied})."
        )
    unknown = sorted(set(shift_data_dirs) - set(valid))
    if unknown:
        raise ConfigError(
            f"--shift_data_dirs: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a shifted set "
            f"of {dataset_name}; valid: {', '.join(valid)}."
        )


def _shifted_sets(dataset, info, shift_data_dirs):
    """The test split, rotated by 90 degrees, and the named other datasets' test images
    in the model's input shape (through the frozen backbone, for a run on its features)."""
    source = dataset.features.raw if dataset.features is not None else dataset
    shifted = {f"rotated {info.name}": shift.rotated(source.test)}
    for name, folder in shift_data_dirs.items():
        other = load_dataset(name, folder, validation_fraction=0)
        shifted[name] = shift.as_inputs_like(other.test, info.input_shape)
    if dataset.features is not None:
        shifted = {
            name: dataset.features.featurized(split, description=f"features of {name}")
            for name, split in shifted.items()
        }
    # The test split as the run's own test evaluation reads it (a backbone's cached features).
    return {f"{info.name} (test)": dataset.test, **shifted}
