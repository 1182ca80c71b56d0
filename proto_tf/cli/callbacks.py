"""Keras callbacks named on the command line: `--callbacks=MODULE:FACTORY` or
`--callbacks=path/to/file.py:FACTORY`, where FACTORY() returns a callback or a list."""

import importlib
import importlib.util
import os

import keras

from proto_tf.errors import ConfigError


def load_callbacks(specs: list[str]) -> list:
    """The callbacks the factories named by `specs` return, in order."""
    callbacks = []
    for spec in specs:
        source, _, name = spec.rpartition(":")
        if not source or not name:
            raise ConfigError(f"--callbacks={spec}: expected MODULE:FACTORY or FILE.py:FACTORY.")
        module = _load_module(spec, source)
        factory = getattr(module, name, None)
        if not callable(factory):
            raise ConfigError(f"--callbacks={spec}: {source} has no function {name!r}.")
        made = factory()
        for callback in made if isinstance(made, (list, tuple)) else [made]:
            if not isinstance(callback, keras.callbacks.Callback):
                raise ConfigError(
                    f"--callbacks={spec}: {name}() returned {type(callback).__name__}, not a keras.callbacks.Callback."
                )
            callbacks.append(callback)
    return callbacks


def _load_module(spec, source):
    if source.endswith(".py"):
        path = os.path.abspath(os.path.expanduser(source))
        if not os.path.isfile(path):
            raise ConfigError(f"--callbacks={spec}: no file {path}.")
        module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(source)
    except ImportError as error:
        raise ConfigError(f"--callbacks={spec}: cannot import {source} ({error}).") from None
