"""Keeping the host memory a training step frees for the next step.

glibc's malloc hands large freed buffers back to the operating system (by trimming the
top of its heaps, or unmapping them) and the next step faults every page of them back
in. A CPU training step of TensorFlow frees and reallocates its activations and
gradients each step: on Fashion-MNIST --small that was 30,000-70,000 page faults per
step and a third of the step's time in the kernel (BENCHMARKS.md). The authors' TF1
graph, run in the same way, faulted 4,000 times per step.
"""

import ctypes
import ctypes.util

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

# Up to 1 GiB of free memory stays in the process; heaps grow in steps of 256 MiB
# (address space: untouched pages cost no memory); buffers up to 32 MiB (glibc's
# largest such threshold) come from the heaps, so their pages are reused.
SETTINGS = {_M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 256 << 20, _M_MMAP_THRESHOLD: 32 << 20}


def keep_freed_memory(libc=None) -> bool:
    """Sets glibc's malloc to keep freed memory for reuse (`SETTINGS`); returns whether
    it applied (False where the C library is not glibc, which is then left as it is).

    `libc`: the C library (tests pass a stand-in); found with ctypes when None.
    """
    if libc is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items())
