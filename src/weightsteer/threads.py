"""How many threads torch uses when the user has not said (OMP_NUM_THREADS).

On a CPU, decoding a small model is a long series of small matrix products; each OpenMP parallel
region waits for all its threads, and on a machine whose cores are busy with other work that wait
is long: measured here, under a load average of 4-6 on 2 cores, 1 thread was 3-4x faster than 2 (see
docs/performance.md), while on an idle machine 2 threads are about 1.8x faster than 1. So the
command line takes the cores that other work leaves free, at least one.

"Other work" is read from the CPU time the kernel counted as busy over a short window, not from the
load average: the one-minute load average remembers the last minute, so on an idle 2-core machine
it still said ~1 right after `pip install` or after the previous `weightsteer run` of the same
script had ended, and the next command ran on one of two idle cores (measured: the main job's first
stage at 94% CPU of one core). The load average is the fallback where /proc/stat does not exist.
"""

from __future__ import annotations

import os
import time

SAMPLE_SECONDS = 0.1  # the kernel counts each core 10-25 times (100-250 Hz): enough to tell a busy core from an idle one


def free_cores(cores: int, busy: float) -> int:
    """The cores not busy with other work, rounded, between 1 and `cores`."""
    return max(1, min(cores, round(cores - busy)))


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) clock ticks of all cores since boot, from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal (guest time is inside user)


def busy_cores(cores: int, seconds: float = SAMPLE_SECONDS) -> tuple[float, str]:
    """(cores' worth of CPU busy with other work, how it was measured). This process sleeps while it
    measures, so what it sees is everyone else."""
    before = _cpu_times()
    if before is not None:
        time.sleep(seconds)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            busy = cores * (1 - (after[0] - before[0]) / (after[1] - before[1]))
            return busy, f"{busy:.1f} cores busy"
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        return load, f"load average {load:.1f}"
    return 0.0, "no load measure"


def choose_threads(log=None) -> int | None:
    """Set torch's intra-op threads from the other work on the machine, unless OMP_NUM_THREADS is set;
    the count chosen."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    cores = os.cpu_count() or 1
    busy, measured = busy_cores(cores)
    threads = free_cores(cores, busy)
    torch.set_num_threads(threads)
    if log is not None and threads < cores:
        log(f"[threads] {threads} of {cores} cores ({measured}); set OMP_NUM_THREADS to choose")
    return threads
