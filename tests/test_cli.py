"""Bad input gets one line, a non-zero exit, no traceback and no partial files."""

import math
import re

import pytest
from adapter_helpers import adapter_pair
from conftest import make_tiny

import weightsteer as ws
from weightsteer.cli import main


def run_cli(capsys, *args):
    capsys.readouterr()  # drop what fixtures printed
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_one_line_error(code, err, pattern):
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("weightsteer: error: ")
    assert pattern in err, err


@pytest.mark.parametrize(("args", "pattern"), [
    (("run", "--behavior", "kindness"), "unknown behaviour 'kindness'"),
    (("run", "--behavior", "kindness.toml"), "behaviour file 'kindness.toml' does not exist"),
    (("run", "--data", "nope.jsonl"), "contrastive data file 'nope.jsonl' does not exist"),
    (("run", "--target-kl", "0"), "--target-kl takes positive, finite numbers"),
    (("run", "--adapter", "prefix"), "invalid choice: 'prefix'"),
    (("run", "--model", "./no/such/folder"), "does not exist"),
    (("run", "--n-personas", "99"), "--n-personas must be between 1 and"),
    (("run", "--layers", "middle"), "--layers must look like"),
    (("sweep", "--methods", "lora,telepathy"), "unknown method 'telepathy'"),
    (("eval", "sycophancy", "--delta", "missing.safetensors", "--alpha", "1"), "no steering direction"),
])
def test_bad_arguments(capsys, tmp_path, monkeypatch, args, pattern):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, pattern)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.fixture
def saved_tiny(tiny_llama, tiny_llama_dir, tmp_path):
    model, _ = tiny_llama
    pos, neg = adapter_pair(model, "lora", tmp_path)
    model.config.weightsteer_model = str(tiny_llama_dir)
    ws.WeightDelta.from_adapters(model, pos, neg).save(tmp_path / "d.safetensors")
    return tmp_path


@pytest.mark.parametrize("alpha", ["nan", "inf", "-inf", "one"])
def test_non_finite_alpha(capsys, saved_tiny, alpha):
    code, err = run_cli(capsys, "eval", "sycophancy", "--delta", str(saved_tiny / "d.safetensors"),
                        f"--alpha={alpha}", "--out", str(saved_tiny / "ev"))
    assert_one_line_error(code, err, "alpha must be a finite number")
    assert not (saved_tiny / "ev").exists()


def test_corrupt_direction(capsys, saved_tiny):
    bad = saved_tiny / "bad.safetensors"
    bad.write_bytes((saved_tiny / "d.safetensors").read_bytes()[:100])
    code, err = run_cli(capsys, "eval", "sycophancy", "--delta", str(bad), "--alpha", "1",
                        "--model", str(saved_tiny / "tiny"), "--out", str(saved_tiny / "ev"))
    assert_one_line_error(code, err, "not a readable safetensors file")
    assert not (saved_tiny / "ev").exists()


def test_direction_from_another_model(capsys, saved_tiny, base_tokenizer):
    other, tok = make_tiny("llama", base_tokenizer, seed=7)
    other.save_pretrained(saved_tiny / "other")
    tok.save_pretrained(saved_tiny / "other")
    code, err = run_cli(capsys, "eval", "sycophancy", "--delta", str(saved_tiny / "d.safetensors"), "--alpha", "1",
                        "--model", str(saved_tiny / "other"), "--out", str(saved_tiny / "ev"))
    assert_one_line_error(code, err, "does not fit this model")
    assert not list((saved_tiny / "ev").glob("*alpha*"))


def test_eval_steered_writes_rows_and_summary(capsys, saved_tiny):
    code = main(["eval", "sycophancy", "--delta", str(saved_tiny / "d.safetensors"), "--alpha", "2",
                 "--out", str(saved_tiny / "ev"), "--out-root", str(saved_tiny / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "sycophancy [alpha+2]" in out and "shift vs base" in out
    names = sorted(p.name for p in (saved_tiny / "ev").iterdir() if not p.name.startswith("."))
    assert names == ["sycophancy.alpha+2.rows.csv", "sycophancy.alpha+2.rows.jsonl", "sycophancy.alpha+2.summary.json"]
    base = sorted(p.name for p in (saved_tiny / "out" / "tiny" / "base").iterdir() if not p.name.startswith("."))
    assert base == ["sycophancy.rows.csv", "sycophancy.rows.jsonl"]  # unsteered rows, shared by every command
    value = re.search(r"log_ratio ([-+][0-9.]+)", out).group(1)
    assert math.isfinite(float(value))


def test_eval_tinymfv_prints_the_per_foundation_table(capsys, saved_tiny):
    from conftest import TINY_MFV_DIR

    code = main(["eval", "tinymfv", "--delta", str(saved_tiny / "d.safetensors"), "--alpha", "1",
                 "--limit", "7", "--max-think", "2", "--data-dir", str(TINY_MFV_DIR),
                 "--out", str(saved_tiny / "ev"), "--out-root", str(saved_tiny / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| row | Care | Sanc | Auth | Loy | Fair | Lib | SocN |" in out
    assert "| logit(wrongness) |" in out and "| delta-logit vs base |" in out
    assert "of 14 cells kept" in out
    from weightsteer.atomic import read_jsonl

    rows = read_jsonl(saved_tiny / "ev" / "tinymfv.alpha+1.rows.jsonl")
    assert len(rows) == 14 and all("thought_is_wrong" in r for r in rows)  # --max-think 2: guided rollout


def test_eval_with_bf16_matmuls_scores_its_own_rows(capsys, saved_tiny):
    import torch

    from weightsteer.matmuls import bf16_matmuls_are_fast

    if not bf16_matmuls_are_fast(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16 matrix products")
    values = {}
    for dtype in ("float32", "bfloat16", "float32"):
        capsys.readouterr()
        code = main(["eval", "sycophancy", "--delta", str(saved_tiny / "d.safetensors"), "--alpha", "2",
                     "--out", str(saved_tiny / f"ev-{dtype}"), "--out-root", str(saved_tiny / "out"),
                     "--matmul-dtype", dtype])
        assert code == 0
        out = capsys.readouterr().out
        values.setdefault(dtype, []).append(float(re.search(r"log_ratio ([-+][0-9.]+)", out).group(1)))
    assert values["float32"][0] == values["float32"][1]  # float32 again gives float32's numbers
    assert abs(values["bfloat16"][0] - values["float32"][0]) < 0.05
