"""Errors that mean "the user's input is wrong", and the command-line wrapper that turns
them into one line and exit status 2.

A `UserError` says what was wrong, where (file and line, flag, input name, run
directory) and what is valid. Entry points print its message alone, without a
traceback; every other exception is a programming error and keeps its traceback.
"""

import functools
import sys
from typing import Callable

USAGE_EXIT_STATUS = 2


class UserError(Exception):
    """A mistake in the user's data, flags or run directory; the message is complete."""


class DataError(UserError, ValueError):
    """A data file does not hold what its format promises (names the file and line)."""


class ConfigError(UserError, ValueError):
    """A flag or configuration value is outside its valid range (names the flag)."""


class RunDirectoryError(UserError):
    """A model_dir cannot be used as asked: other flags, another trainer, bad checkpoints."""


class TrainingHealthError(UserError, RuntimeError):
    """Training produced non-finite values or diverged; the last good checkpoint is kept."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0]


def exit_on_user_error(main: Callable) -> Callable:
    """Wraps an absl `main` so that a UserError prints `error: <message>` to stderr and
    exits with status 2; other exceptions propagate with their traceback."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(USAGE_EXIT_STATUS)

    return wrapped
