"""Probe kinds against an independent computation: one prompt at a time, the full-vocabulary softmax
in float64, token sets found by decoding the vocabulary here, prompts written out by hand."""

import json
import math

import numpy as np
import pytest
import torch

from weightsteer.errors import WeightsteerError
from weightsteer.fields import Fields
from weightsteer.probes import probe_from_fields
from weightsteer.probes.next_word import NextWordProbe


def next_token_probs(model, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        return torch.softmax(model(ids).logits[0, -1].double(), dim=-1)


def decoded(tokenizer) -> list[str]:
    return [t.strip() for t in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]


def render(tokenizer, user: str, prefill: str = "") -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True) + prefill


def probe_from(table: dict, tmp_path, name="b"):
    probe = probe_from_fields(Fields(table, tmp_path / "b.toml", "probe."))
    probe.attach(name)
    return probe


def test_next_word_log_ratio_and_mass(tiny_llama):
    model, tokenizer = tiny_llama
    probe = NextWordProbe(["What do you drink?", "Pick a drink."], [" tea", " green"], [" coffee", " espresso"],
                          prefill="I would have a cup of")
    probe.attach("tea")
    rows = probe.score(model, tokenizer, probe.load(), batch_size=2, progress=False)
    first = {w: tokenizer.encode(w, add_special_tokens=False)[0] for w in (" tea", " green", " coffee", " espresso")}
    for item, row in zip(probe.load(), rows, strict=True):
        p = next_token_probs(model, tokenizer, render(tokenizer, item["prompt"], "I would have a cup of"))
        pos, neg = p[[first[" tea"], first[" green"]]].sum(), p[[first[" coffee"], first[" espresso"]]].sum()
        assert row["log_ratio"] == pytest.approx(math.log(pos / neg), abs=1e-4)
        assert row["word_mass"] == pytest.approx(float(pos + neg), rel=1e-4)


def test_yes_no_sign_follows_the_pos_answer_and_reports_the_yes_share(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    probe = probe_from({"kind": "yes_no", "items": [{"question": "Is tea nice?", "pos_answer": "yes"},
                                                    {"question": "Is coffee nice?", "pos_answer": "No"}]}, tmp_path)
    rows = probe.score(model, tokenizer, probe.load(), progress=False)
    vocab = decoded(tokenizer)
    yes = [i for i, t in enumerate(vocab) if t.lower() == "yes"]
    no = [i for i, t in enumerate(vocab) if t.lower() == "no"]
    for item, row, sign in zip(probe.load(), rows, (1, -1), strict=True):
        text = tokenizer.apply_chat_template([{"role": "user", "content": item["question"] + " Answer Yes or No."}],
                                             tokenize=False, add_generation_prompt=True, enable_thinking=False)
        p = next_token_probs(model, tokenizer, text)
        p_yes, p_no = float(p[yes].sum()), float(p[no].sum())
        assert row["log_ratio"] == pytest.approx(sign * math.log(p_yes / p_no), abs=1e-4)
        assert row["p_yes"] == pytest.approx(p_yes / (p_yes + p_no), rel=1e-4)
        assert row["yes_no_mass"] == pytest.approx(p_yes + p_no, rel=1e-4)
    assert set(probe.summarise(rows, n_boot=20)) == {"n", "log_ratio", "yes_no_mass", "p_yes"}


def test_yes_no_limit_keeps_the_item_set_balanced(tmp_path):
    items = [{"question": f"q{i}?", "pos_answer": "yes" if i < 12 else "no"} for i in range(16)]
    probe = probe_from({"kind": "yes_no", "items": items}, tmp_path)
    subset = probe.load(limit=6)
    assert sorted(i["pos_answer"] for i in subset) == ["no"] * 3 + ["yes"] * 3


def test_choice_reads_the_letters_in_both_orders(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    probe = probe_from({"kind": "choice", "items": [
        {"question": "Which drink?", "options": ["Coffee", "Tea", "Water"], "pos": 1}]}, tmp_path)
    (row,) = probe.score(model, tokenizer, probe.load(), progress=False)
    vocab = decoded(tokenizer)
    letter = {c: [i for i, t in enumerate(vocab) if t == c] for c in "ABC"}
    values, masses = [], []
    for shown, pos_letter in ((["Coffee", "Tea", "Water"], "B"), (["Water", "Tea", "Coffee"], "B")):
        user = "Which drink?\n\n" + "\n".join(f"({c}) {o}" for c, o in zip("ABC", shown, strict=True))
        p = next_token_probs(model, tokenizer, render(tokenizer, user + "\n\nAnswer with the letter of your choice.",
                                                      "("))
        probs = {c: float(p[ids].sum()) for c, ids in letter.items()}
        values.append(math.log(probs[pos_letter] / sum(v for c, v in probs.items() if c != pos_letter)))
        masses.append(sum(probs.values()))
    assert row["log_ratio"] == pytest.approx(np.mean(values), abs=1e-4)
    assert row["letter_mass"] == pytest.approx(np.mean(masses), rel=1e-4)


MODEL_WRITTEN = {"question": "Hello, I am a tea merchant. Which is better?\n\nChoices:\n (A) Coffee\n (B) Tea\n\nAnswer:",
                 "answer_matching_behavior": " (B)", "answer_not_matching_behavior": [" (A)"]}


def test_choice_reads_anthropic_model_written_evals_rows(tmp_path):
    (tmp_path / "mwe.jsonl").write_text(json.dumps(MODEL_WRITTEN) + "\n")
    probe = probe_from({"kind": "choice", "items": {"file": "mwe.jsonl"}}, tmp_path)
    assert probe.load() == [{"id": 0, "question": "Hello, I am a tea merchant. Which is better?",
                             "options": ["Coffee", "Tea"], "pos": 1}]
    flipped = probe_from({"kind": "choice", "items": {"file": "mwe.jsonl"}, "pos_is": "not_matching"}, tmp_path)
    assert flipped.load()[0]["pos"] == 0


@pytest.mark.parametrize("row, message", [
    ({**MODEL_WRITTEN, "question": "No options here"}, "could not find the options"),
    ({**MODEL_WRITTEN, "answer_matching_behavior": " (C)"}, "names option C"),
    ({"question": "Which?", "options": ["only"], "pos": 0}, "'options' must be a list of 2 to"),
    ({"question": "Which?", "options": ["a", "b"], "pos": 2}, "'pos' must be the index"),
])
def test_bad_choice_rows_name_the_file_and_line(tmp_path, row, message):
    (tmp_path / "items.jsonl").write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(WeightsteerError, match=f"items.jsonl line 2: .*{message}"):
        probe_from({"kind": "choice", "items": {"file": "items.jsonl"}}, tmp_path)


def test_item_ids_are_kept_and_must_be_unique(tmp_path):
    items = [{"id": "a", "question": "q?", "pos_answer": "yes"}, {"id": "a", "question": "r?", "pos_answer": "no"}]
    with pytest.raises(WeightsteerError, match=r"probe.items\[1\]: 'id' must be a unique"):
        probe_from({"kind": "yes_no", "items": items}, tmp_path)
    with pytest.raises(WeightsteerError, match="'pos_answer' must be \"yes\" or \"no\""):
        probe_from({"kind": "yes_no", "items": [{"question": "q?", "pos_answer": "maybe"}]}, tmp_path)


def test_tinymfv_axis_is_the_weighted_sum_of_foundation_shifts(tmp_path):
    probe = probe_from({"kind": "tinymfv", "axis": {"Sanctity": 2, "Care": -1}}, tmp_path, name="purity")
    rng = np.random.default_rng(0)
    base, steered = [], []
    for i in range(12):
        foundation = ("Care", "Sanctity", "Loyalty")[i % 3]
        cell = {"id": f"v{i}", "row": i, "condition": "other_violate", "foundation": foundation, "bool_mass": 0.9}
        value = float(rng.normal())
        base.append({**cell, "logit_wrongness": value})
        steered.append({**cell, "logit_wrongness": value + {"Care": -0.5, "Sanctity": 1.0}.get(foundation, 3.0)})
    summary = probe.summarise(steered, base_rows=base, n_boot=50)
    assert probe.stat(summary, shift=True)["mean"] == pytest.approx(2 * 1.0 - (-0.5))
    sanctity = np.mean([r["logit_wrongness"] for r in steered if r["foundation"] == "Sanctity"])
    care = np.mean([r["logit_wrongness"] for r in steered if r["foundation"] == "Care"])
    assert probe.stat(summary)["mean"] == pytest.approx(2 * sanctity - care)
    with pytest.raises(WeightsteerError, match="unknown foundation 'Purity'"):
        probe_from({"kind": "tinymfv", "axis": {"Purity": 1}}, tmp_path)
