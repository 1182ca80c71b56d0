"""A run's model_dir kept consistent: one trainer at a time, the same flags on resume,
checkpoints found even when the newest one or the state file is damaged, and JSON
records written atomically."""

import dataclasses
import fcntl
import glob
import json
import os
import re
import socket

from proto_tf.errors import RunDirectoryError

LOCK_FILE = ".lock"
# Flags that may differ when a run is resumed: they change when and how often things
# happen, or where data is read from, never what is trained or how it is evaluated.
RESUMABLE_CHANGES = (
    "train_steps", "checkpoint_every", "eval_every", "log_every", "eval_batch_size",
    "data_dir", "model_dir", "download", "strategy", "deterministic", "jit_compile",
    "divergence_factor",
)  # fmt: skip


def write_json(path: str, value) -> None:
    """Writes `value` as JSON to `path` through a temporary file and a rename, so a
    kill leaves the old file or the new one, never half of one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(value, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


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
        os.makedirs(self.model_dir, exist_ok=True)
        handle = open(self.path, "a+")
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
    try:
        with open(path) as handle:
            stored = json.load(handle)
    except (OSError, ValueError) as error:
        raise RunDirectoryError(
            f"{path} is unreadable ({error}); it describes the run in {model_dir}: restore it "
            "or train into another --model_dir."
        ) from None
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
