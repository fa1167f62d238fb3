"""steer_rows against models whose weights were set to W + alpha * B @ A by hand, one alpha at a time."""

from __future__ import annotations

import copy

import pytest
import torch
from test_calibrate import untie_head
from test_matmuls import needs_bf16

import weightsteer as ws
from weightsteer import chat, matmuls
from weightsteer.decode import decode
from weightsteer.delta import LowRank, WeightDelta
from weightsteer.showcase import greedy_answers
from weightsteer.steer import steer
from weightsteer.steer_rows import rows_steerable, steer_rows

PROMPTS = ["Hi.", "Tell me a story about a cat.", "Explain how a bicycle stays upright while it moves."]
ALPHAS = [-2.0, 0.0, 1.5]


@pytest.fixture
def model_tok(tiny):
    model, tokenizer = tiny
    # float64: no near-ties for rounding to flip; an untied head: varied greedy tokens
    return untie_head(model).double(), tokenizer


def random_direction(model, rank: int = 3, scale: float = 0.3) -> WeightDelta:
    """A factored direction on every linear layer of the decoder (attention and MLP)."""
    gen = torch.Generator().manual_seed(1)
    parts = {}
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and ".layers." in name:
            out_dim, in_dim = module.weight.shape
            parts[f"{name}.weight"] = LowRank(scale * torch.randn(out_dim, rank, generator=gen, dtype=torch.float64),
                                              torch.randn(rank, in_dim, generator=gen, dtype=torch.float64) / in_dim**0.5)
    return WeightDelta(parts)


def merged_by_hand(model, delta: WeightDelta, alpha: float):
    """A copy of the model whose weights are W + alpha * B @ A, in plain float64 torch."""
    copied = copy.deepcopy(model)
    params = dict(copied.named_parameters())
    with torch.no_grad():
        for name, part in delta.parts.items():
            params[name] += alpha * (part.B.double() @ part.A.double())
    return copied


def test_each_row_gets_the_logits_of_its_own_alphas_merged_model(model_tok):
    model, tokenizer = model_tok
    delta = random_direction(model)
    enc = chat.encode(tokenizer, [chat.render(tokenizer, chat.messages(p)) for p in PROMPTS] * len(ALPHAS))
    with torch.no_grad(), steer_rows(model, delta, [a for a in ALPHAS for _ in PROMPTS]):
        got = model(**enc).logits
    n = len(PROMPTS)
    for k, alpha in enumerate(ALPHAS):
        with torch.no_grad():
            expected = merged_by_hand(model, delta, alpha)(**{key: v[k * n:(k + 1) * n] for key, v in enc.items()}).logits
        mask = enc.attention_mask[k * n:(k + 1) * n].bool()
        torch.testing.assert_close(got[k * n:(k + 1) * n][mask], expected[mask], rtol=1e-9, atol=1e-9)
    first, last = (got[k * n:(k + 1) * n][mask] for k in (0, len(ALPHAS) - 1))
    assert (first - last).abs().max() > 0.1  # the alphas really steer differently


def test_greedy_decoding_follows_rows_that_stop_early(model_tok):
    model, tokenizer = model_tok
    delta = random_direction(model)
    texts = [chat.render(tokenizer, chat.messages(p)) for p in PROMPTS]
    enc = chat.encode(tokenizer, texts * len(ALPHAS))
    merged = [merged_by_hand(model, delta, alpha) for alpha in ALPHAS]
    alone = chat.encode(tokenizer, texts)
    runs = [decode(m, alone.input_ids, alone.attention_mask, max_new_tokens=10, stop_ids=[-1]).tokens for m in merged]
    # a stop token some rows produce and others do not: rows leave the batch at different steps
    every = [row for run in runs for row in run]
    stop = next(t for row in every for t in row[1:] if sum(t in other for other in every) < len(every) // 2)
    expected = [row for m in merged for row in
                decode(m, alone.input_ids, alone.attention_mask, max_new_tokens=10, stop_ids=[stop]).tokens]
    with steer_rows(model, delta, [a for a in ALPHAS for _ in PROMPTS]) as rows:
        got = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=10, stop_ids=[stop],
                     keep_rows=rows.keep).tokens
    assert got == expected
    assert any(len(t) < 10 for t in expected) and any(len(t) == 10 for t in expected)
    assert len({tuple(t) for t in expected}) > len(PROMPTS)  # the alphas gave different answers


def test_answers_in_one_batch_equal_answers_one_alpha_at_a_time(model_tok):
    model, tokenizer = model_tok
    delta = random_direction(model)
    dense = WeightDelta({name: part.dense() for name, part in delta.parts.items()})
    assert rows_steerable(model, delta) and not rows_steerable(model, dense)
    together = greedy_answers(model, tokenizer, delta, PROMPTS, ALPHAS, 8)  # steer_rows
    one_by_one = greedy_answers(model, tokenizer, dense, PROMPTS, ALPHAS, 8)  # steer, alpha by alpha
    assert together == one_by_one
    assert list(together) == [str(a) for a in ALPHAS] and len(set(map(tuple, together.values()))) == len(ALPHAS)


def test_only_factored_directions_on_unshared_plain_linear_layers_are_batched(model_tok):
    model, _ = model_tok
    delta = random_direction(model)
    vocab, hidden = model.get_input_embeddings().weight.shape
    name = next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)
    on_the_embedding = WeightDelta({**delta.parts, name: LowRank(torch.ones(vocab, 1), torch.ones(1, hidden))})
    assert not rows_steerable(model, on_the_embedding)
    tied = copy.deepcopy(model)
    first, second = (layer.mlp.up_proj for layer in tied.model.layers[:2])
    second.weight = first.weight  # one weight in two layers: a hook would steer only one of them
    assert rows_steerable(tied, delta) is False
    with pytest.raises(ValueError, match="factored"):
        with steer_rows(model, on_the_embedding, [1.0]):
            pass


def test_a_batch_of_another_size_is_refused_and_the_hooks_removed(model_tok):
    model, tokenizer = model_tok
    delta = random_direction(model)
    enc = chat.encode(tokenizer, PROMPTS)
    with torch.no_grad():
        before = model(**enc).logits
        with pytest.raises(ValueError, match="3 rows under steer_rows with 2 alphas"):
            with steer_rows(model, delta, [1.0, 2.0]):
                model(**enc)
        assert torch.equal(model(**enc).logits, before)


@needs_bf16
@pytest.mark.slow
def test_on_the_embedded_model_with_bf16_products_rows_are_as_close_to_float32_as_merged_weights():
    """With bf16 products neither path is float32's model: the merged weights are rounded to bf16 with
    alpha * dW in them, steer_rows rounds W and adds a bf16 B @ (A @ x). Each must be as close to the
    float32 merged model as the other (trained mood and honesty directions: mean KL 0.8-1.4e-3 nats
    for both when written; this random one 1.3e-3 against 1.5e-3)."""
    model, tokenizer = ws.load_model("smollm2-135m")
    gen = torch.Generator().manual_seed(0)
    parts = {}
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and ".layers." in name:
            out_dim, in_dim = module.weight.shape
            B, A = torch.randn(out_dim, 8, generator=gen), torch.randn(8, in_dim, generator=gen)
            # alpha = 1 moves each weight by 3% of its norm, as the calibrated trained directions do
            B *= 0.03 * float(module.weight.norm()) / float((B @ A).norm())
            parts[f"{name}.weight"] = LowRank(B, A)
    delta = WeightDelta(parts)
    enc = chat.encode(tokenizer, [chat.render(tokenizer, chat.messages(p)) for p in PROMPTS])
    mask = enc.attention_mask.bool()

    def logprobs(rows: bool, alpha: float = 1.0):
        with torch.no_grad(), (steer_rows(model, delta, [alpha] * len(PROMPTS)) if rows else steer(model, delta, alpha)):
            return model(**enc).logits.float().log_softmax(-1)[mask]

    reference = logprobs(rows=False)
    assert (reference - logprobs(rows=False, alpha=0.0)).abs().max() > 1.0  # it steers
    matmuls.set_matmul_dtype(model, "bfloat16")
    merged, rows = logprobs(rows=False), logprobs(rows=True)

    def mean_kl(q):
        return float((reference.exp() * (reference - q)).sum(-1).mean())

    assert 0 < mean_kl(rows) < 1.5 * mean_kl(merged)

