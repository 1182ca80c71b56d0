"""Publishing an export as TF Serving's next version, atomically: written into a hidden
folder, readable by another user, then renamed; nothing is published from a failed or
full-disk export."""

import errno
import os
import shutil
import tempfile
from typing import Callable

import tensorflow as tf

from proto_tf import json_files
from proto_tf.errors import ConfigError, RunDirectoryError


def next_version_dir(export_dir: str, model_name: str) -> str:
    """`<export_dir>/<model_name>/<n>` with n one above the largest existing version."""
    base = os.path.join(export_dir, model_name)
    versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
    return os.path.join(base, str(max(versions, default=0) + 1))


def publish_version(write: Callable[[str], object], export_dir: str, model_name: str) -> str:
    """Runs `write(path)` into a hidden temporary folder beside the versions, then
    renames it to the next free version number; returns that version's folder.

    TF Serving polls the numbered folders, so it never sees a half-written version;
    an export killed midway leaves only the hidden `.export-*` folder (never loaded),
    which the next export into the same folder on this host removes.
    Two concurrent exports get different versions: a rename onto a version another
    export has just published fails, and the next number is tried.
    """
    base = os.path.join(export_dir, model_name)
    try:
        os.makedirs(base, exist_ok=True)
        json_files.remove_leftovers(base, ".export-")  # Of exports killed midway.
        temporary = tempfile.mkdtemp(prefix=".export-" + json_files.owner_tag(), dir=base)
    except OSError as error:
        raise ConfigError(
            f"cannot write to --export_dir={export_dir} ({error.strerror}: {error.filename}); give "
            "a folder this user can write to."
        ) from None
    try:
        write(temporary)
        _make_readable(temporary)
        while True:
            target = next_version_dir(export_dir, model_name)
            try:
                os.rename(temporary, target)  # Replaces only an empty leftover folder.
                return target
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if _is_full_disk(error):
            raise RunDirectoryError(
                f"could not write the export to {base} (no space left on the device); nothing was published, "
                "the earlier versions are intact: free some space and export again."
            ) from None
        raise


def _is_full_disk(error):
    """A full disk or quota, as Python (OSError) or TensorFlow's file system says it."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, tf.errors.OpError) and "No space left on device" in str(error)


def _make_readable(folder):
    """Modes of a published version as a plain copy would have them (folders 0777,
    files 0666, less the umask; 0755/0644 under the usual 022): `mkdtemp` makes its
    folder 0700, which a TF Serving process running as another user cannot read."""
    umask = json_files.current_umask()
    os.chmod(folder, 0o777 & ~umask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
