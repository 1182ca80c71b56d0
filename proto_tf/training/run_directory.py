"""A run's model_dir kept consistent: one trainer at a time, the same flags on resume,
checkpoints found even when the newest one or the state file is damaged, and JSON
records written atomically."""

import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import re
import socket

import tensorflow as tf

from proto_tf.array_hashing import arrays_sha256
from proto_tf.errors import RunDirectoryError
from proto_tf.json_files import read_json, temporary_beside

LOCK_FILE = ".lock"
# Flags that may differ when a run is resumed: they change when and how often things
# happen, or where data is read from, never what is trained or how it is evaluated.
RESUMABLE_CHANGES = (
    "train_steps",
    "checkpoint_every",
    "eval_every",
    "log_every",
    "eval_batch_size",
    "data_dir",
    "model_dir",
    "download",
    "strategy",
    "deterministic",
    "jit_compile",
    "divergence_factor",
)


class RunLock:
    """An exclusive lock on a model_dir, held while a trainer writes to it.

    `fcntl.flock` on `<model_dir>/.lock`: the kernel releases it when the holder
    exits, even on SIGKILL, so a lock file whose process died is detected as stale
    (its PID and host are reported) and taken over.
    """

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.stale_holder = None  # "PID n on host h" of a holder that died, if any.
        self._handle = None

    def __enter__(self):
        if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
            raise RunDirectoryError(f"--model_dir={self.model_dir} is a file, not a folder; give a folder.")
        try:
            os.makedirs(self.model_dir, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:
            raise RunDirectoryError(
                f"cannot write to --model_dir={self.model_dir} ({error.strerror}); give a "
                "folder this user can write to."
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise RunDirectoryError(
                f"{self.model_dir} is in use by another trainer ({holder}); wait for it to "
                "finish or train into another --model_dir."
            ) from None
        handle.seek(0)
        self.stale_holder = handle.read().strip() or None
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()} on host {socket.gethostname()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info):
        self._handle.seek(0)
        self._handle.truncate()  # A clean exit leaves no holder behind.
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def config_differences(stored: dict, config) -> list[str]:
    """`--flag: run value -> new value` for each field of `config` that differs from
    the stored config.json and may not change on resume."""
    current = dataclasses.asdict(config)
    # A run made before a field existed ran with that field's default.
    defaults = {field.name: field.default for field in dataclasses.fields(config)}
    differences = []
    for name in sorted(set(stored) | set(current)):
        if name in RESUMABLE_CHANGES:
            continue
        old = stored.get(name, defaults.get(name, "<not set>"))
        new = current.get(name, "<not set>")
        if isinstance(old, list):
            old = tuple(old)
        if isinstance(new, list):
            new = tuple(new)
        if old != new:
            differences.append(f"--{name}: {old!r} in the run, {new!r} now")
    return differences


def check_resumable(model_dir: str, config, config_file: str) -> None:
    """Refuses to train into a model_dir whose run was made with other flags."""
    path = os.path.join(model_dir, config_file)
    if not os.path.isfile(path):
        return
    stored = read_json(path, f"the flags of the run in {model_dir}: restore it or train into another --model_dir")
    differences = config_differences(stored, config)
    if differences:
        raise RunDirectoryError(
            f"{model_dir} holds a run made with other flags ({'; '.join(differences)}). "
            "Train into another --model_dir, or give the run's values to resume it (only "
            f"{', '.join('--' + n for n in RESUMABLE_CHANGES[:4])} and other scheduling "
            "flags may change)."
        )


def checkpoint_paths(directory: str) -> list[str]:
    """Checkpoint prefixes in `directory`, newest first, found from their files (not
    the `checkpoint` state file, which may be damaged)."""
    found = []
    for index_file in glob.glob(os.path.join(directory, "ckpt-*.index")):
        match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index_file))
        if match:
            found.append((int(match.group(1)), index_file[: -len(".index")]))
    return [path for _, path in sorted(found, reverse=True)]


def repair_state_file(directory: str, report=print) -> None:
    """Rewrites the `checkpoint` state file of `directory` from the checkpoint files
    when it cannot be parsed (binary or text garbage, a truncated write), so that
    TensorFlow's checkpoint manager can open the folder; the checkpoints themselves
    are untouched."""
    state_file = os.path.join(directory, "checkpoint")
    if not os.path.isfile(state_file):
        return
    try:
        tf.train.get_checkpoint_state(directory)
        return
    except Exception as error:  # noqa: BLE001 (UnicodeDecodeError, ParseError, OpError)
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    paths = checkpoint_paths(directory)
    if paths:
        # The text format TensorFlow writes, with paths relative to the folder.
        lines = [f'model_checkpoint_path: "{os.path.basename(paths[0])}"']
        lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in reversed(paths)]
        handle, temporary = temporary_beside(state_file)
        with handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(temporary, state_file)
    else:
        os.remove(state_file)
    report(
        f"warning: {state_file} was unreadable ({reason}); rebuilt it from the checkpoint files "
        f"({', '.join(os.path.basename(p) for p in paths) or 'none'})."
    )


DATA_FILE = "data.json"


def data_fingerprint(dataset) -> dict:
    """`{split: {"examples": n, "sha256": hash of inputs and labels}}` of a loaded
    dataset: what the run trained and is evaluated on, whatever folder it came from
    (the raw data under a frozen backbone's features)."""
    if getattr(dataset, "features", None) is not None:
        dataset = dataset.features.raw
    fingerprint = {}
    for name in ("train", "validation", "test"):
        split = getattr(dataset, name)
        if split is None:
            continue
        fingerprint[name] = {"examples": len(split), "sha256": arrays_sha256((split.inputs, split.labels))}
    return fingerprint


def run_identity(model_dir: str) -> dict:
    """What makes the run in `model_dir` itself: the sha256 of its flags (config.json)
    and the fingerprint of the data it trained on (data.json; None where absent). An
    export records it (`serving.export.RUN_FILE`), so that a command given an export and
    a run can tell whether the one was made from the other."""
    identity = {}
    for name, file_name in (("config_sha256", "config.json"), ("data", DATA_FILE)):
        path = os.path.join(model_dir, file_name)
        value = read_json(path, f"a file of the run in {model_dir}") if os.path.isfile(path) else None
        if name == "config_sha256" and value is not None:
            value = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        identity[name] = value
    return identity


def check_same_data(model_dir: str, fingerprint: dict, data_dir: str | None, run_data_dir: str | None) -> None:
    """Refuses to resume the run in `model_dir` on data other than it trained on
    (the fingerprint in its data.json); a run without one is not checked."""
    path = os.path.join(model_dir, DATA_FILE)
    if not os.path.isfile(path):
        return
    stored = read_json(path, f"the fingerprint of the data the run in {model_dir} trained on")
    differences = []
    for split in [s for s in ("train", "validation", "test") if s in stored or s in fingerprint]:
        old, new = stored.get(split), fingerprint.get(split)
        if old != new:
            describe = lambda f: "none" if f is None else f"{f['examples']} examples, sha256 {f['sha256'][:12]}"  # noqa: E731
            differences.append(f"{split} split: {describe(old)} in the run, {describe(new)} now")
    if differences:
        raise RunDirectoryError(
            f"{model_dir} was trained on other data than --data_dir={data_dir} holds "
            f"({'; '.join(differences)}; the run read {run_data_dir}). Give the run's data (its "
            "standardisation, classes and prototypes come from it), or train into another --model_dir."
        )


def stored_data_dir(model_dir: str, config_file: str) -> str | None:
    """The `--data_dir` a run in `model_dir` was trained with (None: no run yet)."""
    path = os.path.join(model_dir, config_file)
    if not os.path.isfile(path):
        return None
    return read_json(path, "the run's flags").get("data_dir")


def finished_summary(model_dir: str, summary_file: str, start: int, train_steps: int) -> dict | None:
    """The run's summary when it has finished at step `start`: it reached
    `train_steps`, or a callback stopped it there (None otherwise, or when the file is
    unreadable: the final evaluation is then made again)."""
    path = os.path.join(model_dir, summary_file)
    if not start or not os.path.isfile(path):
        return None
    try:
        summary = read_json(path, "the run's final results")
    except RunDirectoryError as error:
        print(f"warning: {error} The final evaluation is made again and the file rewritten.")
        return None
    done = start == train_steps or summary.get("stopped_by_callback_at") == start
    return summary if done and summary.get("steps") == start else None


def read_best(write_dir: str, best_file: str) -> dict | None:
    """The validation result of the run's best checkpoint, or None before the first."""
    path = os.path.join(write_dir, best_file)
    if os.path.exists(path):
        return read_json(
            path,
            f"the validation result of the best checkpoint in {write_dir}/best; restore "
            "it, or move it and that folder away to resume without the earlier best",
        )
    return None
