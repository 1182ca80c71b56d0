"""Attention normalisations, one module each, found by name (`get`, `names`).

Each gives every path what it needs (`base.Normalization`): softmax, sparsemax and
1.5-entmax (`entmax15`). A new one is a module that subclasses `Normalization` (or
`thresholded.ThresholdedNormalization`), registers an instance, and is imported here.
"""

# Imported one by one: the order of registration is the order of `names()` (help texts,
# error messages), the paper's two first.
from proto_tf.normalizations import softmax  # noqa: F401 (registers it)

# isort: split
from proto_tf.normalizations import sparsemax  # noqa: F401

# isort: split
from proto_tf.normalizations import entmax15  # noqa: F401

# isort: split
from proto_tf.normalizations.base import Normalization, get, names, register

__all__ = ["Normalization", "get", "names", "register"]
