"""Tiny random models built from configs: for `weightsteer smoke`, the tests and nothing else.

They share the embedded model's tokenizer, so prompts, chat templates and token sets are real.
"""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from .models import DEFAULT_MODEL, embedded_dense_dir, prepare_tokenizer

# A Qwen3-style template of our own, with the enable_thinking switch.
QWEN3_STYLE_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def embedded_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(embedded_dense_dir(DEFAULT_MODEL))
    prepare_tokenizer(tokenizer)
    return tokenizer


def tiny_config(arch: str, vocab_size: int):
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                  tie_word_embeddings=True, pad_token_id=2, eos_token_id=2, bos_token_id=1)
    if arch == "qwen3":
        return Qwen3ForCausalLM, Qwen3Config(**common)
    if arch == "llama":
        return LlamaForCausalLM, LlamaConfig(**common)
    raise ValueError(f"unknown tiny architecture {arch!r}")


def tiny_model(arch: str, tokenizer, seed: int = 0):
    """(model, tokenizer): a random `arch` model; for qwen3 a copy of the tokenizer with a thinking template."""
    torch.manual_seed(seed)
    cls, config = tiny_config(arch, len(tokenizer))
    model = cls(config).eval()
    model.config.weightsteer_model = f"tiny-{arch}"
    if arch == "qwen3":
        tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
        prepare_tokenizer(tokenizer)
        tokenizer.chat_template = QWEN3_STYLE_TEMPLATE
    return model, tokenizer


def noisy_adapter(model, method: str, out_dir, seed: int, rank: int = 4) -> None:
    """Save a `method` adapter whose trainable weights are PEFT's init (the same for every seed, as in
    training) plus seeded noise: a stand-in for a trained adapter in tests and benchmarks. The base
    weights are left as they were; only PiSSA rewrites them, so only then are they copied first."""
    from peft import get_peft_model

    from .adapters import decoder_layers, middle_layers, peft_config, target_module_names

    targets = target_module_names(model, middle_layers(len(decoder_layers(model))))
    saved = {n: model.get_submodule(n).weight.detach().clone() for n in targets} if method == "pissa" else {}
    torch.manual_seed(0)
    peft_model = get_peft_model(model, peft_config(model, method, targets, rank))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(str(out_dir))
    peft_model.unload()
    with torch.no_grad():
        for n, w in saved.items():
            model.get_submodule(n).weight.copy_(w)
