"""Training never ends silently wrong: bad flags, unhealthy steps, a model_dir holding
another run, a second trainer, damaged checkpoints, and resume after a kill."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from data_files import write_adult
from run_helpers import REPO, tiny_config

from proto_tf.errors import ConfigError, RunDirectoryError
from proto_tf.training import run_directory
from proto_tf.training.config import ExperimentConfig
from proto_tf.training.health import DivergenceError, NonFiniteError
from proto_tf.training.run_store import load_experiment_dataset
from proto_tf.training.trainer import Trainer


@pytest.mark.parametrize(
    "name, value, rule",
    [
        ("learning_rate", -1.0, "must be a finite number > 0"),
        ("learning_rate", float("nan"), "must be a finite number > 0"),
        ("clip_value", -1.0, "must be a finite number > 0"),
        ("decay_rate", -0.5, r"must be in \(0, 1\]"),
        ("decay_rate", 1.5, r"must be in \(0, 1\]"),
        ("decay_steps", 0, "must be a positive integer"),
        ("infer_database_size", 0, "must be a positive integer"),
        ("eval_batch_size", 0, "must be a positive integer"),
        ("label_noise", 1.0, r"must be in \[0, 1\)"),
        ("divergence_factor", 0.5, "must be 0 \\(off\\) or > 1"),
        ("matching_loss_weight", -0.5, "must be >= 0"),
        ("cosine_scale", -1.0, r"must be >= 0 \(0: the paper's dot product\)"),
        ("matching_warmup_steps", -1, r"must be in \[0, --train_steps=1000\): the attention must train for some steps"),
        (
            "matching_warmup_steps",
            1000,
            r"must be in \[0, --train_steps=1000\): the attention must train for some steps",
        ),
    ],
)
def test_each_bad_flag_is_refused_by_name(name, value, rule):
    with pytest.raises(ConfigError, match=rf"^--{name}={value!r} {rule}\.$"):
        ExperimentConfig(**{name: value})


@pytest.mark.parametrize(
    "name, value",
    [
        ("sparsity_weight", 0.5),
        ("matching_loss_weight", 0.5),
        ("matching_warmup_steps", 5),
        ("tied_head_init", True),
        ("joint_encoding", False),
    ],
)
def test_attention_only_flags_are_refused_for_the_baseline(name, value):
    # The baseline has no attention terms: a flag for them would be ignored silently.
    with pytest.raises(ConfigError, match=rf"^--{name}={value!r} has no effect with --attention=none"):
        ExperimentConfig(attention="none", **{name: value})


@pytest.mark.parametrize("other", [dict(candidate_gradients=False), dict(candidate_refresh=8)])
def test_two_call_encoding_is_refused_where_candidates_are_forward_only(other):
    with pytest.raises(ConfigError, match=r"^--joint_encoding=False has no effect with --nocandidate_gradients"):
        ExperimentConfig(attention="sparsemax", joint_encoding=False, **other)


def test_a_run_made_before_a_field_existed_resumes_at_its_default():
    # config.json of an older version lacks the newer fields; they ran at the default.
    stored = dataclasses.asdict(ExperimentConfig())
    del stored["matching_loss_weight"]
    assert run_directory.config_differences(stored, ExperimentConfig()) == []
    assert run_directory.config_differences(stored, ExperimentConfig(matching_loss_weight=0.5)) == [
        "--matching_loss_weight: 1.0 in the run, 0.5 now"
    ]


def test_infer_database_larger_than_the_training_split_is_refused(tmp_path):
    config = tiny_config(tmp_path, "big", infer_database_size=100000)
    with pytest.raises(
        ConfigError, match=r"--infer_database_size=100000 exceeds the 200 training examples of adult .* valid: 1..200\."
    ):
        Trainer(config, verbose=False)


def test_cli_flag_error_is_one_line_with_status_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run", "train.py"),
            "--dataset=adult",
            "--learning_rate=-1",
            f"--model_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: --learning_rate=-1.0 must be a finite number > 0."
    assert not os.path.exists(tmp_path / "run")


def test_nonfinite_gradient_names_step_variable_and_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "nan_grad", train_steps=30, checkpoint_every=2, batch_size=200)
    dataset = load_experiment_dataset(config)
    dataset.train.inputs[7, 0] = np.nan  # Every step's batch (the whole split) holds it.
    trainer = Trainer(config, dataset=dataset, verbose=False)
    with pytest.raises(NonFiniteError) as error:
        trainer.train()
    message = str(error.value)
    assert message.startswith("step 1: the gradient of ") and "is NaN or infinite" in message
    assert trainer.model.trainable_variables[0].path in message  # The first kernel.
    assert "No checkpoint had been saved yet" in message


def test_first_nonfinite_checks_a_sparse_gradient_by_its_rows():
    """An embedding's gradient is `tf.IndexedSlices`: its rows are checked (no dense
    copy), and a NaN in them is found at its position like a dense one's; a total that
    overflows is no false alarm."""
    import tensorflow as tf

    from proto_tf.training.health import first_nonfinite

    def sparse(values):
        return tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant([0, 3]), tf.constant([5, 2]))

    dense = tf.ones([3])
    assert int(first_nonfinite([dense, sparse([[1.0, 2.0], [3.0, 4.0]]), None])) == 3
    assert int(first_nonfinite([dense, sparse([[1.0, np.nan], [3.0, 4.0]]), dense])) == 1
    assert int(first_nonfinite([sparse([[np.inf, 0.0], [0.0, 0.0]]), dense])) == 0
    # Finite values whose total overflows are searched and found finite.
    large = tf.fill([4], 3e38)
    assert int(first_nonfinite([large, large, None])) == 3
    assert int(first_nonfinite([large, tf.constant([1.0, -np.inf])])) == 1


def test_divergence_without_nan_is_stopped_and_earlier_checkpoint_kept(tmp_path):
    config = tiny_config(tmp_path, "diverge", train_steps=200, checkpoint_every=5, learning_rate=1e6)
    trainer = Trainer(config, verbose=False)
    with pytest.raises(DivergenceError, match=r"training diverged: the median loss of the last") as error:
        trainer.train()
    saved = run_directory.checkpoint_paths(os.path.join(config.model_dir, "checkpoints"))
    assert trainer.step < 200
    if saved:  # A checkpoint taken before the loss rose is the one named as kept.
        assert f"The last good checkpoint, {saved[0]}" in str(error.value)
    assert not os.path.exists(os.path.join(config.model_dir, "summary.json"))


def test_the_end_of_the_warmup_starts_a_new_loss_level():
    """The attention terms join the loss after `--matching_warmup_steps`: a loss several
    times the plain term's level is the new objective, not a divergence."""
    from proto_tf.training.health import HealthMonitor

    healthy = {"first_nonfinite_gradient": 1, "first_nonfinite_weight": 1}

    def monitor_after_warmup(restart):
        monitor = HealthMonitor([keras.Variable(1.0, name="w")], factor=10.0)
        for step in range(1, 41):
            monitor.check(step, {**healthy, "step_loss": 0.1}, None)
        if restart:
            monitor.new_phase()
        for step in range(41, 81):
            monitor.check(step, {**healthy, "step_loss": 5.0}, None)

    monitor_after_warmup(restart=True)
    with pytest.raises(DivergenceError):  # Without the restart the new level reads as divergence.
        monitor_after_warmup(restart=False)


def test_divergence_check_spares_a_healthy_run(tmp_path):
    config = tiny_config(tmp_path, "healthy", train_steps=60)
    assert Trainer(config, verbose=False).train()["steps"] == 60


def _finished_run(tmp_path, name="run", **overrides):
    config = tiny_config(tmp_path, name, train_steps=4, checkpoint_every=2, **overrides)
    Trainer(config, verbose=False).train()
    return config


@pytest.fixture(scope="module")
def finished_template(tmp_path_factory):
    """One finished 4-step run (and its data), copied by the tests that damage it."""
    return _finished_run(tmp_path_factory.mktemp("template"))


def _copy_of(template, tmp_path):
    """The template run and its data copied into `tmp_path` (`run/`, `adult/`)."""
    import shutil

    shutil.copytree(template.data_dir, tmp_path / "adult")
    shutil.copytree(template.model_dir, tmp_path / "run")
    config = dataclasses.replace(template, data_dir=str(tmp_path / "adult"), model_dir=str(tmp_path / "run"))
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    stored.update(data_dir=config.data_dir, model_dir=config.model_dir)  # As a run made here.
    (tmp_path / "run" / "config.json").write_text(json.dumps(stored))
    return config


def test_run_dir_with_other_flags_is_refused_and_left_intact(tmp_path):
    config = _finished_run(tmp_path)
    files = {name: (tmp_path / "run" / name).read_bytes() for name in ("config.json", "summary.json")}
    other = dataclasses.replace(config, attention="softmax", train_database_size=8)
    with pytest.raises(RunDirectoryError) as error:
        Trainer(other, verbose=False).train()
    message = str(error.value)
    assert "--attention: 'sparsemax' in the run, 'softmax' now" in message
    assert "--train_database_size: 16 in the run, 8 now" in message
    assert "another --model_dir" in message
    for name, content in files.items():
        assert (tmp_path / "run" / name).read_bytes() == content
    with pytest.raises(ConfigError, match="--train_steps=2 is below the step 4"):
        Trainer(dataclasses.replace(config, train_steps=2), verbose=False).train()
    # Extending the run is a safe change.
    extended = Trainer(dataclasses.replace(config, train_steps=6), verbose=False).train()
    assert extended["steps"] == 6 and extended["resumed_from_step"] == 4


def test_second_trainer_on_one_dir_stops_naming_the_first(tmp_path):
    config = tiny_config(tmp_path, "locked")
    with run_directory.RunLock(config.model_dir):
        with pytest.raises(RunDirectoryError, match=rf"is in use by another trainer \(PID {os.getpid()} on host "):
            Trainer(config, verbose=False).train()
    assert not os.path.exists(os.path.join(config.model_dir, "config.json"))


def test_stale_lock_is_reported_and_taken_over(tmp_path, capsys):
    config = tiny_config(tmp_path, "stale")
    os.makedirs(config.model_dir)
    with open(os.path.join(config.model_dir, run_directory.LOCK_FILE), "w") as handle:
        handle.write("PID 999999 on host elsewhere")
    assert Trainer(config, verbose=False).train()["steps"] == 2
    assert "took over the stale lock of PID 999999 on host elsewhere" in capsys.readouterr().out


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    config = _finished_run(tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints"
    data_file = next(checkpoints.glob("ckpt-4.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:20])
    resumed = Trainer(dataclasses.replace(config, train_steps=6), verbose=False).train()
    output = capsys.readouterr().out
    assert f"skipped unreadable checkpoint {checkpoints / 'ckpt-4'}" in output
    assert "Resuming from step 2" in output and resumed["resumed_from_step"] == 2


def test_no_readable_checkpoint_stops_instead_of_restarting(tmp_path):
    config = _finished_run(tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints"
    for index_file in checkpoints.glob("ckpt-*.index"):
        index_file.write_bytes(b"not an sstable")
    with pytest.raises(RunDirectoryError, match="no checkpoint in .* can be read: .*ckpt-4 .*ckpt-2"):
        Trainer(dataclasses.replace(config, train_steps=6), verbose=False).train()


def test_garbage_state_file_never_restarts_from_step_zero(tmp_path):
    config = _finished_run(tmp_path)
    (tmp_path / "run" / "checkpoints" / "checkpoint").write_text("garbage {{{ \x00")
    resumed = Trainer(dataclasses.replace(config, train_steps=6), verbose=False).train()
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 6


def test_resume_with_dropout_is_bit_identical_and_time_accumulates(tmp_path):
    common = dict(attention="softmax", lstm_dropout=0.5, deterministic=True, checkpoint_every=2)
    straight = Trainer(tiny_config(tmp_path, "straight", train_steps=4, **common), verbose=False)
    straight.train()
    first = Trainer(tiny_config(tmp_path, "split", train_steps=2, **common), verbose=False).train()
    resumed = Trainer(tiny_config(tmp_path, "split", train_steps=4, **common), verbose=False)
    summary = resumed.train()
    assert summary["resumed_from_step"] == 2
    assert summary["train_seconds"] > first["train_seconds"] > 0
    for expected, got in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(got.numpy(), expected.numpy(), err_msg=expected.path)


@pytest.mark.parametrize(
    "name, value, rule",
    [
        ("seed", -1, r"must be an integer in \[0, 2\*\*32\)"),
        ("lstm_embedding_size", 0, "must be a positive integer"),
        ("resnet_filters", 0, "must be a positive integer"),
        ("vdcnn_first_filters", -3, "must be a positive integer"),
        ("dense_units", (16, 0), "must be positive integers"),
        ("model_dir", "", "must name a folder"),
    ],
)
def test_more_bad_flags_are_refused_by_name(name, value, rule):
    import re

    with pytest.raises(ConfigError, match=rf"^--{name}={re.escape(repr(value))} {rule}\.$"):
        ExperimentConfig(**{name: value})


def _train_cli(*args, timeout=180):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "run", "train.py"), *args], capture_output=True, text=True, timeout=timeout
    )


def test_an_experiment_with_a_contradicting_dataset_is_refused(tmp_path):
    # Adult's hyper-parameters would silently train another dataset.
    result = _train_cli("--experiment=adult_sparsemax", "--dataset=fashion_mnist", f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: --dataset=fashion_mnist contradicts --experiment=adult_sparsemax, whose flagfile "
        f"{os.path.join(REPO, 'flags', 'adult_sparsemax.cfg')} sets --dataset=adult; give --experiment "
        "alone, or --dataset and --attention without it."
    )
    assert not os.path.exists(tmp_path / "run")


def test_model_dir_naming_a_file_or_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match=r"--model_dir=.*file is a file, not a folder"):
        Trainer(tiny_config(tmp_path, "file"), verbose=False).train()
    inside_a_file = tiny_config(tmp_path, "file/run")
    with pytest.raises(RunDirectoryError, match=r"^cannot write to --model_dir=.*file/run \(Not a directory\)"):
        Trainer(inside_a_file, verbose=False).train()


def test_binary_garbage_in_the_state_file_resumes_from_the_newest_checkpoint(finished_template, tmp_path, capsys):
    config = _copy_of(finished_template, tmp_path)
    state = tmp_path / "run" / "checkpoints" / "checkpoint"
    state.write_bytes(b"\xff\xfe\x00\x80 garbage \xc3")  # Was a UnicodeDecodeError traceback.
    resumed = Trainer(dataclasses.replace(config, train_steps=6), verbose=False).train()
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 6
    assert f"warning: {state} was unreadable (UnicodeDecodeError" in capsys.readouterr().out
    assert run_directory.checkpoint_paths(str(state.parent))[0].endswith("ckpt-6")
    import tensorflow as tf

    assert tf.train.latest_checkpoint(str(state.parent)).endswith("ckpt-6")  # A valid state file again.


def test_resuming_on_other_data_is_refused_naming_the_split(finished_template, tmp_path):
    config = _copy_of(finished_template, tmp_path)
    other = write_adult(str(tmp_path / "other"), train_rows=200, test_rows=60, seed=5)
    with pytest.raises(RunDirectoryError) as error:
        Trainer(dataclasses.replace(config, train_steps=6, data_dir=other), verbose=False).train()
    message = str(error.value)
    assert f"was trained on other data than --data_dir={other} holds (train split: 200 examples, sha256 " in message
    assert f"the run read {config.data_dir}" in message
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data_dir"] == config.data_dir  # Not overwritten by the refused resume.
    # The same files in another folder are the same data: the resume goes on.
    import shutil

    moved = shutil.copytree(config.data_dir, tmp_path / "moved")
    resumed = Trainer(dataclasses.replace(config, train_steps=6, data_dir=str(moved)), verbose=False).train()
    assert resumed["resumed_from_step"] == 4


def test_a_truncated_summary_is_rewritten_and_a_truncated_best_record_is_named(finished_template, tmp_path, capsys):
    config = _copy_of(finished_template, tmp_path)
    summary = tmp_path / "run" / "summary.json"
    summary.write_text(summary.read_text()[:40])
    again = Trainer(config, verbose=False).train()  # Was a JSONDecodeError naming no file.
    assert again["steps"] == 4 and json.loads(summary.read_text())["steps"] == 4
    assert f"warning: {summary} is unreadable" in capsys.readouterr().out
    validated = tiny_config(
        tmp_path, "validated", train_steps=4, checkpoint_every=2, validation_fraction=0.2, eval_every=2
    )
    Trainer(validated, verbose=False).train()
    best = tmp_path / "validated" / "best.json"
    best.write_text('{"step": 4, "accu')
    with pytest.raises(
        RunDirectoryError, match=rf"^{best} is unreadable \(.*\); it holds the validation result of the best checkpoint"
    ):
        Trainer(dataclasses.replace(validated, train_steps=6), verbose=False).train()
    from proto_tf.analysis.comparison import read_summary

    summary.write_text("{")
    with pytest.raises(RunDirectoryError, match=rf"^{summary} is unreadable"):
        read_summary(str(tmp_path / "run"))


def test_a_full_disk_while_saving_stops_with_the_intact_checkpoints_named(finished_template, tmp_path, monkeypatch):
    import tensorflow as tf

    config = _copy_of(finished_template, tmp_path)
    trainer = Trainer(dataclasses.replace(config, train_steps=8), verbose=False)
    original = trainer.latest.save

    def full(checkpoint_number):
        if checkpoint_number > 4:
            raise tf.errors.ResourceExhaustedError(None, None, "ckpt-6_temp; No space left on device")
        return original(checkpoint_number=checkpoint_number)

    monkeypatch.setattr(trainer.latest, "save", full)
    with pytest.raises(RunDirectoryError) as error:
        trainer.train()
    assert str(error.value) == (
        f"could not save the checkpoint of step 6 in {tmp_path / 'run' / 'checkpoints'} (ckpt-6_temp; No "
        "space left on device). The earlier checkpoints are intact (ckpt-4, ckpt-2): free space (or fix "
        "the folder) and run the same command again to resume exactly from ckpt-4."
    )
    resumed = Trainer(dataclasses.replace(config, train_steps=8), verbose=False).train()
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 8


def test_a_json_record_that_cannot_be_written_leaves_the_old_one(tmp_path, monkeypatch):
    import errno

    from proto_tf import json_files

    path = tmp_path / "summary.json"
    json_files.write_json(str(path), {"steps": 4})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json_files.os, "fsync", full_disk)
    with pytest.raises(
        RunDirectoryError, match=rf"^could not write {path} \(No space left on device\); the earlier file is intact\.$"
    ):
        json_files.write_json(str(path), {"steps": 6})
    assert json.loads(path.read_text()) == {"steps": 4}
    assert os.listdir(tmp_path) == ["summary.json"]  # No temporary file left.


def test_a_link_planted_at_the_old_temporary_name_of_a_record_is_never_followed(tmp_path):
    from proto_tf import json_files

    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    path = tmp_path / "summary.json"
    os.symlink(victim, tmp_path / f"summary.json.tmp-{os.getpid()}")  # The name it had.
    json_files.write_json(str(path), {"steps": 4})
    assert victim.read_text() == "not yours\n"
    assert json.loads(path.read_text()) == {"steps": 4} and not os.path.islink(path)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~json_files.current_umask())  # As a plain open gives.


def test_temporary_files_and_export_folders_of_killed_processes_are_removed_by_the_next_write(tmp_path):
    # A killed run left its hidden temporary files and `.export-*` folders for good.
    import socket
    import subprocess

    from proto_tf import json_files
    from proto_tf.serving import export

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    left = tmp_path / f".summary.json.{host}~{dead.pid}~abc.tmp"
    left.write_text("half")
    live = tmp_path / f".summary.json.{host}~{os.getpid()}~def.tmp"  # Being written now.
    live.write_text("half")
    other_host = tmp_path / f".summary.json.elsewhere~{dead.pid}~ghi.tmp"
    other_host.write_text("half")
    json_files.write_json(str(tmp_path / "summary.json"), {"steps": 4})
    assert not left.exists() and live.exists() and other_host.exists()
    base = tmp_path / "exports" / "m"
    os.makedirs(base / f".export-{host}~{dead.pid}~xyz")
    path = export.publish_version(
        lambda p: open(os.path.join(p, "saved_model.pb"), "w").close(), str(tmp_path / "exports"), "m"
    )
    assert sorted(os.listdir(base)) == ["1"] and path.endswith("/1")
