"""This process's peak resident memory.

`getrusage`'s `ru_maxrss` survives `execve`: a process started by a large one (a test
worker of several GB) reports its parent's size at the fork as its own peak. Linux's
`VmHWM` belongs to the process's own address space, so it starts afresh at `execve`.
"""

import resource


def peak_resident_gib() -> float:
    """Peak resident memory of this process's own address space, in GiB (`VmHWM`;
    `ru_maxrss` where /proc is not there)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
