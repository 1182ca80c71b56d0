"""The trainer keeps freed host memory for the next step (glibc's mallopt)."""

import ctypes
import ctypes.util

from test_training import _tiny_config
from proto_tf.training import host_memory
from proto_tf.training.trainer import Trainer


class _FakeLibc:
    """Records mallopt calls; answers `result` (glibc: 1 on success, 0 on refusal)."""

    def __init__(self, result=1):
        self.calls, self.result = [], result

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return self.result


def test_keep_freed_memory_sets_glibc_thresholds():
    libc = _FakeLibc()
    assert host_memory.keep_freed_memory(libc)
    # malloc.h: M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_THRESHOLD -3.
    assert dict(libc.calls) == {-1: 1 << 30, -2: 256 << 20, -3: 32 << 20}


def test_keep_freed_memory_reports_a_refusal_or_a_library_without_mallopt():
    assert not host_memory.keep_freed_memory(_FakeLibc(result=0))
    assert not host_memory.keep_freed_memory(object())


def test_real_glibc_accepts_the_settings():
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name)
    assert host_memory.keep_freed_memory(libc) == hasattr(libc, "mallopt")


def test_trainer_keeps_freed_memory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(True) or True)
    Trainer(_tiny_config(tmp_path, "memory"), verbose=False)
    assert calls == [True]
