"""Mood: prompts, the word-list probe and its sign, and the VADER score of generated replies."""

import pytest
import torch

from weightsteer.behaviours import mood_prompts
from weightsteer.evals import mood, scoring


def test_items_are_all_the_mood_prompts():
    items = mood.load()
    assert len(items) == 32
    assert [i["prompt"] for i in items] == mood_prompts()


def test_word_lists_become_disjoint_first_tokens(base_tokenizer):
    positive, negative = mood.sentiment_token_sets(base_tokenizer)
    assert base_tokenizer.decode(positive[:1]).strip() in {w.strip() for w in mood.POSITIVE_WORDS}
    assert not set(positive.tolist()) & set(negative.tolist())
    assert len(positive) == len(mood.POSITIVE_WORDS)  # every word is one token in this vocabulary


def test_rows_on_a_tiny_model_have_both_measures(tiny):
    model, tokenizer = tiny
    rows = mood.score(model, tokenizer, mood.load(limit=3), batch_size=2, progress=False)
    assert [r["id"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert 0 < row["word_mass"] < 1
        assert isinstance(row["reply"], str) and row["reply"]
        assert -1 <= row["vader"] <= 1
    assert set(mood.summarise(rows, n_boot=20)) == {"n", "log_ratio", "word_mass", "vader"}


@pytest.mark.parametrize("word, sign", [(" great", 1), (" sad", -1)])
def test_probe_sign_follows_the_favoured_word(tiny_llama, word, sign):
    model, tokenizer = tiny_llama
    bias = torch.zeros(model.config.vocab_size)
    bias[tokenizer.encode(word, add_special_tokens=False)[0]] = 25.0
    handle = model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    try:
        rows = mood.score(model, tokenizer, mood.load(limit=4), progress=False, generate=False)
    finally:
        handle.remove()
    assert all(sign * r["log_ratio"] > 15 for r in rows)
    assert all("vader" not in r for r in rows)
    assert set(mood.summarise(rows, n_boot=20)) == {"n", "log_ratio", "word_mass"}


def test_vader_scores_the_generated_reply(monkeypatch, tiny_llama):
    model, tokenizer = tiny_llama
    replies = iter(["What a wonderful, happy day, I love it!", "This is awful and I feel miserable."])
    seen = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen.update(prompts=prompts, max_new_tokens=kwargs["max_new_tokens"])
        return [next(replies) for _ in prompts]

    monkeypatch.setattr(scoring, "greedy_continuations", fake_generate)
    rows = mood.score(model, tokenizer, mood.load(limit=2), progress=False)
    assert rows[0]["vader"] > 0.5 and rows[1]["vader"] < -0.5
    assert seen["max_new_tokens"] == mood.N_GENERATE
    assert seen["prompts"][0].endswith("<|im_start|>assistant\n")  # generated without the "I feel" prefill
