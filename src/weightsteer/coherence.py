"""Coherence: cheap, judge-free signs that steered text has broken down.

A calibrated kl_p95 does not guarantee a sane model: on the embedded model the honesty direction at
kl_p95 = 1 answers a wallet dilemma with "1. 1. 1. 1. ...". So every steered condition also writes
greedy continuations of a fixed set of plain prompts (the behaviour's calibration questions, the
method's own system prompt or user prefix applied), MAX_NEW_TOKENS tokens each, cut at the first EOS,
and measures per continuation, on its token ids:

- repeated_ngram_rate: the share of its NGRAM-grams that already occurred earlier in the same text
  (0 for varied text; "1. 1. 1. ..." tends to 1);
- distinct_ratio: distinct tokens / tokens;
- loop: the longest periodic tail (a unit of at most MAX_PERIOD tokens repeated to the end);
  `ends_in_loop` when the text was cut by the token budget (no EOS) and that tail covers at least
  LOOP_MIN_TOKENS tokens and three periods;
- loglik_base: the mean per-token log-likelihood of the continuation under the *unsteered* model,
  given the plain prompt (EOS included when generated): how plausible the text is to the model
  before steering. Gibberish scores low even when it does not repeat.

A continuation is `degenerate` when it ends in a loop, or its repeated_ngram_rate is at least
MAX_REPEAT_RATE, or its loglik_base is below MIN_LOGLIK. A condition is `flagged` when at least
FLAG_SHARE of its continuations are degenerate; tables show the flag with the count ("⚠ 9/16").
The thresholds and the evidence for them are in docs/coherence.md.
"""

from __future__ import annotations

import torch

from . import chat
from .decode import decode, left_padded, positions_of, stop_token_ids
from .evals.stats import mean_ci

NGRAM = 3
MAX_PERIOD = 16
LOOP_MIN_TOKENS = 12
MAX_NEW_TOKENS = 48
N_PROMPTS = 16
MAX_REPEAT_RATE = 0.45
MIN_LOGLIK = -2.5
FLAG_SHARE = 0.25
SUMMARY_KEYS = ("repeated_ngram_rate", "distinct_ratio", "ends_in_loop", "loglik_base", "degenerate")


# ---- signals on one continuation's token ids -------------------------------------------------

def repeated_ngram_rate(tokens: list[int], n: int = NGRAM) -> float:
    """Share of the n-grams that repeat an earlier n-gram of the same text (0 without any n-gram)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def distinct_ratio(tokens: list[int]) -> float:
    return len(set(tokens)) / len(tokens) if tokens else 1.0


def periodic_tail(tokens: list[int], max_period: int = MAX_PERIOD) -> tuple[int, int]:
    """(period, length) of the longest tail in which every token equals the one `period` before it
    (the first period included), over periods 1..max_period; (0, 0) for an empty text."""
    best = (0, 0)
    for period in range(1, min(max_period, len(tokens) // 2) + 1):
        matched = 0
        while matched + period < len(tokens) and tokens[-1 - matched] == tokens[-1 - matched - period]:
            matched += 1
        if matched + period > best[1] and matched >= period:  # at least two full periods
            best = (period, matched + period)
    return best


def loop_verdict(period: int, length: int, ended: bool) -> bool:
    """Whether a periodic tail counts as the text ending in a loop (see the module docstring)."""
    return not ended and period > 0 and length >= LOOP_MIN_TOKENS and length >= 3 * period


def ends_in_loop(tokens: list[int], ended: bool) -> bool:
    return loop_verdict(*periodic_tail(tokens), ended)


def judge(row: dict) -> dict:
    """`ends_in_loop` and `degenerate` of a row of raw signals, by the current thresholds (so a
    threshold change re-judges kept rows without generating again)."""
    loop = loop_verdict(row["loop_period"], row["loop_tokens"], row["ended"])
    bad = loop or row["repeated_ngram_rate"] >= MAX_REPEAT_RATE or row["loglik_base"] < MIN_LOGLIK
    return {**row, "ends_in_loop": float(loop), "degenerate": float(bad)}


def signals(tokens: list[int], ended: bool, loglik: float) -> dict:
    """Every signal of one continuation and whether it counts as degenerate."""
    period, length = periodic_tail(tokens)
    return judge({"n_tokens": len(tokens), "ended": ended, "repeated_ngram_rate": repeated_ngram_rate(tokens),
                  "distinct_ratio": distinct_ratio(tokens), "loop_period": period, "loop_tokens": length,
                  "loglik_base": loglik})


# ---- generating and scoring --------------------------------------------------------------------

@torch.inference_mode()
def continuations(model, tokenizer, prompts: list[str], *, max_new_tokens: int = MAX_NEW_TOKENS,
                  batch_size: int = 16) -> list[tuple[list[int], bool]]:
    """(token ids up to and including the first stop token, whether one ended it) of each greedy reply."""
    stops = stop_token_ids(model, tokenizer)
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = chat.encode(tokenizer, prompts[start:start + batch_size], model.device)
        for tokens in decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=max_new_tokens,
                             stop_ids=stops).tokens:
            out.append((tokens, bool(tokens) and tokens[-1] in stops))
    return out


@torch.inference_mode()
def mean_logliks(model, tokenizer, prompts: list[str], replies: list[list[int]], batch_size: int = 16) -> list[float]:
    """Mean per-token log P(reply token | prompt, earlier reply tokens) under the model as it is now:
    prompt + reply left-padded in batches, positions counted over the real tokens (decode.positions_of),
    the output head run on the replies' positions only, log-softmax in float32."""
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = [(tokenizer(text, add_special_tokens=False).input_ids, reply)
                for text, reply in zip(prompts[start:start + batch_size], replies[start:start + batch_size],
                                       strict=True)]
        keep = max(len(r) for _, r in rows) + 1
        ids, mask = left_padded([prompt + reply for prompt, reply in rows], tokenizer.pad_token_id, model.device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask),
                       logits_to_keep=keep).logits.float()
        for i, (_, reply) in enumerate(rows):
            if not reply:
                out.append(0.0)
                continue
            predicting = logits[i, keep - len(reply) - 1:keep - 1]  # the positions before each reply token
            logp = torch.log_softmax(predicting, -1).gather(-1, torch.tensor(reply, device=model.device)[:, None])
            out.append(float(logp.mean()))
    return out


def score(model, tokenizer, questions: list[str], method, coef: float, *,
          max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 16) -> list[dict]:
    """One row per question: the continuation under `method` at `coef`, and its signals, the
    log-likelihood taken under the unsteered model given the plain prompt."""
    steered_prompts = [chat.render(tokenizer, chat.messages(q, system=method.system, user_prefix=method.user_prefix))
                       for q in questions]
    with method.apply(model, coef):
        replies = continuations(model, tokenizer, steered_prompts, max_new_tokens=max_new_tokens,
                                batch_size=batch_size)
    plain_prompts = [chat.render(tokenizer, chat.messages(q)) for q in questions]
    logliks = mean_logliks(model, tokenizer, plain_prompts, [tokens for tokens, _ in replies])
    rows = []
    for i, (question, (tokens, ended), loglik) in enumerate(zip(questions, replies, logliks, strict=True)):
        rows.append({"id": i, "question": question, "text": tokenizer.decode(tokens, skip_special_tokens=True),
                     **signals(tokens, ended, loglik)})
    return rows


# ---- summaries ---------------------------------------------------------------------------------

def summarise(rows: list[dict], base_rows: list[dict] | None = None, n_boot: int = 256, seed: int = 0) -> dict:
    """Mean of each signal with a bootstrap interval, the degenerate count and the flag; with
    base_rows also the unsteered model's degenerate count, for comparison."""
    rows = [judge(r) for r in rows]
    summary = {key: mean_ci([r[key] for r in rows], n_boot=n_boot, seed=seed) for key in SUMMARY_KEYS}
    n_bad = int(sum(r["degenerate"] for r in rows))
    summary.update(n=len(rows), n_degenerate=n_bad, flagged=bool(rows) and n_bad >= FLAG_SHARE * len(rows),
                   thresholds={"max_repeat_rate": MAX_REPEAT_RATE, "min_loglik": MIN_LOGLIK,
                               "loop_min_tokens": LOOP_MIN_TOKENS, "flag_share": FLAG_SHARE})
    if base_rows is not None:
        summary["base_n_degenerate"] = int(sum(judge(r)["degenerate"] for r in base_rows))
    return summary


def flag_cell(summary: dict | None) -> str:
    """What a table shows: "ok 1/16" or "⚠ 9/16" (degenerate continuations of all)."""
    if not summary:
        return "n/a"
    return f"{'⚠' if summary['flagged'] else 'ok'} {summary['n_degenerate']}/{summary['n']}"
