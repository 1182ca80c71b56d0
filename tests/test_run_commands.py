"""Commands on a trained run (export, evaluate, explain) and Ctrl-C: a user's mistake or
a damaged run gives one line naming what is wrong, never a traceback or a silent answer."""

import json
import os
import subprocess
import sys

import pytest
from data_files import write_adult

from proto_tf.analysis import evaluate_run
from proto_tf.errors import ConfigError, RunDirectoryError
from proto_tf.serving import export
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    train_steps=4,
    batch_size=8,
    train_database_size=16,
    infer_database_size=30,
    value_size=8,
    lstm_embedding_size=8,
    checkpoint_every=2,
    eval_every=2,
    eval_batch_size=64,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run with a validation split (so a best checkpoint), and its data."""
    folder = tmp_path_factory.mktemp("runs")
    data_dir = write_adult(str(folder / "adult"))
    config = ExperimentConfig(
        dataset="adult",
        attention="sparsemax",
        data_dir=data_dir,
        model_dir=str(folder / "finished"),
        validation_fraction=0.2,
        **TINY,
    )
    Trainer(config, verbose=False).train()
    return folder, config


def _copy_run(runs, tmp_path, name):
    import shutil

    return str(shutil.copytree(runs[1].model_dir, tmp_path / name))


def _unfinished_copy(runs, tmp_path):
    """A copy of the finished run as if killed at step 4 of 8: the config asks for more
    steps, and there is no summary yet."""
    run = _copy_run(runs, tmp_path, "unfinished")
    config = json.loads(open(os.path.join(run, "config.json")).read())
    config["train_steps"] = 8
    with open(os.path.join(run, "config.json"), "w") as handle:
        json.dump(config, handle)
    os.remove(os.path.join(run, "summary.json"))
    return run


def _command(name, *args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "run", f"{name}.py"), *args], capture_output=True, text=True, timeout=300
    )


def test_the_best_checkpoint_of_an_unfinished_run_is_not_exported(runs, tmp_path):
    run = _unfinished_copy(runs, tmp_path)
    with pytest.raises(
        RunDirectoryError,
        match=r"^the run in .*unfinished \(newest checkpoint at step 4 of 8; no "
        r"final summary.json\): finish it .* or export its last checkpoint anyway with --checkpoint=last\.$",
    ):
        export.export_model_dir(run, str(tmp_path / "exports"))
    assert not os.path.exists(tmp_path / "exports")
    lines = []
    path = export.export_model_dir(run, str(tmp_path / "exports"), checkpoint="last", report=lines.append)
    assert lines[0] == (
        f"Exporting {run}/checkpoints/ckpt-4 (step 4, the last checkpoint; the run is unfinished: "
        "newest checkpoint at step 4 of 8; no final summary.json)."
    )
    assert len(lines) == 2 and lines[1].startswith("The export is ")  # Its size and memory.
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))


def test_evaluate_and_audit_say_that_they_use_an_unfinished_runs_checkpoint(runs, tmp_path, capsys):
    # Were silent: an unfinished run's best checkpoint was evaluated as if it were the run's.
    from proto_tf.analysis import audit

    run = _unfinished_copy(runs, tmp_path)
    evaluate_run.evaluate_model_dir(run, str(tmp_path / "evaluation"))
    audit.audit_run(run, str(tmp_path / "audit"))
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: the run in")]
    assert len(said) == 2 and all(
        line.startswith(f"warning: the run in {run} is unfinished (newest checkpoint at step 4 of 8") for line in said
    )
    assert said[0].endswith("), not a finished run's checkpoint.") and "/best/ckpt-" in said[0]


def test_a_damaged_best_checkpoint_falls_back_to_the_last_good_one(runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path, "damaged_best")
    best = [name for name in os.listdir(os.path.join(run, "best")) if ".data-" in name][0]
    data_file = os.path.join(run, "best", best)
    with open(data_file, "r+b") as handle:
        handle.truncate(20)  # Was "IndexError: Read less bytes than requested".
    lines = []
    export.export_model_dir(run, str(tmp_path / "exports"), report=lines.append)
    output = capsys.readouterr().out
    prefix = best.split(".data-")[0]
    assert f"warning: skipped unreadable checkpoint {run}/best/{prefix}" in output
    assert f"warning: using {run}/checkpoints/ckpt-4 instead." in output
    assert lines[0].startswith(f"Exporting {run}/checkpoints/ckpt-4 (step 4, the last checkpoint).")
    report = evaluate_run.evaluate_model_dir(run, str(tmp_path / "evaluation"))
    assert report["checkpoint"] == f"{run}/checkpoints/ckpt-4"


def test_a_run_without_checkpoints_is_one_line_for_export_and_evaluate(runs, tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    (run / "config.json").write_text(open(os.path.join(runs[1].model_dir, "config.json")).read())
    (run / "summary.json").write_text(json.dumps({"steps": 0}))
    message = rf"^{run} holds no checkpoint \(nothing under {run}/best or {run}/checkpoints\): train the run first"
    with pytest.raises(RunDirectoryError, match=message):
        export.export_model_dir(str(run), str(tmp_path / "exports"), checkpoint="last")
    with pytest.raises(RunDirectoryError, match=message):
        evaluate_run.evaluate_model_dir(str(run), checkpoint="last")


def test_explain_examples_and_dataset_are_checked_before_any_work(runs, tmp_path):
    from proto_tf.cli.explain import _example_positions

    assert _example_positions(["0", "3"]) == [0, 3]
    for bad in ("-1", "abc", "1.5"):  # -1 named row 16280 of the test set as "test_row: -1".
        with pytest.raises(
            ConfigError, match=rf"^--examples=0,{bad}: '{bad}' is not a test-set position; give integers >= 0"
        ):
            _example_positions(["0", bad])
    path = export.export_model_dir(runs[1].model_dir, str(tmp_path / "exports"))
    past_the_end = _command(
        "explain",
        f"--saved_model={path}",
        "--dataset=adult",
        f"--data_dir={runs[1].data_dir}",
        "--examples=0,60",
        f"--output_dir={tmp_path / 'x'}",
    )
    assert past_the_end.returncode == 2 and "Traceback" not in past_the_end.stderr
    assert past_the_end.stderr.strip() == (
        "error: --examples=0,60: 60 is past the end of the test set; valid positions: 0..59."
    )
    # Another dataset's name: refused from the export's signature, before any data is read.
    wrong = _command("explain", f"--saved_model={path}", "--dataset=fashion_mnist", "--data_dir=/nonexistent")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip() == (
        f"error: --dataset=fashion_mnist does not match the SavedModel {path}: it takes tabular inputs, "
        "fashion_mnist has image inputs of shape (28, 28, 1); give the dataset the model was trained on."
    )


def test_evaluate_shift_data_dirs_are_checked(runs):
    from proto_tf.cli.evaluate import _shift_dirs

    assert _shift_dirs(["mnist=~/mnist"]) == {"mnist": "~/mnist"}
    for bad in ("foo", "=~/svhn", "mnist="):
        with pytest.raises(ConfigError, match=rf"^--shift_data_dirs={bad}: '{bad}' is not name=folder \(e.g."):
            _shift_dirs([bad])
    with pytest.raises(
        ConfigError,
        match=r"^--shift_data_dirs: .* is a run of adult, which has no shifted test "
        r"sets \(Fig. 8's study is of fashion_mnist\)\.$",
    ):
        evaluate_run.evaluate_model_dir(runs[1].model_dir, shift_data_dirs={"mnist": "/x"})
    # A dataset's shifted sets are its own: names outside them are refused by name.
    evaluate_run._check_shift_sets("fashion_mnist", {"mnist": "/x", "cifar10": "/y"}, "RUN")
    with pytest.raises(
        ConfigError,
        match=r"^--shift_data_dirs: svhn is not a shifted set of fashion_mnist; "
        r"valid: mnist, cifar10\.$",
    ):
        evaluate_run._check_shift_sets("fashion_mnist", {"svhn": "/x", "mnist": "/y"}, "RUN")


def test_ctrl_c_is_one_line_saying_what_to_do():
    code = (
        "from absl import flags\n"
        "from proto_tf.cli.common import run_command\n"
        "def main(argv):\n"
        "    raise KeyboardInterrupt\n"
        "run_command(main, 'doc', flags.FlagValues(), interrupted='run the same command again to resume')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: interrupted (Ctrl-C); run the same command again to resume."


def test_load_run_answers_as_the_evaluation_of_the_run(runs, tmp_path):
    """`proto_tf.load_run`: one call to a model with its database, config and class names;
    its predictions on the test split give the evaluation's accuracy and confidences."""
    import numpy as np

    import proto_tf

    run = proto_tf.load_run(runs[1].model_dir)
    report = evaluate_run.evaluate_model_dir(runs[1].model_dir, str(tmp_path / "evaluation"))
    assert run.checkpoint == report["checkpoint"] and run.class_names == ("<=50K", ">50K")
    assert run.step == int(run.checkpoint.rsplit("-", 1)[1])
    assert len(run.model.database) == report["infer_database_size"] == 30
    out = run.predict(run.dataset.test.inputs)
    assert np.mean(out["predictions"] == run.dataset.test.labels) == report["test"]["accuracy"]
    assert np.mean(out["plain_predictions"] == run.dataset.test.labels) == report["test"]["plain_accuracy"]
    np.testing.assert_allclose(
        np.mean(out["confidence"][out["predictions"] == run.dataset.test.labels]),
        report["test"]["confidence_right"],
        rtol=1e-6,
    )
    assert list(out["class_names"][:3]) == [run.class_names[i] for i in out["predictions"][:3]]


def test_evaluate_prints_a_short_summary_and_the_report_path(runs, tmp_path):
    result = _command("evaluate", f"--model_dir={runs[1].model_dir}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    lines = result.stdout.strip().splitlines()
    assert len(lines) <= 8, result.stdout  # Was the whole report: hundreds of lines of JSON.
    assert f"test accuracy {100 * report['test']['accuracy']:.2f} %" in lines[1]
    assert lines[-2] == f"  full report: {tmp_path / 'out' / 'evaluation.json'}"
    assert "cpu_feature_guard" not in result.stderr


def test_console_scripts_start_quietly_and_a_bare_train_says_what_to_give(tmp_path):
    """The C++ start-up lines of TensorFlow are off before it is imported, however the
    command is started (`import proto_tf` no longer imports TensorFlow first); a bare
    train command names what to give instead of starting the longest paper run."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import sys; sys.argv = ['proto-tf-train']; from proto_tf.cli.train import run; run()"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: give --dataset=NAME --attention=ATTENTION (e.g. --dataset=adult --attention=sparsemax --small) "
        "or --experiment=NAME; datasets: mnist, fashion_mnist, cifar10, fruits, isic, dbpedia, adult, csv, "
        "image_folder, text_csv; attentions: softmax, sparsemax, entmax15, none."
    ]
    assert not os.path.exists(tmp_path / "runs")


def test_commands_use_tensorflows_pooling_allocator_unless_told_otherwise(tmp_path):
    """A command's host memory comes from TensorFlow's BFC allocator (the default one
    mapped a CPU step's buffers back in every step); a user's own setting is kept. The
    allocator is checked by its statistics, which only the BFC allocator keeps."""
    code = (
        "import os, proto_tf.cli.train, tensorflow as tf\n"
        "tf.ones([256, 256]) @ tf.ones([256, 256])\n"
        "try:\n"
        "    tf.config.experimental.get_memory_info('CPU:0'); pooled = True\n"
        "except ValueError:\n"
        "    pooled = False\n"
        "print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'], pooled)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    for setting, expected in ((None, "true True"), ("false", "false False")):
        run_env = env if setting is None else {**env, "TF_CPU_ALLOCATOR_USE_BFC": setting}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=run_env, cwd=str(tmp_path)
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == expected


def test_import_proto_tf_is_light_and_keeps_its_names():
    """`import proto_tf` does not import TensorFlow; its names resolve on first use, and
    `proto_tf.sparsemax` stays the function after its submodule of the same name is
    imported (a plain lazy package would give the module there)."""
    code = (
        "import sys, proto_tf\n"
        "assert 'tensorflow' not in sys.modules\n"
        "import proto_tf.attention\n"
        "from proto_tf import sparsemax, ProtoAttend, load_run, metrics\n"
        "assert callable(sparsemax) and sparsemax.__module__ == 'proto_tf.sparsemax', sparsemax\n"
        "assert ProtoAttend.__name__ == 'ProtoAttend' and callable(load_run) and hasattr(metrics, 'confidence')\n"
        "print(float(sparsemax([[2.0, 1.0, -3.0]])[0, 0]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "1.0"  # sparsemax([2, 1, -3]) = [1, 0, 0].


def test_a_calibrated_export_abstains_at_its_threshold_and_evaluate_and_predict_agree(runs, tmp_path):
    """run/export.py --target_coverage: the threshold is the one `calibration.calibrate`
    picks on the run's validation predictions; `abstain_calibrated` answers as `abstain`
    at that threshold; evaluate reports the test coverage and accuracy there, and predict
    --calibrated abstains on exactly the test rows below it."""
    import numpy as np
    import tensorflow as tf

    import proto_tf
    from proto_tf import calibration
    from proto_tf.data import raw_examples
    from proto_tf.serving import predict

    run_dir, data_dir = runs[1].model_dir, runs[1].data_dir
    lines = []
    path = export.export_model_dir(run_dir, str(tmp_path / "exports"), target_coverage=0.5, report=lines.append)
    stored = json.loads(open(os.path.join(path, export.CALIBRATION_FILE)).read())
    trained = proto_tf.load_run(run_dir)
    validation = trained.predict(trained.dataset.validation.inputs)
    expected = calibration.calibrate(
        validation["confidence"], validation["predictions"] == trained.dataset.validation.labels, target_coverage=0.5
    )
    assert stored["threshold"] == expected.threshold is not None and stored["table"] == list(expected.table)
    assert lines[1].startswith(
        f"Calibrated on {expected.examples} validation examples: confidence >= {expected.threshold} keeps"
    )
    # Serving: the calibrated signature is the abstain signature at the stored threshold.
    raw = raw_examples.load_raw("adult", data_dir)
    request = trained.dataset.info.kind.request(raw_examples.take(raw["test"], np.arange(20)), raw)
    loaded = tf.saved_model.load(path)
    calibrated = loaded.signatures["abstain_calibrated"](**request)
    manual = loaded.signatures["abstain"](**request, confidence_threshold=tf.fill([20], float(stored["threshold"])))
    for key in ("abstained", "class_ids", "confidence"):
        np.testing.assert_array_equal(calibrated[key].numpy(), manual[key].numpy(), err_msg=key)
    # Evaluate: test coverage and accuracy at the stored threshold, from the same predictions.
    report = evaluate_run.evaluate_model_dir(run_dir, str(tmp_path / "evaluation"), calibration=stored)
    test = trained.predict(trained.dataset.test.inputs)
    kept = test["confidence"] >= stored["threshold"]
    assert report["calibration"]["test"]["kept"] == kept.sum()
    assert report["calibration"]["test"]["accuracy"] == np.mean(
        test["predictions"][kept] == trained.dataset.test.labels[kept]
    )
    # Predict --calibrated on the whole test file abstains on the rows below the threshold.
    summary = predict.predict_file(
        path, os.path.join(data_dir, "adult.test"), str(tmp_path / "p.jsonl"), calibrated=True
    )
    assert summary["abstained_share"] == pytest.approx(1 - kept.mean(), abs=1e-12)
    with pytest.raises(ConfigError, match=r"^give one of --calibrated and --confidence_threshold"):
        predict.predict_file(
            path, os.path.join(data_dir, "adult.test"), str(tmp_path / "q.jsonl"), 0.5, calibrated=True
        )
    # A target the validation split cannot guarantee is one line, and nothing is exported.
    with pytest.raises(
        ConfigError,
        match=r"^--target_accuracy=0.999: no confidence threshold reaches it with 95 % "
        r"confidence on the \d+ validation examples .*lower the target",
    ):
        export.export_model_dir(run_dir, str(tmp_path / "refused"), target_accuracy=0.999)
    with pytest.raises(
        ConfigError, match=r"^--target_accuracy=1.5 must be in \(0, 1\), e.g. --target_accuracy=0.95\.$"
    ):
        export.export_model_dir(run_dir, str(tmp_path / "refused"), target_accuracy=1.5)
    assert not os.path.exists(tmp_path / "refused")


def test_an_export_of_a_run_whose_data_changed_is_refused(runs, tmp_path):
    # The export rebuilt the standardisation and the database from whatever data was
    # there at export time: a penguins run whose train.csv was replaced served 51.9 %
    # at confidence 0.98. The run's data.json is compared first.
    from proto_tf.training import run_store

    run_dir = _copy_run(runs, tmp_path, "run")
    data_dir = str(tmp_path / "other_adult")
    write_adult(data_dir, seed=7)  # Adult's format, other rows.
    with pytest.raises(RunDirectoryError, match=r"was trained on other data than --data_dir=.*other_adult holds"):
        export.export_model_dir(run_dir, str(tmp_path / "exports"), checkpoint="last", data_dir=data_dir)
    with pytest.raises(RunDirectoryError, match=r"train split: \d+ examples, sha256 \w+ in the run"):
        run_store.load_run(run_dir, "last", data_dir)
    assert not os.path.exists(tmp_path / "exports")
    done = _command("export", f"--model_dir={run_dir}", f"--data_dir={data_dir}", f"--export_dir={tmp_path / 'e'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "other data" in done.stderr
    # The run's own data, from another folder, is the same data: exported, and the
    # export records the run it was made from.
    import shutil

    moved = shutil.copytree(runs[1].data_dir, tmp_path / "moved")
    path = export.export_model_dir(run_dir, str(tmp_path / "exports"), checkpoint="last", data_dir=str(moved))
    made_from = json.loads(open(os.path.join(path, export.RUN_FILE)).read())
    assert made_from["data"] == json.loads(open(os.path.join(run_dir, "data.json")).read())
    assert made_from["checkpoint"].startswith("ckpt-") and made_from["step"] == 4


def test_evaluate_refuses_the_calibrated_export_of_another_run(runs, tmp_path):
    import dataclasses

    other = dataclasses.replace(runs[1], model_dir=str(tmp_path / "other"), seed=5)
    Trainer(other, verbose=False).train()
    path = export.export_model_dir(other.model_dir, str(tmp_path / "exports"), target_coverage=0.5)
    done = _command(
        "evaluate", f"--model_dir={runs[1].model_dir}", f"--calibrated_export={path}", f"--output_dir={tmp_path / 'ev'}"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (
        f"--calibrated_export={path} was exported from another run than --model_dir={runs[1].model_dir} "
        "(their flags and training data differ)"  # The seed draws another validation split.
    ) in done.stderr
    assert not os.path.exists(tmp_path / "ev")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ""])
def test_a_model_name_that_would_write_outside_the_export_dir_is_refused(runs, tmp_path, name):
    with pytest.raises(ConfigError, match=r"^--model_name=.* must be a plain folder name"):
        export.export_model_dir(runs[1].model_dir, str(tmp_path / "exports"), name, checkpoint="last")
    assert not os.path.exists(tmp_path / "exports") and not os.path.exists(tmp_path.parent / "x")


def test_an_output_dir_that_is_a_file_and_a_summary_without_config_are_one_line(runs, tmp_path):
    # Were tracebacks (FileExistsError, KeyError).
    (tmp_path / "a_file").write_text("x")
    for command in ("audit", "evaluate"):
        done = _command(command, f"--model_dir={runs[1].model_dir}", f"--output_dir={tmp_path / 'a_file'}")
        assert done.returncode == 2 and "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        assert (
            done.stderr.strip().splitlines()[-1]
            == f"error: --output_dir={tmp_path / 'a_file'} is a file (or lies under one); give a folder."
        )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text('{"steps": 4}')
    done = _command("report", f"--model_dirs={tmp_path / 'run'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "summary.json holds no config (the flags of the run)" in done.stderr.strip().splitlines()[-1]
