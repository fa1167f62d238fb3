import types

import numpy as np
import pytest
import torch
from conftest import make_tiny

from weightsteer import chat
from weightsteer.adapters import decoder_layers
from weightsteer.baselines import (
    ACTIVATION_METHODS,
    ActivationSteering,
    fit_activation_method,
    load_activation_method,
    save_activation_method,
)
from weightsteer.baselines import directions as D
from weightsteer.baselines.activation import last_token_states, output_weight, shift
from weightsteer.baselines.hooks import layer_hooks
from weightsteer.behaviours import load_behaviour
from weightsteer.errors import WeightsteerError

N_QUESTIONS = 8
RESIDUAL_METHODS = [m for m in ACTIVATION_METHODS if m != "sspace"]  # one vector per layer on the residual


@pytest.fixture(scope="module")
def model_and_tok(base_tokenizer):
    return make_tiny("llama", base_tokenizer)


@pytest.fixture(scope="module")
def fitted(model_and_tok):
    model, tok = model_and_tok
    return {name: fit_activation_method(name, model, tok, load_behaviour("honesty"), n_questions=N_QUESTIONS)
            for name in ACTIVATION_METHODS}


@pytest.fixture(scope="module")
def batch(model_and_tok):
    _, tok = model_and_tok
    texts = [chat.render(tok, chat.messages(q)) for q in ("What is rain?", "Name a prime number bigger than ten.")]
    return chat.encode(tok, texts)


@torch.no_grad()
def logits(model, batch):
    return model(**batch).logits


def hooks(model) -> list[set]:
    return [set(layer._forward_hooks) for layer in decoder_layers(model)]


def pos_neg_states(model, tok, layers):
    (pos, neg), = load_behaviour("honesty").persona_prompts(1)
    questions = list(load_behaviour("honesty").questions[:N_QUESTIONS])
    render = [[chat.render(tok, chat.messages(q, system=s)) for q in questions] for s in (pos, neg)]
    return [last_token_states(model, tok, texts, layers) for texts in render]


# ---- fitted directions ------------------------------------------------------------------------

@pytest.mark.parametrize("name", RESIDUAL_METHODS)
def test_directions_have_unit_rows_on_the_middle_layers(fitted, name):
    method = fitted[name]
    assert method.layers == [1, 2]  # 25-75% of 4 layers
    k = 4 if name == "topk_clusters" else 1
    for layer in method.layers:
        assert method.vectors[layer].shape == (k, 64)
        torch.testing.assert_close(method.vectors[layer].norm(dim=-1), torch.ones(k))
        assert method.scales[layer] > 0


def test_scale_is_the_median_last_token_norm_from_an_independent_forward(model_and_tok, fitted):
    model, tok = model_and_tok
    (pos, neg), = load_behaviour("honesty").persona_prompts(1)
    questions = list(load_behaviour("honesty").questions[:N_QUESTIONS])
    norms = {1: [], 2: []}
    with torch.no_grad():
        for system in (pos, neg):
            for q in questions:  # one prompt at a time: no padding at all
                ids = chat.encode(tok, [chat.render(tok, chat.messages(q, system=system))])
                hidden = model(**ids, output_hidden_states=True).hidden_states
                for layer in norms:
                    norms[layer].append(hidden[layer + 1][0, -1].norm())
    for layer, values in norms.items():
        assert fitted["mean_diff"].scales[layer] == pytest.approx(float(torch.stack(values).median()), rel=1e-4)


def test_mean_diff_is_the_normalised_mean_difference(model_and_tok, fitted):
    model, tok = model_and_tok
    pos, neg = pos_neg_states(model, tok, [1, 2])
    for j, layer in enumerate([1, 2]):
        mean = (pos[:, j] - neg[:, j]).mean(0)
        torch.testing.assert_close(fitted["mean_diff"].vectors[layer][0], mean / mean.norm())


def test_reference_mean_centred_equals_mean_diff_with_equal_counts(fitted):
    """Corpus-mean centring: mean(pos) - mean(pos and neg), unit, which is the direction of mean(pos) -
    mean(neg) (the seed's table shows the two rows identical)."""
    for layer in (1, 2):
        torch.testing.assert_close(fitted["mean_centred"].vectors[layer], fitted["mean_diff"].vectors[layer])
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(2, 4, generator=gen,
                                                                                  dtype=torch.float64) + 3
    centred = pos.mean(0) - torch.cat([pos, neg]).mean(0)
    torch.testing.assert_close(D.mean_centred(pos, neg)[0], centred / centred.norm())
    difference = pos.mean(0) - neg.mean(0)  # = centred * 7 / 2: parallel even with unequal counts
    torch.testing.assert_close(D.mean_centred(pos, neg)[0], difference / difference.norm())


def test_neutral_bisector_differs_from_mean_diff_on_a_model(fitted):
    for layer in (1, 2):
        cos = float(fitted["neutral_bisector"].vectors[layer][0] @ fitted["mean_diff"].vectors[layer][0])
        assert cos < 0.999


def test_neutral_bisector_weighs_both_persona_shifts_equally():
    neutral = torch.zeros(3, 2)
    pos = torch.tensor([[10.0, 0.0]]).repeat(3, 1)  # POS moves far from the default along x
    neg = torch.tensor([[0.0, 1.0]]).repeat(3, 1)  # NEG moves a little along y
    torch.testing.assert_close(D.mean_diff(pos, neg)[0], torch.tensor([10.0, -1.0]) / 101 ** 0.5)
    torch.testing.assert_close(D.neutral_bisector(pos, neg, neutral)[0], torch.tensor([1.0, -1.0]) / 2 ** 0.5)
    # equal-length shifts: the two definitions agree
    torch.testing.assert_close(D.neutral_bisector(pos, -pos, neutral), D.mean_diff(pos, -pos))


def test_pca_sign_follows_the_majority_not_the_mean():
    # 7 small differences along +x and 3 large ones along -x: the mean points along -x
    diffs = torch.tensor([[1.0, 0.0]] * 7 + [[-5.0, 0.0]] * 3) + 0.01 * torch.randn(10, 2)
    zero = torch.zeros_like(diffs)
    assert D.mean_diff(diffs, zero)[0, 0] < 0
    v = D.pca(diffs, zero)[0]
    assert v[0] > 0.99
    assert D.pca(-diffs, zero)[0][0] < -0.99


def reference_pca(diffs):
    """The reference's rule in float64 numpy: first right singular vector of the centred differences,
    positive when most centred projections are, the largest one deciding a tie."""
    centred = diffs.double().numpy() - diffs.double().numpy().mean(0)
    v = np.linalg.svd(centred, full_matrices=False)[2][0]
    proj = centred @ v
    share = (proj > 0).mean()
    sign = np.sign(proj[np.abs(proj).argmax()]) if share == 0.5 else (1 if share > 0.5 else -1)
    return sign * v


def test_fitted_pca_is_the_reference_pca(model_and_tok, fitted):
    model, tok = model_and_tok
    pos, neg = pos_neg_states(model, tok, [1, 2])
    for j, layer in enumerate([1, 2]):
        expected = torch.from_numpy(reference_pca(pos[:, j] - neg[:, j])).float()
        torch.testing.assert_close(fitted["pca"].vectors[layer][0], expected, rtol=1e-3, atol=1e-4)


def test_pca_tie_goes_to_the_largest_centred_projection():
    cases = [torch.tensor([[3.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]]),  # centred 2.5, .5, -1.5, -1.5: a tie
             torch.tensor([[4.0, 0.0], [1.0, 0.01], [0.0, 0.0], [-1.0, -0.01]]),  # centred x 3, 0, -1, -2
             torch.tensor([[5.0, 0], [-1.0, 0], [-1.0, 0], [-3.0, 0]])]  # centred 5, -1, -1, -3: 1 of 4 positive
    for d in cases:
        torch.testing.assert_close(D.pca(d, torch.zeros_like(d))[0].double(),
                                   torch.from_numpy(reference_pca(d)), rtol=1e-5, atol=1e-6)
    exact_tie = torch.tensor([[5.0, 0], [1.0, 0], [-2.0, 0], [-4.0, 0]])  # centred 5, 1, -2, -4: two each side
    assert D.pca(exact_tie, torch.zeros_like(exact_tie))[0][0] > 0.99  # the largest, +5, decides


def test_clusters_recover_separated_groups():
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:3]
    diffs = torch.cat([c + 0.05 * torch.randn(10, 8, generator=gen) for c in centres])
    found = D.cluster_directions(diffs, torch.zeros_like(diffs), k=3, seed=0)
    assert (found @ centres.T).max(0).values.min() > 0.99  # every true centre has a centroid


def test_clusters_pointing_to_neg_are_flipped_toward_pos():
    """Differences in three groups: 8 along +x, 5 along +y and 3 along -x. Cosine k-means (k=3) gives
    the -x group a centroid of its own, which projects negatively on the mean difference (5, 5)/16; the
    reference flips it, so +coef never pushes toward NEG."""
    gen = torch.Generator().manual_seed(1)
    noise = lambda n: 0.01 * torch.randn(n, 3, generator=gen)  # noqa: E731
    diffs = torch.cat([torch.tensor([[1.0, 0, 0]]) + noise(8), torch.tensor([[0, 1.0, 0]]) + noise(5),
                       torch.tensor([[-1.0, 0, 0]]) + noise(3)])
    found = D.cluster_directions(diffs, torch.zeros_like(diffs), k=3, seed=0)
    assert bool(((found @ diffs.mean(0)) >= 0).all())
    neg_group = diffs[13:].mean(0) / diffs[13:].mean(0).norm()  # that group's centroid, by hand
    assert float(neg_group @ diffs.mean(0)) < 0
    assert min(float((row + neg_group).norm()) for row in found) < 1e-5  # present, flipped
    # the flip itself on hand-made centroids: only those with a negative projection change sign
    centroids = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [-1.0, 0, 0], [0.1, 0.9, 0]])
    g = diffs.mean(0)
    expected = torch.stack([c if float(c @ g) >= 0 else -c for c in centroids])
    torch.testing.assert_close(D.toward_pos(centroids, diffs), expected)


def test_down_proj_subspace_lies_in_the_top_singular_subspace_of_down_proj(model_and_tok, fitted):
    model, _ = model_and_tok
    for layer in (1, 2):
        u = torch.linalg.svd(output_weight(model, layer), full_matrices=False)[0]
        basis = u[:, :16]  # a quarter of the 64 residual dimensions
        v = fitted["down_proj_subspace"].vectors[layer][0]
        assert float((basis.T @ v).norm()) == pytest.approx(1.0, abs=1e-5)
        assert float(v @ fitted["mean_diff"].vectors[layer][0]) < 0.99


# ---- application ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ACTIVATION_METHODS)
def test_coef_zero_is_exact_and_coef_nonzero_steers(model_and_tok, fitted, batch, name):
    model, _ = model_and_tok
    base, before = logits(model, batch), hooks(model)
    with fitted[name].apply(model, 0.0):
        assert torch.equal(logits(model, batch), base)
    with fitted[name].apply(model, 4.0):
        assert (logits(model, batch) - base).abs().max() > 1e-3
    assert hooks(model) == before
    assert torch.equal(logits(model, batch), base)


def test_first_steered_layer_output_moves_by_coef_times_scale_times_v(model_and_tok, fitted, batch):
    model, _ = model_and_tok
    method = fitted["mean_diff"]
    with torch.no_grad():
        base = model(**batch, output_hidden_states=True).hidden_states[2]  # output of layer 1
        with method.apply(model, 0.5):  # our hooks run first, so hidden_states shows the steered stream
            steered = model(**batch, output_hidden_states=True).hidden_states[2]
    expected = 0.5 * method.scales[1] * method.vectors[1][0]
    torch.testing.assert_close(steered - base, expected.expand_as(base), atol=1e-6, rtol=1e-5)


def test_hooks_are_removed_after_an_exception(model_and_tok, fitted, batch):
    model, _ = model_and_tok
    base, before = logits(model, batch), hooks(model)
    with pytest.raises(RuntimeError, match="boom"), fitted["pca"].apply(model, 3.0):
        assert hooks(model) != before
        raise RuntimeError("boom")
    assert hooks(model) == before
    assert torch.equal(logits(model, batch), base)


def test_cosine_gated_uses_the_reference_tau_of_zero(fitted):
    assert fitted["cosine_gated"].tau == 0.0


def test_cosine_gate_at_tau_zero_is_abs_cos_from_the_formula():
    gen = torch.Generator().manual_seed(0)
    v, h = torch.nn.functional.normalize(torch.randn(1, 6, generator=gen), dim=-1), torch.randn(2, 5, 6, generator=gen)
    out = shift("cosine_gated", v, 3.0, 0.0, h)
    # h + coef * |cos(h, v)| * v, computed in float64 by hand
    h64, v64 = h.double(), v[0].double()
    cos = (h64 @ v64) / h64.norm(dim=-1)
    torch.testing.assert_close(out.double(), h64 + 3.0 * cos.abs()[..., None] * v64, rtol=1e-5, atol=1e-6)


def test_cosine_gate():
    v = torch.tensor([[1.0, 0.0]])
    h = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 1.0]]])  # cos 1, 0 and -0.707
    out = shift("cosine_gated", v, 10.0, 0.1, h)
    torch.testing.assert_close(out - h, torch.tensor([[[9.0, 0.0], [0.0, 0.0], [10 * (0.5 ** 0.5 - 0.1), 0.0]]]))
    assert torch.equal(shift("cosine_gated", v, 10.0, 1.0, h), h)


def test_cosine_gated_with_tau_one_is_a_no_op(model_and_tok, fitted, batch):
    model, _ = model_and_tok
    base = logits(model, batch)
    gated = fitted["cosine_gated"]
    open_gate = ActivationSteering("cosine_gated", vectors=gated.vectors, scales=gated.scales, tau=0.0)
    closed_gate = ActivationSteering("cosine_gated", vectors=gated.vectors, scales=gated.scales, tau=1.0)
    with closed_gate.apply(model, 100.0):
        assert torch.equal(logits(model, batch), base)
    with open_gate.apply(model, 100.0):
        assert (logits(model, batch) - base).abs().max() > 1e-3


def test_clusters_add_the_most_aligned_centroid_per_token():
    centroids = torch.eye(3)
    h = torch.tensor([[[0.1, 2.0, 0.0], [0.0, 0.2, -3.0], [5.0, 1.0, 1.0]]])
    out = shift("topk_clusters", centroids, 2.0, 0.1, h)
    torch.testing.assert_close(out - h, 2.0 * torch.eye(3)[[1, 1, 0]][None])


class TupleLayer(torch.nn.Module):
    def forward(self, x):
        return x * 2, "extra"


def test_hooks_handle_layers_that_return_tuples():
    model = torch.nn.Module()
    model.config = types.SimpleNamespace(num_hidden_layers=2)
    model.layers = torch.nn.ModuleList([TupleLayer(), TupleLayer()])
    x = torch.ones(1, 2, 3)
    with layer_hooks(model, {1: lambda h: h + 1}):
        out, extra = model.layers[1](x)
    assert torch.equal(out, torch.full((1, 2, 3), 3.0)) and extra == "extra"
    assert torch.equal(model.layers[1](x)[0], 2 * x)


# ---- files and errors -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ACTIVATION_METHODS)
def test_save_load_round_trip_gives_identical_logits(model_and_tok, fitted, batch, name, tmp_path):
    model, _ = model_and_tok
    save_activation_method(fitted[name], tmp_path / "v.safetensors")
    loaded = load_activation_method(tmp_path / "v.safetensors")
    assert (loaded.name, loaded.meta) == (name, fitted[name].meta)
    if name != "sspace":
        assert (loaded.tau, loaded.scales) == (fitted[name].tau, fitted[name].scales)
    with fitted[name].apply(model, 2.0):
        expected = logits(model, batch)
    with loaded.apply(model, 2.0):
        assert torch.equal(logits(model, batch), expected)


def test_vectors_refuse_another_model(fitted, base_tokenizer):
    other, _ = make_tiny("llama", base_tokenizer, seed=1)
    with pytest.raises(WeightsteerError, match="fitted on"):
        fitted["mean_diff"].apply(other, 1.0)


def test_bad_inputs_are_reported(model_and_tok, tmp_path):
    model, tok = model_and_tok
    with pytest.raises(WeightsteerError, match="unknown activation method"):
        fit_activation_method("steer_harder", model, tok, load_behaviour("honesty"))
    with pytest.raises(WeightsteerError, match="no activation steering vectors"):
        load_activation_method(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(WeightsteerError, match="not a readable"):
        load_activation_method(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsteerError, match="alpha must be a finite"):
        ActivationSteering("mean_diff", vectors={1: torch.ones(1, 64)}, scales={1: 1.0}).apply(model, float("nan"))
