"""Attention normalisations, one module each, found by name (`get`, `names`).

Each gives every path what it needs (`base.Normalization`): softmax, sparsemax and
1.5-entmax (`entmax15`). A new one is a module that subclasses `Normalization` (or
`thresholded.ThresholdedNormalization`), registers an instance, and is imported here.
"""

from proto_tf.normalizations import entmax15, softmax, sparsemax  # noqa: F401 (registers them)
from proto_tf.normalizations.base import Normalization, get, names, register

__all__ = ["Normalization", "get", "names", "register"]
