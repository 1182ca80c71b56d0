"""Result files of a run (JSON records, tables), written atomically and read with one
clear error."""

import json
import os
from typing import Callable, TextIO

from proto_tf.errors import RunDirectoryError


def write_json(path: str, value: object) -> None:
    """Writes `value` as JSON to `path` atomically (`write_atomically`)."""
    write_atomically(path, lambda handle: json.dump(value, handle, indent=2, default=str))


def write_atomically(path: str, write: Callable[[TextIO], None]) -> str:
    """Calls `write(handle)` on a temporary file renamed to `path`, so a kill leaves the
    old file or the new one, never half of one; a write that fails (a full disk) is a
    RunDirectoryError naming the file, the old file left as it was. Returns `path`."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:  # A full disk, a read-only folder.
        if os.path.exists(temporary):
            os.remove(temporary)
        raise RunDirectoryError(
            f"could not write {path} ({error.strerror}); "
            + ("the earlier file is intact." if os.path.exists(path) else "nothing was written.")
        ) from None
    return path


def read_json(path: str, what: str) -> object:
    """The JSON value in `path`; a RunDirectoryError names the file and says what it
    holds (`what`) when it cannot be read or parsed (a truncated write, garbage)."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError too.
        raise RunDirectoryError(f"{path} is unreadable ({error}); it holds {what}.") from None
