"""ProtoAttend (attention-based prototypical learning) in Keras 3 / TensorFlow 2.

The names below are imported on first use, so `import proto_tf` (and every command
line tool, which sets TensorFlow's C++ log level first) does not start TensorFlow.
"""

import importlib
import sys
import types

__version__ = "0.2.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "ATTENTIONS": "proto_tf.training.config",
    "BaselineClassifier": "proto_tf.baseline",
    "NORMALIZATIONS": "proto_tf.attention",
    "PrototypeAttention": "proto_tf.attention",
    "PrototypeDatabase": "proto_tf.index",
    "PrototypeIndex": "proto_tf.index",
    "ProtoAttend": "proto_tf.model",
    "TrainedRun": "proto_tf.analysis.trained_run",
    "load_run": "proto_tf.analysis.trained_run",
    "metrics": None,  # A module.
    "normalizations": None,  # A module: the attention normalisations by name.
    "sparsemax": "proto_tf.sparsemax",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'proto_tf' has no attribute {name!r}")
    if _EXPORTS[name] is None:
        return importlib.import_module(f"proto_tf.{name}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(__all__)


class _Package(types.ModuleType):
    """`proto_tf.sparsemax` is the function, as it was when this package imported it
    eagerly: importing the submodule of the same name binds the module to the package
    attribute (which would hide the function); the property keeps the function."""

    @property
    def sparsemax(self):
        return importlib.import_module("proto_tf.sparsemax").sparsemax

    @sparsemax.setter
    def sparsemax(self, module):
        pass  # The import system binding the submodule; it stays in sys.modules.


sys.modules[__name__].__class__ = _Package
