import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from data_files import write_adult, write_mnist
from run_helpers import REPO, logged_tags, tiny_config

from proto_tf.training import run_directory
from proto_tf.training.trainer import NonFiniteLossError, Trainer


@pytest.mark.parametrize(
    "attention, overrides",
    [
        ("softmax", {}),
        ("sparsemax", {}),
    ],
)
def test_two_replicas_match_one_device(tmp_path, attention, overrides):
    weights = {}
    for name, strategy in (
        ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
        ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
    ):
        settings = {"train_steps": 1, "sparsity_weight": 0.1, **overrides}
        config = tiny_config(tmp_path, name, attention=attention, **settings)
        # Plain SGD: its update is proportional to the gradient, so a wrong loss scale
        # or a missing gradient through the all-gather shows (Adam would hide a scale).
        trainer = Trainer(config, strategy=strategy, verbose=False, make_optimizer=lambda: keras.optimizers.SGD(0.5))
        assert trainer.strategy.num_replicas_in_sync == (2 if name == "two" else 1)
        initial = [v.numpy().copy() for v in trainer.model.trainable_variables]
        trainer.train()
        weights[name] = (initial, [v.numpy() for v in trainer.model.trainable_variables])
    for before_one, before_two in zip(weights["one"][0], weights["two"][0]):
        np.testing.assert_array_equal(before_one, before_two)
    names = [v.path for v in trainer.model.trainable_variables]
    for name, before, one, two in zip(names, weights["one"][0], weights["one"][1], weights["two"][1]):
        assert not np.allclose(before, one), f"{name} was not updated"
        np.testing.assert_allclose(two - before, one - before, rtol=1e-4, atol=1e-6, err_msg=name)


_MEMORY_RUN = """
import sys
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {tests!r})
from test_training import _memory_run
_memory_run({tmp!r}, sys.argv[1])
"""


def _memory_run(tmp_path, strategy_name):
    """Trains the memory configuration with one strategy and saves its weights."""
    import pathlib

    strategy = (
        tf.distribute.OneDeviceStrategy("/cpu:0")
        if strategy_name == "one"
        else tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    )
    # Three steps of 8 fresh candidates wrap around the memory of 16.
    config = tiny_config(pathlib.Path(tmp_path), strategy_name, train_steps=3, sparsity_weight=0.1, candidate_refresh=8)
    trainer = Trainer(config, strategy=strategy, verbose=False, make_optimizer=lambda: keras.optimizers.SGD(0.5))
    initial = [v.numpy().copy() for v in trainer.model.trainable_variables]
    trainer.train()
    np.savez(
        pathlib.Path(tmp_path) / f"{strategy_name}.npz",
        *initial,
        *[v.numpy() for v in trainer.model.trainable_variables],
        memory=trainer.model.memory.features.numpy(),
        writes=trainer.model.memory.writes.numpy(),
    )


def test_two_replicas_match_one_device_with_a_candidate_memory(tmp_path):
    # Each strategy in its own process: MirroredStrategy objects in one process share
    # collective instance keys, and gathers of other shapes than an earlier test's
    # then fail (a TensorFlow limitation, not the model's).
    script = _MEMORY_RUN.format(tests=os.path.dirname(__file__), tmp=str(tmp_path))
    results = {}
    for name in ("one", "two"):
        run = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        results[name] = np.load(tmp_path / f"{name}.npz")
    one, two = results["one"], results["two"]
    assert int(one["writes"]) == int(two["writes"]) == 24
    assert np.abs(one["memory"]).sum() > 0
    np.testing.assert_allclose(two["memory"], one["memory"], rtol=1e-4, atol=1e-6)
    count = (len(one.files) - 2) // 2
    for i in range(count):
        before, after_one, after_two = one[f"arr_{i}"], one[f"arr_{i + count}"], two[f"arr_{i + count}"]
        np.testing.assert_array_equal(before, two[f"arr_{i}"])
        np.testing.assert_allclose(after_two - before, after_one - before, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(one[f"arr_{i}"], one[f"arr_{i + count}"]) for i in range(count))


def test_xla_step_trains_sparsemax_like_the_default_step(tmp_path):
    weights = {}
    for jit_compile in (False, True):
        name = f"jit_{jit_compile}"
        config = tiny_config(tmp_path, name, train_steps=2, jit_compile=jit_compile)
        trainer = Trainer(config, verbose=False, make_optimizer=lambda: keras.optimizers.SGD(0.5))
        initial = [v.numpy().copy() for v in trainer.model.trainable_variables]
        trainer.train()
        weights[name] = [v.numpy() for v in trainer.model.trainable_variables]
    for before, default, xla in zip(initial, weights["jit_False"], weights["jit_True"]):
        assert not np.allclose(before, default)
        np.testing.assert_allclose(xla, default, rtol=1e-4, atol=1e-5)


def test_training_step_is_traced_once(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "trace", train_steps=4), verbose=False)
    iterator = iter(trainer.distributed_steps(0))
    step_function = trainer.make_step_function()
    for _ in range(4):
        step_function(iterator)
    assert step_function.experimental_get_tracing_count() == 1


def test_same_seed_gives_same_weights(tmp_path):
    results = []
    for name in ("a", "b"):
        config = tiny_config(tmp_path, name, lstm_dropout=0.5, train_steps=3, deterministic=True)
        trainer = Trainer(config, verbose=False)
        trainer.train()
        results.append([v.numpy() for v in trainer.model.weights])
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)


def test_summary_and_best_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "run", train_steps=4, validation_fraction=0.25, eval_every=2)
    summary = Trainer(config, verbose=False).train()
    with open(os.path.join(config.model_dir, "summary.json")) as handle:
        on_disk = json.load(handle)
    assert on_disk["steps"] == 4 and summary["steps"] == 4
    assert 0.0 <= on_disk["test_best"]["accuracy"] <= 1.0
    assert on_disk["best_validation"]["step"] in (2, 4)
    assert set(os.listdir(os.path.join(config.model_dir, "logs"))) == {"train", "validation"}
    # Running the finished experiment again trains nothing and keeps its record as it was.
    before = (tmp_path / "run" / "summary.json").read_bytes()
    again = Trainer(config, verbose=False).train()
    assert again == on_disk and on_disk["train_seconds"] > 0
    assert (tmp_path / "run" / "summary.json").read_bytes() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "nan", train_steps=50, checkpoint_every=1, learning_rate=1e30, clip_value=1e30)
    trainer = Trainer(config, verbose=False)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint") as error:
        trainer.train()
    bad_step = trainer.step
    saved = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    assert saved is not None and int(saved.rsplit("-", 1)[1]) == bad_step - 1
    assert saved in str(error.value)


def _train_command(tmp_path, *extra, name="run"):
    data_dir = write_adult(str(tmp_path / "adult"), train_rows=400)
    return [
        sys.executable,
        os.path.join(REPO, "run", "train.py"),
        "--dataset=adult",
        "--attention=softmax",
        "--small",
        f"--data_dir={data_dir}",
        f"--model_dir={tmp_path / name}",
        "--train_database_size=64",
        "--infer_database_size=64",
        "--validation_fraction=0",
        "--deterministic",
        *extra,
    ]


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    command = _train_command(tmp_path, "--train_steps=100000", "--checkpoint_every=20")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not tf.train.latest_checkpoint(str(checkpoints)):
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # The newest checkpoint from its files, as the trainer resumes: killed between writing
    # a checkpoint and updating the state file, the state file names the one before.
    saved_step = int(run_directory.checkpoint_paths(str(checkpoints))[0].rsplit("-", 1)[1])
    assert saved_step >= 20
    resumed = subprocess.run(
        _train_command(tmp_path, f"--train_steps={saved_step + 5}", "--checkpoint_every=20"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming from step {saved_step}" in resumed.stdout
    with open(tmp_path / "run" / "summary.json") as handle:
        summary = json.load(handle)
    assert summary["resumed_from_step"] == saved_step and summary["steps"] == saved_step + 5
    # Killed and resumed, with the LSTM's dropout (0.5) on: the weights of a run that was
    # never interrupted, bit for bit.
    straight = subprocess.run(
        _train_command(tmp_path, f"--train_steps={saved_step + 5}", name="straight"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr[-2000:]
    resumed_weights = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(checkpoints)))
    straight_weights = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "straight" / "checkpoints")))
    names = [n for n, _ in tf.train.list_variables(str(checkpoints)) if n.startswith(("model/", "random/"))]
    assert any(n.startswith("random/") for n in names)  # The dropout seed states.
    for name in names:
        np.testing.assert_array_equal(resumed_weights.get_tensor(name), straight_weights.get_tensor(name), err_msg=name)


def test_cli_errors_list_valid_values(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "run", "train.py"), "--dataset=imagenet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "<mnist|fashion_mnist|cifar10|fruits|isic|dbpedia|adult|csv|image_folder|text_csv>" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "run", "train.py"), "--dataset=adult", "--no_such_flag=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "no_such_flag" in result.stderr


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_loopback_train_together(tmp_path):
    data_dir = write_adult(str(tmp_path / "adult"), train_rows=300)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        )
        command = [
            sys.executable,
            os.path.join(REPO, "run", "train.py"),
            "--dataset=adult",
            "--attention=sparsemax",
            "--small",
            "--strategy=multi_worker",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path / 'run'}",
            "--train_steps=4",
            "--batch_size=16",
            "--train_database_size=32",
            "--infer_database_size=64",
            "--validation_fraction=0",
        ]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    with open(tmp_path / "run" / "summary.json") as handle:
        summary = json.load(handle)
    assert summary["steps"] == 4 and summary["replicas"] == 2
    assert not [name for name in os.listdir(tmp_path / "run") if name.startswith(".worker")]


@pytest.mark.parametrize("dataset", ["adult", "mnist"])
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, dataset):
    common = dict(attention="softmax", deterministic=True, learning_rate=0.05)
    if dataset == "mnist":  # ResNet: its blocks live in a Python list.
        common.update(dataset="mnist", data_dir=str(tmp_path / "mnist"), resnet_depth=8, dense_units=(8,))
        write_mnist(common["data_dir"], train=64, test=16)
    straight = Trainer(tiny_config(tmp_path, "straight", train_steps=4, **common), verbose=False)
    straight.train()
    Trainer(tiny_config(tmp_path, "split", train_steps=2, **common), verbose=False).train()
    resumed = Trainer(tiny_config(tmp_path, "split", train_steps=4, **common), verbose=False)
    assert resumed.train()["resumed_from_step"] == 2
    for expected, got in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6, err_msg=expected.path)


def test_logs_without_a_terminal_are_plain_lines_and_tags_are_shared(tmp_path, capsys):
    config = tiny_config(tmp_path, "logs", train_steps=4, validation_fraction=0.25, eval_every=2, log_every=2)
    Trainer(config, verbose=True).train()
    output = capsys.readouterr().out
    assert not any(code in output for code in ("\r", "\b", "\x1b"))
    lines = [line for line in output.splitlines() if line.startswith(("step ", "validation "))]
    assert lines[0].startswith("step 2/4: loss ") and "steps/s" in lines[0]
    assert lines[1].startswith("validation at step 2: accuracy ")
    assert len(lines) == 4
    train = logged_tags(tmp_path / "logs" / "logs" / "train")
    validation = logged_tags(tmp_path / "logs" / "logs" / "validation")
    shared = {"accuracy/prototype", "accuracy/plain", "loss/prototype", "loss/plain"}
    assert shared <= train and shared <= validation
    assert {
        "loss/total",
        "loss/mixed",
        "attention/entropy",
        "attention/top3_weight_share",
        "attention/distinct_top_share",
        "optimizer/learning_rate",
    } <= train
    assert "loss/sparsity" not in train  # The entropy is not a loss unless --sparsity_weight > 0.
    assert {"prototypes/median_95", "confidence/right"} <= validation
    assert all("/" in tag for tag in train | validation)  # Grouped; no "examples".
    # The HParams dashboard's session: the run's flags, with its folder as the trial.
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    folder = tmp_path / "logs" / "logs" / "train"
    sessions = [
        plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info
        for name in os.listdir(folder)
        for event in tf.compat.v1.train.summary_iterator(str(folder / name))
        for value in event.summary.value
        if value.tag == "_hparams_/session_start_info"
    ]
    assert len(sessions) == 1 and sessions[0].group_name == "logs"
    logged = sessions[0].hparams
    assert logged["attention"].string_value == config.attention and logged["train_steps"].number_value == 4
    assert logged["learning_rate"].number_value == pytest.approx(config.learning_rate)
    assert logged["dense_units"].string_value == ",".join(map(str, config.dense_units))
    assert "model_dir" not in logged and logged["candidate_gradients"].bool_value is True


CALLBACKS_FILE = """
import keras


class Recorder(keras.callbacks.Callback):
    seen = []

    def on_train_batch_end(self, batch, logs=None):
        Recorder.seen.append(("batch", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        Recorder.seen.append(("epoch", epoch, sorted(logs)))


def recorder():
    return Recorder()


def stop_at_second_validation():
    return [Recorder(), keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=0, mode="max", baseline=2.0)]
"""


def test_cli_callbacks_see_training_and_validation_and_can_stop(tmp_path):
    from proto_tf.cli.callbacks import load_callbacks
    from proto_tf.errors import ConfigError

    path = tmp_path / "my_callbacks.py"
    path.write_text(CALLBACKS_FILE)
    callbacks = load_callbacks([f"{path}:recorder"])
    config = tiny_config(tmp_path, "cb", train_steps=4, validation_fraction=0.25, eval_every=2, log_every=2)
    Trainer(config, verbose=False, callbacks=callbacks).train()
    seen = type(callbacks[0]).seen
    assert [(kind, step) for kind, step, _ in seen] == [("batch", 2), ("epoch", 1), ("batch", 4), ("epoch", 2)]
    assert "prototype_accuracy" in seen[0][2] and "val_accuracy" in seen[1][2] and "val_loss" in seen[1][2]
    # Early stopping (a baseline no accuracy reaches) ends the run at the second
    # validation (Keras' EarlyStopping never stops after the first one), and running the
    # command again finds it finished.
    stopping = load_callbacks([f"{path}:stop_at_second_validation"])
    config = tiny_config(tmp_path, "stop", train_steps=8, validation_fraction=0.25, eval_every=2)
    summary = Trainer(config, verbose=False, callbacks=stopping).train()
    assert summary["steps"] == 4 and summary["stopped_by_callback_at"] == 4
    with open(os.path.join(config.model_dir, "summary.json")) as handle:
        assert Trainer(config, verbose=False).train() == json.load(handle)
    for spec, message in (
        ("nocolon", "expected MODULE:FACTORY"),
        (f"{path}:missing", "has no function 'missing'"),
        ("no_such_module_x:f", "cannot import no_such_module_x"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_callbacks([spec])


def test_fused_batchnorm_trains_to_the_weights_of_keras_batchnorm(tmp_path, monkeypatch):
    """The ResNet's fused BatchNorm kernel changes float rounding only: four training
    steps end at the weights (and moving statistics) Keras' own BatchNormalization
    gives. SGD, because Adam's first steps turn rounding-sized gradients into +-lr."""
    from proto_tf.encoders import layers as encoder_layers
    from proto_tf.encoders import resnet

    common = dict(
        dataset="mnist",
        data_dir=str(tmp_path / "mnist"),
        resnet_depth=8,
        dense_units=(8,),
        train_steps=4,
        deterministic=True,
    )
    write_mnist(common["data_dir"], train=64, test=16)
    sgd = lambda: keras.optimizers.SGD(0.05)  # noqa: E731
    fused = Trainer(tiny_config(tmp_path, "fused", **common), verbose=False, make_optimizer=sgd)
    fused.train()
    monkeypatch.setattr(resnet, "FusedBatchNormalization", keras.layers.BatchNormalization)
    plain = Trainer(tiny_config(tmp_path, "plain", **common), verbose=False, make_optimizer=sgd)
    plain.train()
    norms = [layer for layer in plain.model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(isinstance(n, encoder_layers.FusedBatchNormalization) for n in norms)
    for expected, got in zip(plain.model.weights, fused.model.weights):
        assert expected.path == got.path
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5, err_msg=got.path)


def test_the_weighted_sparsity_term_is_logged_as_a_loss_beside_the_entropy(tmp_path):
    config = tiny_config(tmp_path, "sparse", train_steps=4, log_every=2, sparsity_weight=0.5)
    Trainer(config, verbose=False).train()
    folder = tmp_path / "sparse" / "logs" / "train"
    logged = {}
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
            for value in event.summary.value:
                if value.tag in ("loss/sparsity", "attention/entropy"):
                    logged.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    assert set(logged["loss/sparsity"]) == set(logged["attention/entropy"]) == {2, 4}
    for step, entropy in logged["attention/entropy"].items():
        assert logged["loss/sparsity"][step] == pytest.approx(0.5 * entropy, rel=1e-6)
