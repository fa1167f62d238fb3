"""The llama.cpp LoRA GGUF: read back with the gguf package's own reader and rebuilt per module."""

import json
import re

import gguf
import numpy as np
import pytest
import torch
from adapter_helpers import adapter_pair
from conftest import make_tiny

import weightsteer as ws
from weightsteer.calibrate import CalibrationResult, save_calibration
from weightsteer.cli import main
from weightsteer.delta import LowRank
from weightsteer.errors import WeightsteerError
from weightsteer.export import read_calibration
from weightsteer.gguf_export import export_lora_gguf

# llama.cpp's names for the Hugging Face modules, written out here rather than taken from gguf's map
LLAMA_CPP_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                   "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                   "mlp.down_proj": "ffn_down"}


def llama_cpp_name(hf_name: str) -> str:
    layer, module = re.fullmatch(r"model\.layers\.(\d+)\.(\w+\.\w+)\.weight", hf_name).groups()
    return f"blk.{layer}.{LLAMA_CPP_NAMES[module]}.weight"


def undo_rope_interleave(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """Row h*d + 2i + j of the GGUF tensor is row h*d + j*d/2 + i of the Hugging Face one."""
    d = rows.shape[0] // n_heads
    hf = np.empty_like(rows)
    for h in range(n_heads):
        for i in range(d // 2):
            for j in range(2):
                hf[h * d + j * d // 2 + i] = rows[h * d + 2 * i + j]
    return hf


def read_gguf(path):
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def calibrate_beside(folder):
    save_calibration(folder / "kl-1" / "calibration.json", {
        "pos": CalibrationResult(2.25, 0.98, 4, True, [(2.25, 0.98)], 1.0, "converged"),
        "neg": CalibrationResult(-1.5, 1.02, 12, False, [(-1.5, 1.02)], 1.0, "max_iter")})


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_gguf_adapter_rebuilds_alpha_dw_per_module(arch, base_tokenizer, tmp_path):
    model, _ = make_tiny(arch, base_tokenizer)
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path))
    first = delta.names[0]  # one module of lower rank: zero-padded to the others' rank
    gen = torch.Generator().manual_seed(3)
    out_dim, in_dim = delta.parts[first].shape
    delta.parts[first] = LowRank(0.1 * torch.randn(out_dim, 3, generator=gen), torch.randn(3, in_dim, generator=gen))
    delta.save(tmp_path / "run" / "delta.safetensors")
    calibrate_beside(tmp_path / "run")
    calibration = read_calibration(tmp_path / "run" / "delta.safetensors")
    alpha = -1.7

    report = export_lora_gguf(delta, alpha, tmp_path / "a.gguf", config=model.config, calibration=calibration)
    fields, tensors = read_gguf(tmp_path / "a.gguf")

    rank = 2 * 4
    assert report["rank"] == rank and report["exact"]
    assert fields["general.architecture"] == arch and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == pytest.approx(rank)
    assert fields["weightsteer.fingerprint"] == delta.meta["fingerprint"]
    assert fields["weightsteer.alpha"] == alpha
    assert json.loads(fields["weightsteer.calibration"])["doses"][0]["pos"]["coef"] == 2.25
    expected_names = {llama_cpp_name(n) + suffix for n in delta.names for suffix in (".lora_a", ".lora_b")}
    assert set(tensors) == expected_names

    heads = {"q_proj": model.config.num_attention_heads, "k_proj": model.config.num_key_value_heads}
    for name, part in delta.parts.items():
        a, b = tensors[llama_cpp_name(name) + ".lora_a"], tensors[llama_cpp_name(name) + ".lora_b"]
        # ggml dimensions, innermost first, as llama.cpp checks them against the base tensor
        assert list(a.shape) == [part.shape[1], rank] and list(b.shape) == [rank, part.shape[0]]
        A = np.asarray(a.data, dtype=np.float64).reshape(rank, part.shape[1])
        B = np.asarray(b.data, dtype=np.float64).reshape(part.shape[0], rank)
        product = B @ A
        module = name.split(".")[-2]
        if arch == "llama" and module in heads:
            product = undo_rope_interleave(product, heads[module])
        expected = alpha * part.dense().double().numpy()
        np.testing.assert_allclose(product, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_llama_q_and_k_rows_really_are_reordered(base_tokenizer, tmp_path):
    """Without undoing the reordering, B @ A of q_proj is not alpha * dW: the test above has teeth."""
    model, _ = make_tiny("llama", base_tokenizer)
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path))
    export_lora_gguf(delta, 1.0, tmp_path / "a.gguf", config=model.config)
    _, tensors = read_gguf(tmp_path / "a.gguf")
    q = next(n for n in delta.names if n.endswith("q_proj.weight"))
    a, b = tensors[llama_cpp_name(q) + ".lora_a"], tensors[llama_cpp_name(q) + ".lora_b"]
    product = np.asarray(b.data, np.float64).reshape(-1, a.data.shape[0]) @ np.asarray(a.data, np.float64)
    assert not np.allclose(product, delta.parts[q].dense().double().numpy(), atol=1e-6)


def test_an_architecture_llama_cpp_is_not_named_for_is_refused(tiny_llama, tmp_path):
    model, _ = tiny_llama
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path))
    model.config.model_type = "gpt_neox"
    with pytest.raises(WeightsteerError, match="cannot write GGUF for a 'gpt_neox' model"):
        export_lora_gguf(delta, 1.0, tmp_path / "a.gguf", config=model.config)
    assert not (tmp_path / "a.gguf").exists()


def test_export_gguf_needs_the_base_model(tiny_llama, tmp_path, capsys):
    """A direction of a model that is not embedded: one line asking for --model, nothing written."""
    model, _ = tiny_llama
    ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path)).save(tmp_path / "d.safetensors")
    code = main(["export", "--delta", str(tmp_path / "d.safetensors"), "--alpha", "1", "--format", "gguf",
                 "--out", str(tmp_path / "a.gguf")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--model" in err[0]
    assert not (tmp_path / "a.gguf").exists()
