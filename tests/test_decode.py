"""decode.decode against independent computations: HF generate one prompt at a time, full forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_calibrate import untie_head
from transformers.cache_utils import DynamicLayer

from weightsteer import chat
from weightsteer.decode import ReservedLayer, decode, positions_of, sample_rows

PROMPTS = ["Hi.", "What is the capital of France, and why is it there?", "Tell me a story about a cat.",
           "Why?", "Explain how a bicycle stays upright while it moves forward at speed."]


@pytest.fixture
def model_tok(tiny, base_tokenizer):
    model, tokenizer = tiny
    # float64: no near-ties that padding's rounding could flip; an untied head: varied tokens
    return untie_head(model).double(), tokenizer


def rendered(tokenizer):
    return [chat.render(tokenizer, chat.messages(p)) for p in PROMPTS]


def alone_greedy(model, tokenizer, text: str, T: int, stop: int) -> list[int]:
    """HF generate on one unpadded prompt, cut after the first stop token."""
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=T, do_sample=False, eos_token_id=stop, pad_token_id=stop)
    new = out[0, enc.input_ids.shape[1]:].tolist()
    return new[:new.index(stop) + 1] if stop in new else new


def test_batched_greedy_equals_hf_generate_one_prompt_at_a_time(model_tok):
    model, tokenizer = model_tok
    texts = rendered(tokenizer)
    enc = chat.encode(tokenizer, texts)
    first = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=12, stop_ids=[-1])
    # a stop token some rows produce and others do not: rows finish at different steps
    stop = next(t for row in first.tokens for t in row
                if any(t not in other for other in first.tokens))
    got = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=12, stop_ids=[stop])
    expected = [alone_greedy(model, tokenizer, t, 12, stop) for t in texts]
    assert got.tokens == expected
    assert any(len(t) < 12 for t in expected) and any(len(t) == 12 for t in expected)


def test_kept_logprobs_equal_a_teacher_forced_pass(model_tok):
    model, tokenizer = model_tok
    texts = rendered(tokenizer)
    enc = chat.encode(tokenizer, texts)
    got = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=6, stop_ids=[-1], keep_logprobs=True)
    for text, tokens, logprobs in zip(texts, got.tokens, got.logprobs, strict=True):
        prompt = tokenizer(text, add_special_tokens=False).input_ids
        ids = torch.tensor([prompt + tokens])
        with torch.no_grad():
            full = model(input_ids=ids).logits[0, len(prompt) - 1:-1].log_softmax(-1)
        assert logprobs.shape == full.shape
        torch.testing.assert_close(logprobs, full.float(), rtol=1e-5, atol=1e-5)


def hand_sampled(model, tokenizer, text: str, T: int, temperature: float, seed: int) -> list[int]:
    """Sampling by hand: full forward passes (no cache), numpy inverse CDF, the same uniform stream."""
    gen = torch.Generator().manual_seed(seed)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    out = []
    for _ in range(T):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1].double().numpy()
        z = logits / temperature
        p = np.exp(z - z.max())
        cdf = np.cumsum(p / p.sum())
        u = torch.rand(1, generator=gen, dtype=torch.float64).item()
        out.append(int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)))
    return out


def test_sampling_follows_each_rows_seed_whatever_the_batch(model_tok):
    model, tokenizer = model_tok
    texts = rendered(tokenizer)
    enc = chat.encode(tokenizer, texts)
    seeds = [11, 12, 13, 14, 15]
    together = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=8, stop_ids=[-1],
                      temperature=0.8, seeds=seeds)
    expected = [hand_sampled(model, tokenizer, t, 8, 0.8, s) for t, s in zip(texts, seeds, strict=True)]
    assert together.tokens == expected
    pair = chat.encode(tokenizer, texts[3:])
    assert decode(model, pair.input_ids, pair.attention_mask, max_new_tokens=8, stop_ids=[-1],
                  temperature=0.8, seeds=seeds[3:]).tokens == expected[3:]


def test_sampling_needs_a_seed_per_row(model_tok):
    model, tokenizer = model_tok
    enc = chat.encode(tokenizer, rendered(tokenizer))
    with pytest.raises(ValueError, match="seed"):
        decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=2, stop_ids=[-1], temperature=1.0)


def test_positions_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert positions_of(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_greedy_continuations_stop_where_a_stop_string_appears(model_tok):
    from weightsteer.evals import scoring

    model, tokenizer = model_tok
    texts = rendered(tokenizer)
    full = scoring.greedy_continuations(model, tokenizer, texts, max_new_tokens=10, progress=False)
    stop = next(t[len(t) // 2:len(t) // 2 + 2] for t in full if len(t) > 4)  # text that occurs mid-reply
    got = scoring.greedy_continuations(model, tokenizer, texts, max_new_tokens=10, stop=stop, progress=False)
    for text, reply, cut in zip(texts, full, got, strict=True):
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=10, do_sample=False, stop_strings=[stop], tokenizer=tokenizer,
                             pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
        assert cut == expected.split(stop)[0] == reply.split(stop)[0]


def test_sampled_rows_follow_a_numpy_inverse_cdf():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 500, generator=gen) * 4
    seeds = list(range(40))
    picks = sample_rows(logits, 0.7, [torch.Generator().manual_seed(s) for s in seeds])
    for row, seed, pick in zip(logits.double().numpy(), seeds, picks.tolist(), strict=True):
        p = np.exp((row - row.max()) / 0.7)
        cdf = np.cumsum(p / p.sum())
        u = torch.rand(1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).item()
        assert pick == min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def test_reserved_layer_holds_what_transformers_dynamic_layer_holds():
    """Updates past the reserved room (the buffer grows) and rows dropped between updates."""
    gen = torch.Generator().manual_seed(0)
    reserved, dynamic = ReservedLayer(reserve=3), DynamicLayer()

    def step(n_rows: int, n_tokens: int) -> None:
        k, v = (torch.randn(n_rows, 2, n_tokens, 4, generator=gen) for _ in range(2))
        got, expected = reserved.update(k, v), dynamic.update(k, v)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)

    step(5, 4)
    for _ in range(5):  # past the 3 reserved tokens
        step(5, 1)
    for layer in (reserved, dynamic):
        layer.batch_select_indices(torch.tensor([0, 2, 3]))
    step(3, 2)
    assert reserved.get_seq_length() == dynamic.get_seq_length() == 11
    assert reserved.buffers[0].shape[-2] >= 11
