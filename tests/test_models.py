import time

import pytest
import torch
from transformers import AutoModelForCausalLM

import weightsteer as ws
from weightsteer import chat
from weightsteer.errors import WeightsteerError
from weightsteer.models import EMBEDDED, embedded_dense_dir


def test_embedded_cache_matches_gguf_and_loads_fast(base_tokenizer):
    import importlib.util
    from pathlib import Path

    embedded_dense_dir("smollm2-135m")  # make sure the cache exists before timing
    started = time.time()
    model, tok = ws.load_model("smollm2-135m")
    assert time.time() - started < 30  # generous: the point is "no re-dequantizing"
    spec = EMBEDDED["smollm2-135m"]
    folder = Path(importlib.util.find_spec(spec.package).origin).parent
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=spec.gguf_file, dtype=torch.float32).eval()
    ids = tok(["The capital of France is"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf(ids).logits)
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_missing_local_folder_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsteerError, match="does not exist"):
        ws.load_model(str(tmp_path / "nope"))
    with pytest.raises(WeightsteerError, match="no config.json"):
        ws.load_model(str(tmp_path))


def test_unreachable_hub_id_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsteerError, match="cannot be reached.*smollm2-135m"):
        ws.load_model("someone/not-a-cached-model")


def test_thinking_switch_only_where_the_template_has_it(tiny_qwen3, base_tokenizer):
    _, qwen_tok = tiny_qwen3
    off = chat.render(qwen_tok, chat.messages("hi"))
    on = chat.render(qwen_tok, chat.messages("hi"), thinking=True)
    assert "<think>\n\n</think>" in off and "<think>" not in on
    assert not chat.supports_thinking(base_tokenizer)
    smol = chat.render(base_tokenizer, chat.messages("hi", system="Pretend you're an honest person."))
    assert "Pretend you're an honest person." in smol and "SmolLM" not in smol
    assert "SmolLM" in chat.render(base_tokenizer, chat.messages("hi"))  # the model's own default stays
