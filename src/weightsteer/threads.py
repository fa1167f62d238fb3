"""How many threads torch uses when the user has not said (OMP_NUM_THREADS).

On a CPU, decoding a small model is a long series of small matrix products; each OpenMP parallel
region waits for all its threads, and on a machine whose cores are busy with other work that wait
is long: measured here, under a load average of 4-6 on 2 cores, 1 thread was 3-4x faster than 2 (see
docs/performance.md), while on an idle machine 2 threads are about 1.8x faster than 1. So the
command line takes the cores that the load average says are free, at least one.
"""

from __future__ import annotations

import os


def free_cores(cores: int, load: float) -> int:
    """The cores not busy with other work, rounded, between 1 and `cores`."""
    return max(1, min(cores, round(cores - load)))


def choose_threads(log=None) -> int | None:
    """Set torch's intra-op threads from the load, unless OMP_NUM_THREADS is set; the count chosen."""
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "getloadavg"):
        return None
    import torch

    cores, load = os.cpu_count() or 1, os.getloadavg()[0]
    threads = free_cores(cores, load)
    torch.set_num_threads(threads)
    if log is not None and threads < cores:
        log(f"[threads] {threads} of {cores} cores (load average {load:.1f}); set OMP_NUM_THREADS to choose")
    return threads
