import copy
import json
from pathlib import Path

import pytest
import torch
from adapter_helpers import adapter_pair
from conftest import make_tiny
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import weightsteer as ws
from weightsteer import export
from weightsteer.calibrate import CalibrationResult, save_calibration
from weightsteer.cli import main
from weightsteer.commands.share import parse_term
from weightsteer.delta import LowRank
from weightsteer.errors import WeightsteerError

PROMPTS = ["Hello there, how are you?", "What is the capital of France?", "Tell me a joke."]


@pytest.fixture
def few_prompts(monkeypatch):
    """The KL check on three prompts instead of all calibration questions, to keep tests fast."""
    monkeypatch.setattr(export, "calibration_questions", lambda: PROMPTS)


def logits(model, tok):
    with torch.no_grad():
        return model(tok(PROMPTS[:1], return_tensors="pt").input_ids).logits


def steered_logits(model, tok, delta, alpha):
    with ws.steer(model, delta, alpha):
        return logits(model, tok)


def peft_logits(model, tok, adapter_dir):
    """The independent reference: PEFT loads the exported folder onto a fresh copy of the base."""
    return logits(PeftModel.from_pretrained(copy.deepcopy(model), str(adapter_dir)), tok)


def saved_products(adapter_dir) -> dict[str, torch.Tensor]:
    """B @ A per module, read back from the adapter file (scaling is 1: lora_alpha == r)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"] and not config["rank_pattern"]
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    prefix, a_suffix = "base_model.model.", ".lora_A.weight"
    return {k[len(prefix):-len(a_suffix)] + ".weight": tensors[k.replace("lora_A", "lora_B")] @ tensors[k]
            for k in tensors if k.endswith(a_suffix)}


@pytest.mark.parametrize("method", ["lora", "pissa", "delora"])
def test_exported_lora_reloads_in_peft_with_the_steered_logits(tiny, method, tmp_path):
    model, tok = tiny
    pos, neg = adapter_pair(model, method, tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    report = export.export_lora(delta, 1.7, tmp_path / "out")

    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors", "export_report.json", ".weightsteer-output.json"}
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 * 4 == report["rank"]
    assert sorted(config["target_modules"]) == sorted(n.removesuffix(".weight") for n in delta.names)
    assert report["exact"] and report["max_rel_error"] == 0.0

    expected = steered_logits(model, tok, delta, 1.7)
    torch.testing.assert_close(peft_logits(model, tok, tmp_path / "out"), expected, rtol=1e-4, atol=1e-4)
    assert (expected - logits(model, tok)).abs().max() > 1e-2  # the check has teeth


def test_modules_of_different_rank_are_zero_padded_and_stay_exact(tiny_llama, tmp_path):
    model, tok = tiny_llama
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path))
    first = delta.names[0]
    gen = torch.Generator().manual_seed(3)
    out_dim, in_dim = delta.parts[first].shape
    delta.parts[first] = LowRank(0.1 * torch.randn(out_dim, 3, generator=gen), torch.randn(3, in_dim, generator=gen))
    report = export.export_lora(delta, -2.0, tmp_path / "out")
    assert report["modules"][first]["rank"] == 3 and report["rank"] == 8
    for name, product in saved_products(tmp_path / "out").items():
        torch.testing.assert_close(product, -2.0 * delta.dense()[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(peft_logits(model, tok, tmp_path / "out"), steered_logits(model, tok, delta, -2.0),
                               rtol=1e-4, atol=1e-4)


def test_svd_export_reports_the_error_it_has(tiny_llama, tmp_path, few_prompts):
    model, tok = tiny_llama
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "dora", tmp_path))
    dense = delta.dense()

    report = export.export_lora(delta, 1.5, tmp_path / "r2", rank=2, model=model, tokenizer=tok)
    products = saved_products(tmp_path / "r2")
    for name, product in products.items():
        direct = float((1.5 * dense[name] - product).norm() / (1.5 * dense[name]).norm())
        assert report["modules"][name]["rel_error"] == pytest.approx(direct, rel=1e-4)
        assert report["modules"][name]["rank"] == 2 and not report["modules"][name]["exact"]
    assert report["max_rel_error"] > 0.1
    assert 0 < report["kl"]["mean"] <= report["kl"]["max"] and report["kl"]["prompts"] == len(PROMPTS)
    torch.testing.assert_close(peft_logits(model, tok, tmp_path / "r2"),
                               steered_logits(model, tok, ws.WeightDelta(products), 1.0), rtol=1e-4, atol=1e-4)

    full = export.export_lora(delta, 1.5, tmp_path / "full", rank=10_000, model=model, tokenizer=tok)
    assert full["max_rel_error"] < 1e-5 and full["kl"]["max"] < 1e-6
    for name, product in saved_products(tmp_path / "full").items():
        torch.testing.assert_close(product, 1.5 * dense[name], rtol=1e-4, atol=1e-5)


def random_dense_delta(seed=0) -> ws.WeightDelta:
    """Full-rank parts with a decaying spectrum, as a DoRA/OFT/IA3 direction has."""
    gen = torch.Generator().manual_seed(seed)
    parts = {}
    for i, (out_dim, in_dim) in enumerate([(64, 48), (32, 80)]):
        U, _ = torch.linalg.qr(torch.randn(out_dim, out_dim, generator=gen))
        V, _ = torch.linalg.qr(torch.randn(in_dim, in_dim, generator=gen))
        k = min(out_dim, in_dim)
        parts[f"model.layers.{i}.mlp.down_proj.weight"] = U[:, :k] * 0.7 ** torch.arange(k) @ V[:, :k].T
    return ws.WeightDelta(parts, {"method": "oft"})


def test_max_error_picks_the_smallest_rank_that_reaches_it(tmp_path):
    delta = random_dense_delta()
    report = export.export_lora(delta, 1.0, tmp_path / "out", max_error=0.1)
    for name, part in delta.parts.items():
        k, error = report["modules"][name]["rank"], report["modules"][name]["rel_error"]
        S = torch.linalg.svdvals(part.double())
        assert error <= 0.1 + 1e-6 and 1 < k < len(S)
        assert float(S[k - 1:].norm() / S.norm()) > 0.1  # one rank fewer would not reach it
    assert report["rank"] == max(m["rank"] for m in report["modules"].values())


def test_randomized_and_factored_svd_branches(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    exact_rank3 = torch.randn(200, 3, generator=gen) @ torch.randn(3, 160, generator=gen)
    monkeypatch.setattr(export, "FULL_SVD_MAX_SIDE", 64)  # make this matrix "large"
    assert export.approximate(exact_rank3, rank=3).rel_error < 1e-5

    factored = LowRank(torch.randn(40, 6, generator=gen), torch.randn(6, 30, generator=gen))
    S = torch.linalg.svdvals(factored.dense().double())
    capped = export.approximate(factored, rank=2)
    assert capped.factors.B.shape[1] == 2 and not capped.exact
    assert capped.rel_error == pytest.approx(float(S[2:].norm() / S.norm()), rel=1e-4)
    assert export.approximate(factored, rank=6).exact


def test_merged_checkpoint_and_model_card(tiny_llama, tmp_path):
    model, tok = tiny_llama
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path), behaviour="honesty")
    delta.save(tmp_path / "run" / "delta.safetensors")
    save_calibration(tmp_path / "run" / "kl-1" / "calibration.json", {  # as `weightsteer calibrate` writes it
        "pos": CalibrationResult(2.25, 0.98, 4, True, [(2.25, 0.98)], 1.0, "converged"),
        "neg": CalibrationResult(-1.5, 1.02, 12, False, [(-1.5, 1.02)], 1.0, "max_iter")})

    argv = ["export", "--delta", str(tmp_path / "run" / "delta.safetensors"), "--alpha", "2.25",
            "--format", "merged", "--out", str(tmp_path / "merged"), "--model", str(base_dir)]
    assert main(argv) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits(merged, tok), steered_logits(model, tok, delta, 2.25), rtol=1e-4, atol=1e-4)
    card = (tmp_path / "merged" / "README.md").read_text()
    for text in ("honesty", "| alpha | 2.25 |", "| 1 | pos | +2.25 | 0.980 | True |", "| 1 | neg | -1.5 | 1.020 | False |",
                 str(base_dir)):
        assert text in card

    (tmp_path / "run" / "kl-1" / "calibration.json").unlink()
    card = export.model_card(delta, 1.0, "base", export.read_calibration(tmp_path / "run" / "delta.safetensors"))
    assert "No kl-*/calibration.json" in card


# ---- compose ----------------------------------------------------------------------------------

def test_compose_of_a_direction_and_its_negation_is_zero(tiny_llama, tmp_path):
    model, _ = tiny_llama
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path), behaviour="honesty")
    folder = tmp_path / "run:7"  # a ':' in the path
    delta.save(folder / "a.safetensors")
    assert main(["compose", f"{folder}/a.safetensors:1.0", f"{folder}/a.safetensors:-1",
                 "--out", str(tmp_path / "zero.safetensors")]) == 0
    zero = ws.WeightDelta.load(tmp_path / "zero.safetensors")
    assert zero.meta["behaviour"] == "honesty" and len(zero.meta["composed_of"]) == 2
    for value in zero.dense().values():
        torch.testing.assert_close(value, torch.zeros_like(value), rtol=0, atol=1e-6)

    assert main(["compose", f"{folder}/a.safetensors", f"{folder}/a.safetensors:0.5",
                 "--out", str(tmp_path / "c.safetensors")]) == 0
    combined = ws.WeightDelta.load(tmp_path / "c.safetensors").dense()
    for name, value in delta.dense().items():
        torch.testing.assert_close(combined[name], 1.5 * value, rtol=1e-5, atol=1e-6)


def test_parse_term():
    assert parse_term("a.safetensors:-0.5") == (Path("a.safetensors"), -0.5)
    assert parse_term("a.safetensors") == (Path("a.safetensors"), 1.0)
    assert parse_term("run:2/a.safetensors") == (Path("run:2/a.safetensors"), 1.0)
    assert parse_term("run:2/a.safetensors:3") == (Path("run:2/a.safetensors"), 3.0)
    for bad in ("a.safetensors:nan", "a.safetensors:inf", "a.safetensors:-inf"):
        with pytest.raises(WeightsteerError):
            parse_term(bad)


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------

@pytest.fixture(scope="module")
def lora_delta_file(base_tokenizer, tmp_path_factory):
    model, _ = make_tiny("llama", base_tokenizer)
    root = tmp_path_factory.mktemp("delta")
    ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", root)).save(root / "d.safetensors")
    return root / "d.safetensors"


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("case", ["missing", "corrupt", "nan alpha", "format", "rank 0", "bad max-error",
                                  "dense without rank", "existing folder"])
def test_bad_export_input(case, lora_delta_file, tmp_path, capsys):
    out = tmp_path / "out"
    delta = lora_delta_file
    args = {"--alpha": "1", "--format": "lora"}
    if case == "missing":
        delta = tmp_path / "nope.safetensors"
    elif case == "corrupt":
        delta = tmp_path / "corrupt.safetensors"
        delta.write_bytes(b"not a safetensors file")
    elif case == "nan alpha":
        args["--alpha"] = "nan"
    elif case == "format":
        args["--format"] = "onnx"
    elif case == "rank 0":
        args["--rank"] = "0"
    elif case == "bad max-error":
        args["--max-error"] = "1.5"
    elif case == "dense without rank":
        delta = tmp_path / "dense.safetensors"
        random_dense_delta().save(delta)
    elif case == "existing folder":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    argv = ["export", "--delta", delta, "--out", out, *[x for kv in args.items() for x in kv]]
    code, err = run_cli(argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("weightsteer: error:"), err
    assert out.exists() == (case == "existing folder")
    if case == "existing folder":
        assert (out / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporaries left


def test_compose_refuses_directions_of_different_models(lora_delta_file, base_tokenizer, tmp_path, capsys):
    other, _ = make_tiny("llama", base_tokenizer, seed=1)
    other_file = tmp_path / "other.safetensors"
    ws.WeightDelta.from_adapters(other, *adapter_pair(other, "lora", tmp_path / "o")).save(other_file)
    code, err = run_cli(["compose", lora_delta_file, f"{other_file}:-1", "--out", tmp_path / "c.safetensors"], capsys)
    assert code == 2 and len(err) == 1 and "different base models" in err[0]
    assert not (tmp_path / "c.safetensors").exists()
