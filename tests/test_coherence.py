"""Coherence signals: hand-computed values on token lists, the base log-likelihood against an
unbatched float64 pass, and the flag on the embedded model (quiet unsteered, firing when broken)."""

import copy

import numpy as np
import pytest
import torch
from adapter_helpers import adapter_pair

from weightsteer import chat, coherence
from weightsteer.decode import stop_token_ids
from weightsteer.delta import WeightDelta
from weightsteer.methods import UNSTEERED, WeightSteering


def test_repeated_ngram_rate_by_hand():
    # 3-grams: 123 231 312 123 231 312 123 -> 7 grams, 3 distinct
    assert coherence.repeated_ngram_rate([1, 2, 3, 1, 2, 3, 1, 2, 3]) == pytest.approx(1 - 3 / 7)
    assert coherence.repeated_ngram_rate([1, 2, 3, 4, 5]) == 0.0
    assert coherence.repeated_ngram_rate([1, 2]) == 0.0
    assert coherence.repeated_ngram_rate([7] * 10, n=2) == pytest.approx(1 - 1 / 9)


def test_distinct_ratio_by_hand():
    assert coherence.distinct_ratio([1, 1, 2, 3]) == 0.75
    assert coherence.distinct_ratio([]) == 1.0


def test_periodic_tail_by_hand():
    assert coherence.periodic_tail([5, 6, 1, 2, 1, 2, 1, 2]) == (2, 6)
    assert coherence.periodic_tail([9, 4, 4, 4, 4]) == (1, 4)
    assert coherence.periodic_tail([1, 2, 3, 4, 5, 6]) == (0, 0)
    assert coherence.periodic_tail([1, 2, 3, 1, 2, 3, 1]) == (3, 7)  # a tail may end mid-unit


def test_ends_in_loop_needs_length_three_periods_and_no_eos():
    assert coherence.ends_in_loop([7, 8] * 8, ended=False)  # "1. 1. 1. ...": 16 tokens, period 2
    assert not coherence.ends_in_loop([7, 8] * 8, ended=True)  # it stopped by itself
    assert not coherence.ends_in_loop([3, 4, 5] + [7, 8] * 5, ended=False)  # 10 < 12 tokens
    unit = list(range(10))
    assert not coherence.ends_in_loop([99] + unit * 2, ended=False)  # 20 tokens but only two periods


def test_signals_mark_degenerate_text():
    varied = coherence.signals(list(range(20)), ended=True, loglik=-1.0)
    assert varied["degenerate"] == 0.0 and varied["distinct_ratio"] == 1.0
    assert coherence.signals([7, 8] * 10, ended=False, loglik=-0.1)["degenerate"] == 1.0  # loop
    assert coherence.signals(list(range(20)), ended=True, loglik=-7.0)["degenerate"] == 1.0  # implausible


def test_summary_flag_and_cell():
    rows = [coherence.signals([7, 8] * 10, False, -0.5)] * 1 + [coherence.signals(list(range(20)), True, -1.0)] * 3
    summary = coherence.summarise(rows, base_rows=rows[1:])
    assert summary["n_degenerate"] == 1 and summary["flagged"] and summary["base_n_degenerate"] == 0
    assert coherence.flag_cell(summary) == "⚠ 1/4"
    assert not coherence.summarise(rows[1:])["flagged"]
    assert coherence.flag_cell(coherence.summarise(rows[1:])) == "ok 0/3"
    assert summary["ends_in_loop"]["mean"] == pytest.approx(0.25)


def test_mean_logliks_equal_a_float64_pass(tiny_llama):
    model, tokenizer = tiny_llama
    prompts = [chat.render(tokenizer, chat.messages(q)) for q in ("Hello there", "What is two plus two?")]
    replies = [[100, 200, 300], [5, 6, 7, 8, 9]]  # prompts and replies of different lengths: padded batches
    got = coherence.mean_logliks(model, tokenizer, prompts, replies)
    reference = copy.deepcopy(model).double()
    for text, reply, value in zip(prompts, replies, got, strict=True):
        ids = tokenizer(text, add_special_tokens=False).input_ids + reply
        with torch.no_grad():
            logp = torch.log_softmax(reference(input_ids=torch.tensor([ids])).logits[0], -1)
        start = len(ids) - len(reply)
        expected = np.mean([logp[start - 1 + k, t].item() for k, t in enumerate(reply)])
        assert value == pytest.approx(expected, abs=1e-4)


def test_continuations_stop_at_eos_and_keep_it(tiny_llama):
    model, tokenizer = tiny_llama
    prompts = [chat.render(tokenizer, chat.messages("Hi"))]
    (tokens, ended), = coherence.continuations(model, tokenizer, prompts, max_new_tokens=6)
    eos = set(stop_token_ids(model, tokenizer))
    assert (ended and tokens[-1] in eos and not eos & set(tokens[:-1])) or (not ended and len(tokens) == 6)


def test_continuations_are_transformers_greedy_generate(tiny_llama):
    """weightsteer's decoding loop against transformers' own generate, one prompt at a time (no padding)."""
    model, tokenizer = tiny_llama
    prompts = [chat.render(tokenizer, chat.messages(q)) for q in ("Hi", "Tell me a long story about a dragon", "Why?")]
    got = coherence.continuations(model, tokenizer, prompts, max_new_tokens=12)
    eos = set(stop_token_ids(model, tokenizer))
    for prompt, (tokens, ended) in zip(prompts, got, strict=True):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            generated = model.generate(ids, max_new_tokens=12, do_sample=False, num_beams=1,
                                       pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        cut = next((i for i, t in enumerate(generated) if t in eos), None)
        assert tokens == (generated if cut is None else generated[:cut + 1])
        assert ended == (cut is not None)


@pytest.mark.slow
def test_flag_quiet_unsteered_and_firing_on_a_broken_embedded_model(tmp_path):
    import weightsteer as ws
    from weightsteer.behaviours import load_behaviour

    model, tokenizer = ws.load_model("smollm2-135m")
    questions = list(load_behaviour("mood").calibration[:8])
    quiet = coherence.summarise(coherence.score(model, tokenizer, questions, UNSTEERED, 0.0, max_new_tokens=32))
    assert not quiet["flagged"], quiet
    pos, neg = adapter_pair(model, "lora", tmp_path)
    method = WeightSteering("lora", delta=WeightDelta.from_adapters(model, pos, neg))
    broken = coherence.summarise(coherence.score(model, tokenizer, questions, method, 400.0, max_new_tokens=32))
    assert broken["flagged"], broken


def test_report_rejudges_kept_rows_with_the_current_thresholds(tmp_path):
    from weightsteer.atomic import write_jsonl
    from weightsteer.tradeoff import rejudge_coherence

    fine = coherence.signals(list(range(20)), True, -1.0)
    implausible = {**fine, "loglik_base": coherence.MIN_LOGLIK - 0.5, "degenerate": 0.0}  # judged by old rules
    write_jsonl(tmp_path / "base" / "coherence.rows.jsonl", [fine] * 4)
    write_jsonl(tmp_path / "eval" / "coherence.pos.rows.jsonl", [implausible] * 2 + [fine] * 2)
    stale = {"flagged": False, "n_degenerate": 0, "n": 4}
    cost = {"base": {"coherence": stale}, "sides": {"pos": {"coherence": stale}}}
    rejudge_coherence(cost, tmp_path / "eval", tmp_path)
    assert coherence.flag_cell(cost["sides"]["pos"]["coherence"]) == "⚠ 2/4"
    assert coherence.flag_cell(cost["base"]["coherence"]) == "ok 0/4"
