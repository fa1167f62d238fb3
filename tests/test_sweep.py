"""The sweep end to end on a tiny model, and killed at random moments: the same tables, no corrupt files."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import SHARED_DATA, TINY_MFV_DIR
from safetensors.torch import load_file

from weightsteer.errors import WeightsteerError
from weightsteer.report import build_report
from weightsteer.sweep import parse_methods


def sweep_command(model_dir, out):
    return [sys.executable, "-m", "weightsteer.cli", "sweep", "--model", str(model_dir), "--behavior", "trad_care",
            "--methods", "lora,mean_diff,prompt_only", "--n-samples", "4", "--n-questions", "4",
            "--max-new-tokens", "8", "--steps", "2", "--limit", "4", "--evals", "sycophancy,tinymfv",
            "--tinymfv-dir", str(TINY_MFV_DIR), "--out", str(out), "--target-kl", "0.005", "--n-calibration", "4",
            "--mmlu-dir", str(SHARED_DATA / "mmlu"), "--mmlu-n", "4"]


def tables(out, tmp_path, name):
    """The report without what legitimately differs between runs: the command line and the timings."""
    text = build_report(out, "tiny-model", "trad_care", tmp_path / name, "cmd").read_text()
    return text.split("## Time per stage")[0]


@pytest.fixture
def tiny_dir(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    path = tmp_path / "tiny-model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_killed_sweep_resumes_to_the_same_tables(tiny_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    clean = subprocess.run(sweep_command(tiny_dir, tmp_path / "clean"), env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-2000:]

    rng = random.Random(0)
    killed = tmp_path / "killed"
    for _ in range(3):
        proc = subprocess.Popen(sweep_command(tiny_dir, killed), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4, 20))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(sweep_command(tiny_dir, killed), env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]

    assert tables(killed, tmp_path, "a") == tables(tmp_path / "clean", tmp_path, "b")
    status = json.loads((killed / "tiny-model" / "trad_care" / "sweep.json").read_text())
    assert all(status[m]["ok"] for m in ("lora", "mean_diff", "prompt_only"))
    for path in killed.rglob("*"):  # every finished file is whole
        if ".tmp" in str(path):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        if path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.suffix == ".safetensors":
            load_file(str(path))


def test_parse_methods():
    assert parse_methods("lora,prompt") == ("lora", "prompt")
    assert len(parse_methods("all")) == 16
    assert parse_methods("activation") == ("mean_diff", "mean_centred", "pca", "cosine_gated", "topk_clusters",
                                           "sspace", "neutral_bisector", "down_proj_subspace")


def test_sweep_help_lists_every_method(capsys):
    from weightsteer.cli import main
    from weightsteer.sweep import ALL_METHODS

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in ALL_METHODS)
    assert parse_methods("weight,lora")[:2] == ("lora", "dora")
    with pytest.raises(WeightsteerError, match="unknown method 'nope'"):
        parse_methods("lora,nope")
