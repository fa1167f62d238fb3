"""`next_word`: which words does the model reach for next, POS or NEG ones?

Each prompt is asked as a user turn; the assistant's reply is prefilled with `prefill` ("I feel"),
and the next token is read. log_ratio = log P(POS words) - log P(NEG words), each the log of the
summed probability of the words' first tokens (a word counts by the token it starts with, so
" espresso" counts as " esp" if that is how the tokenizer splits it). word_mass is the summed
probability of both lists: a probe whose words the model never says next has a tiny mass and a
log-ratio that means little.

With `vader = true` each prompt's greedy reply (no prefill, 32 tokens) is also scored with VADER's
compound sentiment (-1 to 1): an independent check, sharing no word list with the probe, for
behaviours that are about sentiment (the mood positive control uses it).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from .. import chat
from ..errors import WeightsteerError
from ..evals import scoring
from .base import HEADLINE_KEY, Probe

N_GENERATE = 32


@cache
def vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def first_token(tokenizer, word: str) -> int:
    """The token a word starts with; refused when that token is not the start of the word's text."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    text = tokenizer.decode(ids[:1]).strip() if ids else ""
    if not text or not word.strip().startswith(text):
        raise WeightsteerError(f"probe word {word!r} does not start with a token of its own in this tokenizer "
                               f"(its first token is {text!r}): write it as it appears mid-sentence, usually "
                               "with one leading space, or choose another word")
    return ids[0]


class NextWordProbe(Probe):
    kind = "next_word"
    mass_key = "word_mass"
    summary_keys = (HEADLINE_KEY, "word_mass", "vader")

    def __init__(self, prompts, pos_words, neg_words, prefill: str = "", vader: bool = False):
        for label, texts in (("prompts", prompts), ("pos_words", pos_words), ("neg_words", neg_words)):
            if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise WeightsteerError(f"next_word probe: {label} must be a non-empty list of non-empty strings")
        super().__init__([{"id": i, "prompt": p} for i, p in enumerate(prompts)])
        self.prefill, self.pos_words, self.neg_words, self.vader = prefill, tuple(pos_words), tuple(neg_words), vader

    @classmethod
    def from_fields(cls, f) -> NextWordProbe:
        return cls(f.texts("prompts"), f.texts("pos_words"), f.texts("neg_words"),
                   f.text("prefill", "", allow_empty=True), f.flag("vader", False))

    def rows_key(self) -> dict:
        return {"kind": self.kind, "prefill": self.prefill, "pos": self.pos_words, "neg": self.neg_words,
                "vader": self.vader}

    def token_sets(self, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        pos = {first_token(tokenizer, w): w for w in self.pos_words}
        neg = {first_token(tokenizer, w): w for w in self.neg_words}
        shared = set(pos) & set(neg)
        if shared:
            t = sorted(shared)[0]
            raise WeightsteerError(f"POS word {pos[t]!r} and NEG word {neg[t]!r} start with the same token "
                                   f"{tokenizer.decode([t])!r}, so the probe cannot tell them apart: drop one")
        return torch.tensor(sorted(pos)), torch.tensor(sorted(neg))

    def check(self, tokenizer) -> None:
        self.token_sets(tokenizer)

    def describe(self) -> str:
        return f"next_word after {self.prefill!r}: {', '.join(self.pos_words[:3])}... vs " \
               f"{', '.join(self.neg_words[:3])}... on {len(self.items)} prompts"

    def score(self, model, tokenizer, items: list[dict], *, system: str | None = None,
              user_prefix: str | None = None, batch_size: int = 16, progress: bool = True) -> list[dict]:
        """Per prompt: log_ratio and word_mass after the prefill; with vader, the reply and its score."""
        starts = [chat.render(tokenizer, chat.messages(item["prompt"], system=system, user_prefix=user_prefix))
                  for item in items]
        logp = scoring.next_token_logprobs(model, tokenizer, [s + self.prefill for s in starts],
                                           self.token_sets(tokenizer), batch_size=batch_size, progress=progress,
                                           desc=f"{self.name} probe")
        rows = [{"id": item["id"], HEADLINE_KEY: float(log_pos - log_neg),
                 "word_mass": float(np.exp(log_pos) + np.exp(log_neg))}
                for item, (log_pos, log_neg) in zip(items, logp, strict=True)]
        if self.vader:
            texts = scoring.greedy_continuations(model, tokenizer, starts, max_new_tokens=N_GENERATE,
                                                 batch_size=batch_size, progress=progress,
                                                 desc=f"{self.name} replies")
            for row, text in zip(rows, texts, strict=True):
                row["reply"] = text
                row["vader"] = vader().polarity_scores(text)["compound"]
        return rows
