import os
import threading
import time

import pytest
import torch

from weightsteer import threads
from weightsteer.threads import busy_cores, choose_threads, free_cores


def test_free_cores_follow_the_busy_cores():
    assert free_cores(2, 0.1) == 2  # idle: every core
    assert free_cores(2, 0.9) == 1
    assert free_cores(2, 17.0) == 1  # never fewer than one
    assert free_cores(8, 2.6) == 5


def test_busy_cores_from_two_readings_of_the_cpu_counters(monkeypatch):
    readings = iter([(1000, 4000), (1050, 4200)])  # (idle + iowait, total) ticks: 50 idle of 200
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(readings))
    busy, measured = busy_cores(2, seconds=0)
    assert busy == pytest.approx(2 * 150 / 200)
    assert "1.5 cores busy" in measured


def test_without_cpu_counters_the_load_average_decides(monkeypatch):
    monkeypatch.setattr(threads, "_cpu_times", lambda: None)
    monkeypatch.setattr("os.getloadavg", lambda: (6.0, 6.0, 6.0))
    assert busy_cores(2, seconds=0) == (6.0, "load average 6.0")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux's CPU counters")
def test_a_spinning_thread_counts_as_a_busy_core():
    """The real kernel counters: a thread spinning while we measure is about one core of other work.
    (The one-minute load average would say ~0 here, and ~1 for a minute after the thread stopped.)"""
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.05)
        busy, _ = busy_cores(os.cpu_count() or 1, seconds=0.3)
    finally:
        stop.set()
        spinner.join()
    assert busy >= 0.7


def test_an_explicit_omp_num_threads_wins(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads() is None
    assert torch.get_num_threads() == before


def test_other_work_sets_torchs_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: (1.6, "1.6 cores busy"))
    said = []
    try:
        assert choose_threads(said.append) == 1
        assert torch.get_num_threads() == 1
        assert said and "1 of 2 cores (1.6 cores busy)" in said[0]
    finally:
        torch.set_num_threads(before)
