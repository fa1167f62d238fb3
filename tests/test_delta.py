import copy

import pytest
import torch
from adapter_helpers import adapter_pair
from conftest import make_tiny, tiny_config
from peft import PeftModel

import weightsteer as ws
from weightsteer.adapters import LOW_RANK, METHODS
from weightsteer.delta import LowRank
from weightsteer.errors import WeightsteerError


def merged_state(model, adapter_dir):
    """The independent reference: PEFT's merge_and_unload on a full copy of the model."""
    merged = PeftModel.from_pretrained(copy.deepcopy(model), str(adapter_dir)).merge_and_unload()
    return {n: p.detach().float() for n, p in merged.named_parameters()}


@pytest.mark.parametrize("method", METHODS)
def test_dense_equals_difference_of_merged_models(tiny, method, tmp_path):
    model, _ = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pos, neg = adapter_pair(model, method, tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)

    # extraction leaves the base model exactly as it was (PiSSA rewrites weights on load)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name

    merged_pos, merged_neg = merged_state(model, pos), merged_state(model, neg)
    expected = {n: merged_pos[n] - merged_neg[n] for n in merged_pos}
    changed = {n for n, d in expected.items() if d.abs().max() > 0}
    dense = delta.dense()
    assert set(dense) == changed
    for name, value in dense.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5)
    assert delta.is_factored() == (method in LOW_RANK)
    if method in LOW_RANK:
        assert all(p.B.shape[1] <= 2 * 4 for p in delta.parts.values())


def test_factored_and_dense_give_same_steered_logits(tiny_llama, tmp_path):
    model, tok = tiny_llama
    pos, neg = adapter_pair(model, "lora", tmp_path)
    factored = ws.WeightDelta.from_adapters(model, pos, neg)
    dense = ws.WeightDelta(factored.dense(), factored.meta)
    ids = tok(["Hello there, how are you?"], return_tensors="pt").input_ids
    with ws.steer(model, factored, 1.5):
        a = model(ids).logits
    with ws.steer(model, dense, 1.5):
        b = model(ids).logits
    with torch.no_grad():
        base = model(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a - base).abs().max() > 1e-3


def test_save_load_roundtrip_and_metadata(tiny_qwen3, tmp_path):
    model, _ = tiny_qwen3
    pos, neg = adapter_pair(model, "dora", tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg, behaviour="honesty")
    delta.save(tmp_path / "d.safetensors")
    loaded = ws.WeightDelta.load(tmp_path / "d.safetensors")
    assert loaded.meta["behaviour"] == "honesty" and loaded.meta["method"] == "dora"
    assert loaded.meta["base_model"] == "tiny-qwen3"
    for name, value in delta.dense().items():
        assert torch.equal(loaded.dense()[name], value)


def test_norms_of_factored_match_dense():
    gen = torch.Generator().manual_seed(0)
    part = LowRank(torch.randn(8, 3, generator=gen), torch.randn(3, 5, generator=gen))
    delta = ws.WeightDelta({"w": part})
    assert delta.norms()["w"] == pytest.approx(float(part.dense().norm()), rel=1e-5)


def test_arithmetic(tiny_llama, tmp_path):
    model, _ = tiny_llama
    pos, neg = adapter_pair(model, "lora", tmp_path)
    a = ws.WeightDelta.from_adapters(model, pos, neg)
    combo = a + (-0.5) * a
    for name, value in combo.dense().items():
        torch.testing.assert_close(value, 0.5 * a.dense()[name])
    zero = a - a
    assert max(v.abs().max() for v in zero.dense().values()) < 1e-6


def test_refuses_other_model(tiny_llama, base_tokenizer, tmp_path):
    model, _ = tiny_llama
    pos, neg = adapter_pair(model, "lora", tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    other, _ = make_tiny("qwen3", base_tokenizer, seed=1)
    with pytest.raises(WeightsteerError, match="does not fit"):
        delta.check_fits(other)
    # without a fingerprint the shapes still catch another architecture
    delta.meta.pop("fingerprint")
    cls, config = tiny_config("llama", len(base_tokenizer))
    config.intermediate_size = 96
    with pytest.raises(WeightsteerError, match="has shape"):
        delta.check_fits(cls(config))


def test_corrupt_file_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(WeightsteerError, match="not a readable safetensors"):
        ws.WeightDelta.load(bad)
    with pytest.raises(WeightsteerError, match="no steering direction"):
        ws.WeightDelta.load(tmp_path / "missing.safetensors")
