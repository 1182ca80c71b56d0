"""The sha256 of NumPy arrays, their dtype and shape included: what identifies a run's
data, a backbone's weights and a cached split (one way of hashing for all three)."""

import hashlib
from typing import Iterable

import numpy as np


def arrays_sha256(arrays: Iterable[np.ndarray], prefix: bytes = b"") -> str:
    """Hex sha256 of `prefix`, then of each array's dtype, shape and bytes in turn."""
    digest = hashlib.sha256(prefix)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
