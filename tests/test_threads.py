import torch

from weightsteer.threads import choose_threads, free_cores


def test_free_cores_follow_the_load():
    assert free_cores(2, 0.1) == 2  # idle: every core
    assert free_cores(2, 0.9) == 1
    assert free_cores(2, 17.0) == 1  # never fewer than one
    assert free_cores(8, 2.6) == 5


def test_an_explicit_omp_num_threads_wins(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads() is None
    assert torch.get_num_threads() == before


def test_the_load_sets_torchs_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (6.0, 6.0, 6.0))
    said = []
    try:
        assert choose_threads(said.append) == 1
        assert torch.get_num_threads() == 1
        assert said and "1 of 2 cores" in said[0]
    finally:
        torch.set_num_threads(before)
