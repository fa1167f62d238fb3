import pytest
import torch
from adapter_helpers import adapter_pair

import weightsteer as ws
from weightsteer.errors import WeightsteerError


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_bitwise_equal(model, saved):
    for name, param in model.named_parameters():
        assert torch.equal(param, saved[name]), name


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weights_restored_bit_for_bit_after_error(tiny_llama, tmp_path, error, dtype):
    model, _ = tiny_llama
    pos, neg = adapter_pair(model, "lora", tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    model.to(dtype)
    saved = snapshot(model)
    with pytest.raises(error):
        with ws.steer(model, delta, alpha=3.7):
            changed = [n for n, p in model.named_parameters() if not torch.equal(p, saved[n])]
            assert set(changed) == set(delta.names)
            raise error()
    assert_bitwise_equal(model, saved)


def test_steered_weights_are_w_plus_alpha_dw(tiny_qwen3, tmp_path):
    model, _ = tiny_qwen3
    pos, neg = adapter_pair(model, "oft", tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    saved = snapshot(model)
    dense = delta.dense()
    with ws.steer(model, delta, alpha=-0.5):
        params = dict(model.named_parameters())
        for name, d in dense.items():
            torch.testing.assert_close(params[name], saved[name] - 0.5 * d)
    assert_bitwise_equal(model, saved)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "abc", None])
def test_non_finite_alpha_is_refused(tiny_llama, tmp_path, alpha):
    model, _ = tiny_llama
    delta = ws.WeightDelta({}, {})
    with pytest.raises(WeightsteerError, match="finite number"):
        with ws.steer(model, delta, alpha):
            pass


def test_save_steered_checkpoint_reloads_with_steered_logits(tiny_llama, tmp_path):
    model, tok = tiny_llama
    pos, neg = adapter_pair(model, "ia3", tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    ws.save_steered(model, tok, delta, 2.0, tmp_path / "steered")
    reloaded, _ = ws.load_model(str(tmp_path / "steered"))
    ids = tok(["A short test."], return_tensors="pt").input_ids
    with torch.no_grad(), ws.steer(model, delta, 2.0):
        expected = model(ids).logits
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected)
