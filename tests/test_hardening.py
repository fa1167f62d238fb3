"""Nothing lost, nothing silently wrong: each test here fails on the weightsteer before issue 11.

Data loss (export over a model), a direction accepted by a modified copy of its base, NaN in
directions and JSON, damaged stage outputs taken as finished, temporary folders left by a killed
write, and a similarity against an adapter of another model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from adapter_helpers import adapter_pair
from conftest import make_tiny

import weightsteer as ws
from weightsteer.atomic import temporaries_of, write_json
from weightsteer.cli import main
from weightsteer.delta import model_fingerprint
from weightsteer.errors import WeightsteerError
from weightsteer.models import base_fingerprint
from weightsteer.stages import run_stage, stamp_path
from weightsteer.tensorfile import save_tensors


def run_cli(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def one_line_error(code, err, pattern):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert pattern in err, err


def tree_state(folder: Path) -> dict:
    """Every file under folder with its bytes: what "unchanged" means."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def saved(tiny_llama, tmp_path):
    """A tiny model saved as a folder (and loaded back from it, as the CLI would), and a LoRA direction
    made on it; the direction records the folder as its base model."""
    model, tok = tiny_llama
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    model, tok = ws.load_model(str(base), device="cpu")
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path))
    delta.save(tmp_path / "d.safetensors")
    return tmp_path, model, tok, delta


# ---- 1: export never writes over a model or files weightsteer did not write -------------------

def test_export_merged_refuses_the_base_models_own_folder(capsys, saved):
    root, *_ = saved
    before = tree_state(root / "base")
    code, err = run_cli(capsys, "export", "--delta", root / "d.safetensors", "--alpha", 1, "--format", "merged",
                        "--model", root / "base", "--out", root / "base")
    one_line_error(code, err, "is the base model's own folder")
    assert tree_state(root / "base") == before


def test_export_refuses_any_folder_it_did_not_write(capsys, saved):
    root, *_ = saved
    other = root / "someone_elses"
    other.mkdir()
    (other / "config.json").write_text("{}")  # what the old check took for an earlier export
    (other / "notes.txt").write_text("mine")
    before = tree_state(other)
    for fmt in ("merged", "lora"):
        code, err = run_cli(capsys, "export", "--delta", root / "d.safetensors", "--alpha", 1, "--format", fmt,
                            "--model", root / "base", "--out", other)
        one_line_error(code, err, "was not written by weightsteer")
    assert tree_state(other) == before


def test_export_replaces_its_own_earlier_export_but_not_files_added_to_it(capsys, saved):
    root, *_ = saved
    out = root / "steered"
    args = ["export", "--delta", root / "d.safetensors", "--format", "merged", "--model", root / "base", "--out", out]
    assert run_cli(capsys, *args, "--alpha", 1)[0] == 0
    first = (out / "model.safetensors").read_bytes()
    assert run_cli(capsys, *args, "--alpha", 2)[0] == 0  # an earlier export of the same kind: replaced
    assert (out / "model.safetensors").read_bytes() != first
    (out / "my_eval.csv").write_text("a,b\n")
    before = tree_state(out)
    code, err = run_cli(capsys, *args, "--alpha", 3)
    one_line_error(code, err, "files weightsteer did not write (my_eval.csv)")
    assert tree_state(out) == before
    code, err = run_cli(capsys, "export", "--delta", root / "d.safetensors", "--alpha", 1, "--out", out)
    one_line_error(code, err, "not a LoRA export one")


def test_save_steered_refuses_the_folder_the_model_came_from(saved):
    root, model, tok, delta = saved
    before = tree_state(root / "base")
    with pytest.raises(WeightsteerError, match="base model's own folder|not written by weightsteer"):
        ws.save_steered(model, tok, delta, 1.0, root / "base")
    assert tree_state(root / "base") == before


def test_compose_refuses_to_replace_a_file_that_is_not_a_direction(capsys, saved):
    root, *_ = saved
    weights = root / "base" / "model.safetensors"
    before = weights.read_bytes()
    code, err = run_cli(capsys, "compose", f"{root / 'd.safetensors'}:1", "--out", weights)
    one_line_error(code, err, "is not a weightsteer direction")
    assert weights.read_bytes() == before


# ---- 2: the fingerprint covers the config and every weight ------------------------------------

def test_fingerprint_tells_architectures_and_modified_copies_apart(base_tokenizer):
    llama, _ = make_tiny("llama", base_tokenizer, seed=0)
    qwen3, _ = make_tiny("qwen3", base_tokenizer, seed=0)
    # the old fingerprint (first embedding rows) could not tell these apart
    assert model_fingerprint(llama) == model_fingerprint(qwen3)
    assert base_fingerprint(llama) != base_fingerprint(qwen3)
    fp = base_fingerprint(llama)
    with torch.no_grad():  # one element of one matrix of the last layer, changed by one part in a thousand
        weight = llama.model.layers[-1].mlp.down_proj.weight
        weight.mul_(1.001)
    assert base_fingerprint(llama) != fp
    with torch.no_grad():
        weight.div_(1.001)
    llama.to(torch.bfloat16)  # a bf16 copy of the same checkpoint is the same base model
    bf16 = base_fingerprint(llama)
    llama.float()
    assert bf16 == base_fingerprint(llama)


def test_an_already_steered_copy_is_refused_unless_allowed(capsys, saved):
    root, model, tok, delta = saved
    # alpha small enough that no steered matrix moves by a percent of its norm
    params = dict(model.named_parameters())
    alpha = 0.005
    rel = max(float((alpha * part).norm() / params[name].norm()) for name, part in delta.dense().items())
    assert rel < 0.01
    ws.save_steered(model, tok, delta, alpha, root / "steered")
    args = ["eval", "sycophancy", "--delta", root / "d.safetensors", "--alpha", 1, "--model", root / "steered",
            "--limit", 2, "--out", root / "ev", "--out-root", root / "out"]
    code, err = run_cli(capsys, *args)
    one_line_error(code, err, "--allow-modified-base")
    assert not (root / "ev").exists() and not (root / "out").exists()
    code, err = run_cli(capsys, *args, "--allow-modified-base")
    assert code == 0
    assert "warning: this model's weights differ" in err
    # the base model itself is accepted as before, without a warning
    code, err = run_cli(capsys, "eval", "sycophancy", "--delta", root / "d.safetensors", "--alpha", 1, "--limit", 2,
                        "--model", root / "base", "--out", root / "ev2", "--out-root", root / "out")
    assert code == 0 and "warning" not in err


def test_directions_saved_with_the_old_fingerprint_still_load_and_check(saved, tiny_llama):
    root, model, _, delta = saved
    old = ws.WeightDelta(delta.parts, {**delta.meta, "fingerprint": model_fingerprint(model)})
    old.check_fits(model)
    other, _ = make_tiny("llama", tiny_llama[1], seed=3)
    with pytest.raises(WeightsteerError, match="does not fit this model"):
        old.check_fits(other)


# ---- 3: no NaN in directions or JSON ----------------------------------------------------------

def test_non_finite_directions_are_refused_at_load_and_save(saved):
    root, _, _, delta = saved
    name = delta.names[0]
    tensors = {f"{n}:B": p.B for n, p in delta.parts.items()} | {f"{n}:A": p.A for n, p in delta.parts.items()}
    tensors[f"{name}:B"] = torch.full_like(tensors[f"{name}:B"], float("nan"))
    save_tensors(root / "nan.safetensors", tensors, {**delta.meta, "format": "weightsteer.delta/1",
                                                     "modules": delta.names})
    with pytest.raises(WeightsteerError, match="NaN or infinite"):
        ws.WeightDelta.load(root / "nan.safetensors")
    broken = ws.WeightDelta({**delta.parts, name: torch.full(delta.parts[name].shape, float("inf"))}, delta.meta)
    with pytest.raises(WeightsteerError, match="NaN or infinite"):
        broken.save(root / "inf.safetensors")
    assert not (root / "inf.safetensors").exists()


def test_json_never_holds_nan_or_infinity(tmp_path):
    write_json(tmp_path / "s.json", {"mean": float("nan"), "ci": [1.0, float("inf")], "n": 3})

    def refuse(constant):
        raise AssertionError(f"{constant} in JSON")

    data = json.loads((tmp_path / "s.json").read_text(), parse_constant=refuse)
    assert data["mean"] is None and data["ci"] == [1.0, None] and data["n"] == 3
    assert set(data["null_because"]) == {"mean", "ci[1]"}


# ---- 4: a damaged stage output is rebuilt -----------------------------------------------------

def test_a_stage_output_damaged_after_it_finished_is_rebuilt(tmp_path):
    out, builds, lines = tmp_path / "delta.safetensors", [], []

    def build(path):
        builds.append(1)
        path.write_bytes(b"x" * 1000)

    assert run_stage("delta", out, {"a": 1}, build, lines.append)
    assert not run_stage("delta", out, {"a": 1}, build, lines.append)  # fresh: skipped
    out.write_bytes(out.read_bytes()[:100])  # truncated after it finished
    assert run_stage("delta", out, {"a": 1}, build, lines.append)
    assert len(builds) == 2 and out.read_bytes() == b"x" * 1000
    assert any("rebuilding" in line and "changed after it was written" in line for line in lines)


def test_stamps_without_an_output_hash_are_still_honoured(tmp_path):
    out = tmp_path / "data.jsonl"
    out.write_text("{}\n")
    from weightsteer.stages import inputs_key

    stamp_path(out).write_text(inputs_key({"a": 1}))  # as the previous version wrote stamps
    assert not run_stage("data", out, {"a": 1}, lambda p: pytest.fail("rebuilt"), lambda _: None)
    assert json.loads(stamp_path(out).read_text())["output"]  # upgraded: damage is caught from now on
    out.write_text("{\n")
    assert run_stage("data", out, {"a": 1}, lambda p: p.write_text("{}\n"), lambda _: None)


# ---- 5: a killed atomic write leaves nothing behind once the stage runs again ------------------

KILLED_WRITER = """
import sys, time
from pathlib import Path
from weightsteer.atomic import atomic_path
from weightsteer.stages import run_stage

def build(out):
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "adapter_model.safetensors").write_bytes(b"partial")
        Path(sys.argv[2]).write_text("writing")
        time.sleep(60)

run_stage("train pos", Path(sys.argv[1]), {"a": 1}, build, print)
"""


def start_writer(script: str, out: Path, ready: Path) -> subprocess.Popen:
    """Run `script` (argv: out, ready) in another process; return once it has written `ready`."""
    env = {**os.environ, "PYTHONPATH": str(Path(ws.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script, str(out), str(ready)], env=env)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if not ready.exists():
        proc.kill()
        pytest.fail("the other process never started writing")
    return proc


def test_a_write_killed_midway_leaves_no_temporary_after_the_rerun(tmp_path):
    out = tmp_path / "adapters" / "pos"
    proc = start_writer(KILLED_WRITER, out, tmp_path / "ready")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temporaries_of(out)  # what SIGKILL leaves: no finally clause ran
    assert run_stage("train pos", out, {"a": 1}, lambda p: p.mkdir(), lambda _: None)
    assert temporaries_of(out) == [] and out.is_dir()
    assert sorted(p.name for p in out.parent.iterdir()) == [".pos.inputs", ".pos.lock", "pos"]


SLOW_WRITER = """
import sys, time
from pathlib import Path
from weightsteer.atomic import write_jsonl
from weightsteer.stages import run_stage

def build(out):
    Path(sys.argv[2]).write_text("building")
    time.sleep(1.5)
    write_jsonl(out, [{"by": "the first process"}])

run_stage("eval mmlu", Path(sys.argv[1]), {"a": 1}, build, print)
"""


def test_a_second_process_waits_for_a_shared_output_and_reuses_it(tmp_path):
    """Two behaviours' runs share the model's unsteered MMLU rows: the second must not build them
    again (and remove the first one's temporary), but wait and read the first one's."""
    from weightsteer.atomic import read_jsonl

    out = tmp_path / "base" / "mmlu.rows.jsonl"
    proc = start_writer(SLOW_WRITER, out, tmp_path / "ready")
    try:
        said = []
        built = run_stage("eval mmlu", out, {"a": 1}, lambda p: p.write_text("{}\n"), said.append)
    finally:
        assert proc.wait(timeout=60) == 0
    assert not built
    assert said[0] == f"[eval mmlu] waiting for weightsteer process {proc.pid}, which is building {out}"
    assert said[1].startswith("[eval mmlu] up to date")
    assert read_jsonl(out) == [{"by": "the first process"}]


def test_a_fresh_output_is_read_without_taking_its_lock(tmp_path):
    """So finished results in a folder this process may not write to (a shared, read-only one) still serve."""
    out = tmp_path / "rows.jsonl"
    assert run_stage("eval", out, {"a": 1}, lambda p: p.write_text("{}\n"), lambda _: None)
    (tmp_path / ".rows.jsonl.lock").unlink()
    assert not run_stage("eval", out, {"a": 1}, lambda p: p.write_text("{}\n"), lambda _: None)
    assert not (tmp_path / ".rows.jsonl.lock").exists()


# ---- 6: similarity refuses an adapter of another base model -----------------------------------

def test_similarity_refuses_an_adapter_trained_on_another_model(capsys, saved, tiny_llama):
    root, model, _, _ = saved
    other, tok = make_tiny("llama", tiny_llama[1], seed=5)  # same architecture and shapes, other weights
    other.save_pretrained(root / "other")
    tok.save_pretrained(root / "other")
    other, _ = ws.load_model(str(root / "other"), device="cpu")
    ws.tiny.noisy_adapter(other, "lora", root / "ft-other", seed=9)
    ws.tiny.noisy_adapter(model, "lora", root / "ft-base", seed=9)
    code, err = run_cli(capsys, "similarity", "--delta", root / "d.safetensors", "--adapter", root / "ft-other")
    one_line_error(code, err, "was trained on")
    code, err = run_cli(capsys, "similarity", "--delta", root / "d.safetensors", "--adapter", root / "ft-base")
    assert code == 0, err
    code, err = run_cli(capsys, "similarity", "--delta", root / "d.safetensors", "--adapter", root / "ft-other",
                        "--allow-other-base")
    assert code == 0 and "warning" in err
