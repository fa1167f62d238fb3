"""sspace against the reference's formulas recomputed in plain float64 torch on a tiny model: the S-space
direction of both residual writers per layer, full rank, and the per-token |cos| gate."""

import pytest
import torch
from conftest import make_tiny

from weightsteer import chat
from weightsteer.baselines import fit_activation_method, load_activation_method, save_activation_method
from weightsteer.baselines.activation import contrast_texts
from weightsteer.behaviours import load_behaviour
from weightsteer.errors import WeightsteerError

N_QUESTIONS = 6
WRITERS = ("self_attn.o_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def model_and_tok(base_tokenizer):
    return make_tiny("qwen3", base_tokenizer)


@pytest.fixture(scope="module")
def fitted(model_and_tok):
    model, tok = model_and_tok
    return fit_activation_method("sspace", model, tok, load_behaviour("honesty"), n_questions=N_QUESTIONS)


@torch.no_grad()
def outputs_one_at_a_time(model, tok, texts, module):
    """The module's output at the last token of each text, one unpadded forward pass per text."""
    rows = []
    handle = module.register_forward_hook(lambda m, a, out: rows.append(out[0, -1].double()))
    try:
        for text in texts:
            model(**tok(text, return_tensors="pt", add_special_tokens=False))
    finally:
        handle.remove()
    return torch.stack(rows)


def reference_push(weight, y_pos, y_neg):
    """(U, sqrt(S), d_hat) from the reference formulas: x_S = (y - b) U / sqrt(S) (no bias here)."""
    u, s, _ = torch.linalg.svd(weight.double(), full_matrices=False)
    x_pos, x_neg = y_pos @ u / s.sqrt(), y_neg @ u / s.sqrt()
    d = x_pos.mean(0) - x_neg.mean(0)
    return u, s.sqrt(), d / d.norm()


def test_both_residual_writers_of_the_middle_layers_full_rank(model_and_tok, fitted):
    model, _ = model_and_tok
    names = sorted(fitted.states)
    assert names == sorted(f"model.layers.{i}.{w}" for i in (1, 2) for w in WRITERS)
    for name, state in fitted.states.items():
        weight = model.get_submodule(name).weight
        assert state["U"].shape == (weight.shape[0], min(weight.shape))  # every mode kept


def test_direction_matches_the_reference_recomputed_in_float64(model_and_tok, fitted):
    model, tok = model_and_tok
    pos_texts, neg_texts = contrast_texts(tok, load_behaviour("honesty"), 1, N_QUESTIONS)
    for name, state in fitted.states.items():
        module = model.get_submodule(name)
        u, sqrt_s, d_hat = reference_push(module.weight, outputs_one_at_a_time(model, tok, pos_texts, module),
                                          outputs_one_at_a_time(model, tok, neg_texts, module))
        # the pushed output direction (d_hat * sqrt(S)) U^T does not depend on singular-vector signs
        expected = (d_hat * sqrt_s) @ u.T
        got = (state["d_hat"].double() * state["sqrt_s"].double()) @ state["U"].double().T
        torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-4)
        torch.testing.assert_close(state["sqrt_s"].double(), sqrt_s, rtol=1e-4, atol=1e-6)


def test_steered_output_is_the_gated_push_on_every_token(model_and_tok, fitted):
    """At the first steered writer (nothing upstream is steered), y' = y + coef |cos(x_S, d_hat)| (d_hat
    sqrt(S)) U^T per token, with x_S = y U / sqrt(S), computed here by hand in float64."""
    model, tok = model_and_tok
    name = "model.layers.1.self_attn.o_proj"
    module, state = model.get_submodule(name), fitted.states[name]
    text = chat.render(tok, chat.messages("Is it ever fine to lie to a friend?"))
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    seen = []
    with torch.no_grad():
        handle = module.register_forward_hook(lambda m, a, out: seen.append(out[0].double()))
        try:
            model(**ids)
            with fitted.apply(model, 3.0):
                handle.remove()  # register again so it runs after the steering hook
                handle = module.register_forward_hook(lambda m, a, out: seen.append(out[0].double()))
                model(**ids)
        finally:
            handle.remove()
    y, steered = seen
    u, sqrt_s, d_hat = (state[k].double() for k in ("U", "sqrt_s", "d_hat"))
    x_s = y @ u / sqrt_s
    gate = ((x_s @ d_hat) / x_s.norm(dim=-1)).abs()
    expected = y + 3.0 * gate[:, None] * ((d_hat * sqrt_s) @ u.T)
    torch.testing.assert_close(steered, expected, rtol=1e-4, atol=1e-5)
    assert gate.min() < gate.max()  # the gate really is per token


def test_round_trip_and_refusal(model_and_tok, fitted, base_tokenizer, tmp_path):
    model, tok = model_and_tok
    batch = chat.encode(tok, [chat.render(tok, chat.messages("Name a colour."))])
    save_activation_method(fitted, tmp_path / "s.safetensors")
    loaded = load_activation_method(tmp_path / "s.safetensors")
    with torch.no_grad(), fitted.apply(model, 2.0):
        expected = model(**batch).logits
    with torch.no_grad(), loaded.apply(model, 2.0):
        assert torch.equal(model(**batch).logits, expected)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, model(**batch).logits)
    other, _ = make_tiny("qwen3", base_tokenizer, seed=1)
    with pytest.raises(WeightsteerError, match="fitted on"):
        loaded.apply(other, 1.0)


def test_rank_keeps_the_modes_of_largest_contrast(model_and_tok):
    model, tok = model_and_tok
    method = fit_activation_method("sspace", model, tok, load_behaviour("honesty"), n_questions=N_QUESTIONS, rank=5)
    full = fit_activation_method("sspace", model, tok, load_behaviour("honesty"), n_questions=N_QUESTIONS)
    for name, state in method.states.items():
        assert state["U"].shape[1] == 5
        raw = full.states[name]["d_hat"]  # full rank, unit: the 5 modes of largest |d_S| are kept, renormalised
        top = raw.abs().topk(5).values
        torch.testing.assert_close(state["d_hat"].abs().sort().values, (top / top.norm()).sort().values,
                                   rtol=1e-4, atol=1e-6)
