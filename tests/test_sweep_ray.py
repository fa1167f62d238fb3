"""The ray executor on a local Ray instance of 2 CPUs, against the local executor on the same settings.

Both executors run the same unit code on the same model (float32 on CPU, one thread everywhere: a
float sum taken in another order by another thread count changes the last bits of a row), so every
file a unit makes is byte-identical, except what is not reproducible between two processes either
way: PEFT's adapter_config.json lists its target modules in set order (it varies with Python's hash
seed), hence the stamps that hash the adapter folders (theirs, and the dW stage's); the wall times
in timings.jsonl and sweep.json; and the lock files, each process's own (they hold its pid).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_MFV_DIR

from weightsteer.cli import main
from weightsteer.locks import is_lock_file
from weightsteer.report import build_report
from weightsteer.tiny import embedded_tokenizer, tiny_model

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

NOT_REPRODUCIBLE = {"adapter_config.json", ".pos.inputs", ".neg.inputs", ".delta.safetensors.inputs",
                    "timings.jsonl", "sweep.json"}
UNIT_TITLE = b"ray::run_unit_task"  # the process title Ray gives a worker while it runs a unit


def sweep_args(model_dir, out, seeds="0,1"):
    return ["sweep", "--model", str(model_dir), "--behavior", "trad_care", "--methods", "lora,mean_diff",
            "--seeds", seeds, "--n-samples", "4", "--n-questions", "4", "--max-new-tokens", "8", "--steps", "2",
            "--limit", "4", "--evals", "sycophancy", "--tinymfv-dir", str(TINY_MFV_DIR), "--out", str(out),
            "--target-kl", "0.005", "--n-calibration", "4", "--no-cost"]


def outputs(out: Path, seed0_only: bool = False) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in NOT_REPRODUCIBLE and not is_lock_file(p)  # each process's own
            and not (seed0_only and "trad_care-seed1" in str(p))}


def tables(out: Path, to: Path) -> str:
    return build_report(out, "tiny-model", "trad_care", to, "cmd").read_text().split("## Time per stage")[0]


def unit_workers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(UNIT_TITLE):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class WorkerKiller(threading.Thread):
    """Kills the first Ray worker seen running a unit, once, after it has run for `after` seconds."""

    def __init__(self, after: float = 0.5):
        super().__init__(daemon=True)
        self.after, self.killed, self.stop = after, [], threading.Event()

    def run(self):
        while not self.stop.is_set() and not self.killed:
            pids = unit_workers()
            if pids:
                time.sleep(self.after)
                if pids[0] in unit_workers():
                    os.kill(pids[0], signal.SIGKILL)
                    self.killed.append(pids[0])
            time.sleep(0.1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread in this process too, as Ray gives each unit (the command line would otherwise take
    every idle core)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tokenizer = tiny_model("llama", embedded_tokenizer())
    path = tmp_path_factory.mktemp("models") / "tiny-model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def local_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    assert main(sweep_args(model_dir, out)) == 0
    return out


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep_makes_the_local_files_and_a_second_sweep_submits_nothing(model_dir, local_run, ray_instance,
                                                                              tmp_path, capsys):
    out = tmp_path / "ray"
    assert main([*sweep_args(model_dir, out), "--executor", "ray"]) == 0
    assert outputs(out) == outputs(local_run)
    assert any(name.endswith("adapters/pos/adapter_model.safetensors") for name in outputs(out))
    assert tables(out, tmp_path / "a") == tables(local_run, tmp_path / "b")
    capsys.readouterr()
    assert main([*sweep_args(model_dir, out), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert "4 of 4 units already done" in err and "[ray] submitted" not in err


def test_a_killed_worker_is_retried(model_dir, local_run, ray_instance, tmp_path):
    out = tmp_path / "ray"
    killer = WorkerKiller()
    killer.start()
    try:
        assert main([*sweep_args(model_dir, out, seeds="0"), "--executor", "ray"]) == 0
    finally:
        killer.stop.set()
    assert killer.killed, "no unit was running long enough to be killed"
    assert outputs(out) == outputs(local_run, seed0_only=True)


def test_a_unit_that_still_fails_is_recorded_and_the_next_sweep_redoes_only_it(model_dir, local_run, ray_instance,
                                                                                tmp_path, capsys):
    out = tmp_path / "ray"
    killer = WorkerKiller()
    killer.start()
    try:
        assert main([*sweep_args(model_dir, out, seeds="0"), "--executor", "ray", "--max-retries", "0"]) == 0
    finally:
        killer.stop.set()
    assert killer.killed
    status = json.loads((out / "tiny-model" / "trad_care" / "sweep.json").read_text())
    failed = [(m, e) for m, e in status.items() if not e["ok"]]
    assert len(failed) == 1 and len(status) == 2
    method, entry = failed[0]
    assert "died" in entry["error"].lower() or "crash" in entry["error"].lower(), entry["error"]
    capsys.readouterr()
    assert main([*sweep_args(model_dir, out, seeds="0"), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert err.count("[ray] submitted") == 1 and f"[ray] submitted {method} (seed 0)" in err
    assert outputs(out) == outputs(local_run, seed0_only=True)


def test_a_killed_driver_resumes_without_redoing_finished_units(model_dir, tmp_path):
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "weightsteer.cli", *sweep_args(model_dir, out, seeds="0"), "--executor", "ray"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "RAY_ADDRESS": ""}
    status = out / "tiny-model" / "trad_care" / "sweep.json"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its own process group: its local Ray goes with it
    try:
        deadline = time.time() + 600
        while not status.exists() and driver.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert status.exists(), "no unit finished"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # what is left of the driver's local Ray
        except ProcessLookupError:
            pass
    finished = [m for m, entry in json.loads(status.read_text()).items() if entry["ok"]]
    again = subprocess.run(command, env=env, capture_output=True, text=True, start_new_session=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(finished)} of 2 units already done" in again.stderr
    for method in finished:
        assert f"[ray] submitted {method} (seed 0)" not in again.stderr
