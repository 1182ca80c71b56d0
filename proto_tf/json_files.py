"""Result files of a run (JSON records, tables), written atomically and read with one
clear error."""

import json
import os
import shutil
import socket
import tempfile
from typing import Callable, TextIO

from proto_tf.errors import RunDirectoryError


def write_json(path: str, value: object) -> None:
    """Writes `value` as JSON to `path` atomically (`write_atomically`)."""
    write_atomically(path, lambda handle: json.dump(value, handle, indent=2, default=str))


def write_atomically(path: str, write: Callable[[TextIO], None]) -> str:
    """Calls `write(handle)` on a temporary file renamed to `path`, so a kill leaves the
    old file or the new one, never half of one; a write that fails (a full disk) is a
    RunDirectoryError naming the file, the old file left as it was. Returns `path`."""
    temporary = None
    try:
        handle, temporary = temporary_beside(path)
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:  # A full disk, a read-only folder.
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
        raise RunDirectoryError(
            f"could not write {path} ({error.strerror}); "
            + ("the earlier file is intact." if os.path.exists(path) else "nothing was written.")
        ) from None
    return path


def temporary_beside(path: str) -> tuple[TextIO, str]:
    """`(handle, name)` of a new file for text in `path`'s folder, to be renamed to
    `path` when complete. Created with O_EXCL under an unpredictable name, so a file or
    link planted there beforehand is never opened (a predictable `<path>.tmp-<pid>`
    could make a run write through a link to another file); its mode is what a plain
    `open` would give."""
    folder, prefix = os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}."
    remove_leftovers(folder, prefix)
    descriptor, name = tempfile.mkstemp(dir=folder, prefix=prefix + owner_tag(), suffix=".tmp")
    os.fchmod(descriptor, 0o666 & ~current_umask())
    return os.fdopen(descriptor, "w", newline=""), name


def current_umask() -> int:
    """The process's file-mode creation mask (reading it means setting it: restored)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def owner_tag() -> str:
    """`<host>~<pid>~`: starts the name of a temporary file or folder, so that a later
    process can tell one left by a killed process (`remove_leftovers`)."""
    return f"{socket.gethostname()}~{os.getpid()}~"


def remove_leftovers(folder: str, prefix: str) -> list:
    """Removes the temporary files and folders in `folder` named `prefix + owner_tag()`
    whose process was on this host and is gone (killed midway); those of live
    processes, or of other hosts, are left alone. Returns the paths removed."""
    host = socket.gethostname()
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        owner = name[len(prefix) :].split("~") if name.startswith(prefix) else []
        if len(owner) < 3 or owner[0] != host or not owner[1].isdigit() or _alive(int(owner[1])):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                continue
        removed.append(path)
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's process.
        return True
    return True


def make_output_folder(path: str, flag: str = "--output_dir") -> str:
    """Creates the folder `path` (and its parents) for a command's outputs; a path that
    is a file (or under one) is a RunDirectoryError naming `flag`. Returns `path`."""
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunDirectoryError(f"{flag}={path} is a file (or lies under one); give a folder.") from None
    return path


def read_json(path: str, what: str) -> object:
    """The JSON value in `path`; a RunDirectoryError names the file and says what it
    holds (`what`) when it cannot be read or parsed (a truncated write, garbage)."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError too.
        raise RunDirectoryError(f"{path} is unreadable ({error}); it holds {what}.") from None
