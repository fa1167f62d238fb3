import math

import numpy as np
import pytest
import torch
from adapter_helpers import adapter_pair

import weightsteer as ws
from weightsteer import chat
from weightsteer.baselines import fit_activation_method
from weightsteer.behaviours import calibration_questions, load_behaviour
from weightsteer.calibrate import (
    CalibrationResult,
    calibrate,
    calibrate_both_signs,
    kl_p95,
    load_calibration,
    save_calibration,
    search,
)
from weightsteer.errors import WeightsteerError
from weightsteer.methods import WeightSteering, prompt_baseline

QUESTIONS = calibration_questions()[:6]
T = 6


def untie_head(model, std: float = 0.1):
    """Random tiny models with tied embeddings repeat one token forever and predict an almost uniform
    next token; an untied random output head gives varied greedy text and logits with a real spread."""
    generator = torch.Generator().manual_seed(0)
    model.lm_head.weight = torch.nn.Parameter(std * torch.randn(model.lm_head.weight.shape, generator=generator))
    return model


@torch.no_grad()
def reference_kls(model, tok, method, coef, questions, T, stops=()):
    """One prompt at a time, no generate(), no padding, float64, explicit sums.
    Returns the per-token KLs and the generated tokens of each prompt."""
    values, generated = [], []
    for q in questions:
        ids = tok(chat.render(tok, chat.messages(q)), return_tensors="pt", add_special_tokens=False).input_ids
        n_prompt = ids.shape[1]
        with method.apply(model, coef):
            for _ in range(T):
                token = model(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, token.view(1, 1)], 1)
                if int(token) in stops:
                    break
            steered = model(ids).logits[0].double().log_softmax(-1)
        base = model(ids).logits[0].double().log_softmax(-1)
        for pos in range(n_prompt - 1, ids.shape[1] - 1):  # the positions that produced each new token
            p, log_p, log_q = steered[pos].exp(), steered[pos], base[pos]
            values.append(float((p * (log_p - log_q)).sum()))
        generated.append(ids[0, n_prompt:].tolist())
    return values, generated


@pytest.fixture
def varied_tiny(tiny):
    model, tok = tiny
    return untie_head(model), tok


def test_kl_p95_matches_a_direct_computation(varied_tiny):
    model, tok = varied_tiny
    method = fit_activation_method("mean_diff", model, tok, load_behaviour("honesty"), n_questions=8)
    expected, generated = reference_kls(model, tok, method, 0.3, QUESTIONS, T)
    assert len(expected) == T * len(QUESTIONS)
    assert kl_p95(model, tok, method, 0.3, QUESTIONS, T) == pytest.approx(np.percentile(expected, 95), rel=1e-4)
    assert kl_p95(model, tok, method, 0.0, QUESTIONS, T) == 0.0


def test_the_cached_base_prompts_give_the_same_kls_at_every_evaluation(varied_tiny, tmp_path):
    from weightsteer.calibrate import encode_prompts, token_kls

    model, tok = varied_tiny
    pos, neg = adapter_pair(model, "lora", tmp_path)
    method = WeightSteering("lora", delta=ws.WeightDelta.from_adapters(model, pos, neg))
    reused = encode_prompts(tok, QUESTIONS, model.device)
    for coef in (0.5, -2.0, 1.0):  # the first call fills the cache, later ones reuse it
        fresh = token_kls(model, tok, method, coef, encode_prompts(tok, QUESTIONS, model.device), T)
        torch.testing.assert_close(token_kls(model, tok, method, coef, reused, T), fresh)
        assert reused[0].base_cache.get_seq_length() == reused[0].input_ids.shape[1]


def test_kl_p95_drops_positions_after_eos(varied_tiny):
    model, tok = varied_tiny
    method = fit_activation_method("mean_diff", model, tok, load_behaviour("honesty"), n_questions=8)
    _, generated = reference_kls(model, tok, method, 0.3, QUESTIONS, T)
    stop = generated[0][2]  # the first prompt's third token becomes EOS: rows now end at different steps
    model.generation_config.eos_token_id = [stop]
    expected, generated = reference_kls(model, tok, method, 0.3, QUESTIONS, T, {stop})
    assert len(QUESTIONS) < len(expected) < T * len(QUESTIONS)
    assert kl_p95(model, tok, method, 0.3, QUESTIONS, T) == pytest.approx(np.percentile(expected, 95), rel=1e-4)


# ---- the search on synthetic KL curves --------------------------------------------------------

def test_illinois_converges_in_few_evaluations_for_both_signs():
    for sign in (1, -1):
        result = search(lambda c: 0.3 * c ** 2, target=1.0, tol=0.05, sign=sign)
        assert result.converged and result.reason == "converged"
        assert abs(result.kl - 1.0) <= 0.05
        assert result.coef == pytest.approx(sign * (1 / 0.3) ** 0.5, rel=0.03)
        assert result.iterations == len(result.history) <= 4
        assert result.history[0] == (sign * 1.0, pytest.approx(0.3))


def test_a_power_law_is_hit_by_the_first_newton_step():
    # KL = k * alpha^2: one evaluation at start measures k, the slope-2 step lands on the target
    for k, start in ((0.03, 1.0), (40.0, 1.0), (0.3, 0.5)):  # each within the factor-8 step limit
        result = search(lambda c, k=k: k * c ** 2, target=1.0, tol=0.05, start=start)
        assert result.converged and result.iterations == 2
        assert result.coef == pytest.approx(k ** -0.5, rel=0.025)


def test_a_shallower_curve_takes_a_secant_step_not_a_bracket():
    # slope 1.5 in log-log: the slope-2 guess falls short, the measured slope finishes it
    result = search(lambda c: 0.1 * c ** 1.5, target=1.0, tol=0.05)
    assert result.converged and result.iterations == 3
    assert all(kl < 1.05 for _, kl in result.history)  # approached from one side, never overshot


def test_a_saturated_start_comes_down_in_few_evaluations():
    # the shape measured for a mean_diff activation direction on the embedded model: KL ~ 1700 alpha^2
    # near zero and saturating near 10 nats, so alpha* ~ 0.024 is 40x below the start
    def kl(c):
        return 10 * (1 - math.exp(-170 * c * c))

    result = search(kl, target=1.0, tol=0.05)
    assert result.converged and result.iterations <= 4
    assert abs(result.kl - 1.0) <= 0.05


def test_illinois_needs_fewer_evaluations_than_bisection():
    def kl(c):  # not a pure power law, so the secant is not exact
        return 0.02 * abs(c) ** 2 + 0.001 * abs(c) ** 3.5

    fast = search(kl, target=2.0, tol=0.01, start=0.5, strategy="illinois")
    slow = search(kl, target=2.0, tol=0.01, start=0.5, strategy="bisection")
    assert fast.converged and slow.converged
    assert abs(fast.kl - 2.0) <= 0.02 and abs(slow.kl - 2.0) <= 0.02
    assert fast.iterations < slow.iterations


def test_illinois_step_keeps_a_stuck_end_from_stalling():
    # log KL is strongly convex in log alpha here: plain regula falsi keeps one end for many
    # steps (13 evaluations); halving the kept end's value gets there in 8
    result = search(lambda c: 1e-3 * math.exp(c ** 2), target=2.0, tol=0.01, start=0.5, max_iter=40)
    assert result.converged
    assert result.iterations <= 9


def test_search_halves_from_a_start_that_is_too_large():
    result = search(lambda c: c ** 2, target=0.01, start=64.0)
    assert result.converged
    assert result.coef == pytest.approx(0.1, rel=0.03)


def test_saturating_kl_is_reported_not_bracketed():
    result = search(lambda c: 0.5 * abs(c) / (1 + abs(c)), target=1.0, max_iter=8)
    assert not result.converged
    assert "below" in result.reason
    assert result.iterations == 8
    largest = max(c for c, _ in result.history)
    assert result.coef == largest  # the best point seen: the largest alpha tried
    assert result.kl == pytest.approx(0.5 * largest / (1 + largest))


def test_a_jump_across_the_target_ends_the_search_and_says_where():
    result = search(lambda c: 0.5 if c < 1.3 else 2.0, target=1.0, max_iter=12)
    assert not result.converged
    assert result.iterations < 12
    assert "jumps across the target" in result.reason
    below = max(c for c, kl in result.history if kl == 0.5)
    above = min(c for c, kl in result.history if kl == 2.0)
    assert below < 1.3 <= above < 1.01 * below
    assert f"{below:.6g}" in result.reason and f"{above:.6g}" in result.reason
    assert result.kl in (0.5, 2.0)


@pytest.mark.parametrize("strategy", ["illinois", "bisection"])
def test_a_steep_smooth_curve_is_still_calibrated(strategy):
    """Slope 8 in log KL vs log alpha (four times the small-alpha law): the band is 1.2% of alpha wide."""
    result = search(lambda c: (c / 1.7) ** 8, target=1.0, strategy=strategy, max_iter=20)
    assert result.converged
    assert abs(result.kl - 1.0) <= 0.05


def test_the_iterations_run_out_before_a_bracket_narrows_to_a_jump():
    result = search(lambda c: 0.5 if c < 1.3 else 2.0, target=1.0, max_iter=3)
    assert not result.converged
    assert result.iterations == 3
    assert "bracketed between" in result.reason


def test_broken_model_kl_counts_as_too_far():
    result = search(lambda c: math.nan if c > 3 else c ** 2 / 4, target=1.0, start=8.0)
    assert result.converged
    assert result.coef == pytest.approx(2.0, rel=0.03)


def test_non_monotone_kl_still_lands_on_a_true_crossing():
    def kl(c):
        return 0.25 * c ** 2 + 0.8 * math.sin(3 * c) ** 2

    result = search(kl, target=1.5, tol=0.02, start=0.1, max_iter=20)
    assert result.converged
    assert abs(kl(result.coef) - 1.5) <= 0.03


def test_bad_arguments_are_refused():
    with pytest.raises(WeightsteerError, match="strategy"):
        search(lambda c: c, target=1.0, strategy="newton")
    with pytest.raises(WeightsteerError, match="sign"):
        search(lambda c: c, target=1.0, sign=2)


# ---- calibrating real methods -----------------------------------------------------------------

def test_weight_steering_reaches_the_target_for_each_sign(tiny_llama, tmp_path):
    model, tok = tiny_llama
    untie_head(model)
    pos, neg = adapter_pair(model, "lora", tmp_path)
    method = WeightSteering("lora", delta=ws.WeightDelta.from_adapters(model, pos, neg))
    for sign in (1, -1):
        result = calibrate(model, tok, method, target=0.1, sign=sign, prompts=QUESTIONS, T=T)
        assert result.converged, result.reason
        assert result.coef * sign > 0
        assert abs(result.kl - 0.1) <= 0.05 * 0.1
        assert result.iterations == len(result.history) <= 12
        # the reported KL is what the statistic gives at that coefficient
        assert kl_p95(model, tok, method, result.coef, QUESTIONS, T) == pytest.approx(result.kl, rel=1e-6)


def test_the_neg_search_starts_at_the_pos_alpha(tiny_llama, tmp_path):
    model, tok = tiny_llama
    untie_head(model)
    pos, neg = adapter_pair(model, "lora", tmp_path)
    method = WeightSteering("lora", delta=ws.WeightDelta.from_adapters(model, pos, neg))
    results = calibrate_both_signs(model, tok, method, target=0.1, prompts=QUESTIONS, log=lambda *a: None)
    assert results["pos"].converged and results["neg"].converged
    assert results["pos"].history[0][0] == 1.0
    assert results["neg"].history[0][0] == -abs(results["pos"].coef)
    assert abs(results["neg"].kl - 0.1) <= 0.05 * 0.1


def test_each_dose_starts_where_the_previous_one_predicts(tiny_llama, tmp_path):
    from weightsteer.doses import calibrate_doses

    model, tok = tiny_llama
    untie_head(model)
    pos, neg = adapter_pair(model, "lora", tmp_path)
    method = WeightSteering("lora", delta=ws.WeightDelta.from_adapters(model, pos, neg))
    quiet = dict(log=lambda *a: None)
    doses = dict(calibrate_doses(model, tok, method, "src", QUESTIONS, tmp_path / "run", (0.05, 0.1, 0.2), **quiet))
    assert list(doses) == [0.05, 0.1, 0.2]
    assert doses[0.05]["pos"].history[0][0] == 1.0
    for previous, dose in ((0.05, 0.1), (0.1, 0.2)):
        first = doses[dose]["pos"].history[0][0]
        assert first == pytest.approx(abs(doses[previous]["pos"].coef) * math.sqrt(dose / previous))
        assert all(r.converged and abs(r.kl - dose) <= 0.05 * dose for r in doses[dose].values())
    # each dose alone from alpha 1 (the old way) takes more evaluations than the warm starts did
    cold = {dose: calibrate_both_signs(model, tok, method, target=dose, prompts=QUESTIONS, **quiet)
            for dose in (0.1, 0.2)}
    assert sum(doses[d]["pos"].iterations for d in cold) < sum(cold[d]["pos"].iterations for d in cold)


def test_prompt_baselines_are_not_calibrated(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(WeightsteerError, match="no coefficient"):
        calibrate(model, tok, prompt_baseline("Be honest."), prompts=QUESTIONS)


def test_results_round_trip_through_json(tmp_path):
    results = {"pos": search(lambda c: 0.3 * c ** 2, target=1.0),
               "neg": search(lambda c: 0.5 * (1 - math.exp(-abs(c))), target=1.0, sign=-1, max_iter=3)}
    save_calibration(tmp_path / "calibration.json", results)
    loaded = load_calibration(tmp_path / "calibration.json")
    assert loaded == results
    assert isinstance(loaded["neg"], CalibrationResult) and not loaded["neg"].converged
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(WeightsteerError, match="not a weightsteer calibration"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(WeightsteerError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")
