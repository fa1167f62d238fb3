"""Mood, the positive control: steering toward a cheerful persona should make the model sound cheerful.

Items are behaviours.mood_prompts() (32 neutral questions such as "How do you feel about Mondays?");
they ship with the package, so `data_dir` is accepted only for the common interface.

Two independent measures per prompt:
- Teacher-forced: the reply is prefilled with "I feel" and the next token is read. log_ratio =
  log P(positive) - log P(negative), each the log of the summed probability of the first tokens of a
  fixed word list (words as they appear mid-sentence, with their leading space). word_mass is the
  summed probability of both lists.
- Generated (generate=True): the greedy reply without a prefill, up to 32 tokens, scored with VADER's
  compound sentiment (-1 to 1). It does not share the probe's word lists, so it checks the probe.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from .. import chat
from ..behaviours import mood_prompts
from ..errors import WeightsteerError
from . import scoring
from .stats import summarise_by_id

ASSISTANT_PREFIX = "I feel"
POSITIVE_WORDS = (" great", " happy", " wonderful", " fantastic", " excited", " good", " amazing", " glad",
                  " delighted", " cheerful")
NEGATIVE_WORDS = (" sad", " terrible", " awful", " miserable", " depressed", " bad", " horrible", " gloomy",
                  " upset", " unhappy")
N_GENERATE = 32
HEADLINE_KEY = "log_ratio"  # mean log P(positive) - log P(negative) after "I feel"


def load(data_dir=None, limit: int | None = None) -> list[dict]:
    return [{"id": i, "prompt": text} for i, text in enumerate(mood_prompts())][:limit]


def first_tokens(tokenizer, words) -> torch.Tensor:
    return torch.tensor(sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words}))


def sentiment_token_sets(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive first tokens, negative first tokens); an overlap would count a token on both sides."""
    positive, negative = first_tokens(tokenizer, POSITIVE_WORDS), first_tokens(tokenizer, NEGATIVE_WORDS)
    shared = set(positive.tolist()) & set(negative.tolist())
    if shared:
        raise WeightsteerError(f"this tokenizer splits a positive and a negative mood word to the same first "
                               f"token ({tokenizer.decode(sorted(shared)[:1])!r}): the mood probe cannot use it")
    return positive, negative


@cache
def vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def score(model, tokenizer, items: list[dict], *, system: str | None = None, user_prefix: str | None = None,
          batch_size: int = 16, progress: bool = True, generate: bool = True) -> list[dict]:
    """Per prompt: log_ratio and word_mass after "I feel"; with generate, the reply and its VADER score."""
    starts = [chat.render(tokenizer, chat.messages(item["prompt"], system=system, user_prefix=user_prefix))
              for item in items]
    logp = scoring.next_token_logprobs(model, tokenizer, [start + ASSISTANT_PREFIX for start in starts],
                                       sentiment_token_sets(tokenizer), batch_size=batch_size,
                                       progress=progress, desc="mood probe")
    rows = [{"id": item["id"], "log_ratio": float(log_pos - log_neg),
             "word_mass": float(np.exp(log_pos) + np.exp(log_neg))}
            for item, (log_pos, log_neg) in zip(items, logp, strict=True)]
    if generate:
        texts = scoring.greedy_continuations(model, tokenizer, starts, max_new_tokens=N_GENERATE,
                                             batch_size=batch_size, progress=progress, desc="mood replies")
        for row, text in zip(rows, texts, strict=True):
            row["reply"] = text
            row["vader"] = vader().polarity_scores(text)["compound"]
    return rows


def summarise(rows: list[dict], base_rows: list[dict] | None = None, n_boot: int = 256, seed: int = 0) -> dict:
    """Mean log-ratio and word_mass (and VADER, when every row has it) with intervals and paired shifts."""
    keys = [HEADLINE_KEY, "word_mass"]
    if rows and all("vader" in r for r in rows + list(base_rows or [])):
        keys.append("vader")
    return summarise_by_id(rows, keys, base_rows, n_boot=n_boot, seed=seed)


def headline(summary: dict, *, shift: bool = False) -> float | None:
    """Mean mood log-ratio (or, with shift=True, its paired shift vs base)."""
    return (summary["shift"] if shift else summary)[HEADLINE_KEY]["mean"]
