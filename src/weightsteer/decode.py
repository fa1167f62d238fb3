"""Batched token-by-token decoding with a KV cache: the one generation loop weightsteer's own stages use.

Why not `model.generate`: on a CPU, a decoding step of a small model costs about as much for 80
rows as for 16 (each step streams every weight from memory once), so large batches are the main
lever, and three details make them safe and cheap:

- Sampling draws one uniform number per row per step from that row's own seeded generator and
  inverts the row's cumulative distribution. A sampled response depends on its prompt and its seed,
  not on which other prompts share its batch or how large the batch is.
- A row that has produced a stop token is dropped from the batch (and from the cache), so short
  answers stop costing compute.
- The log-probabilities of every generated token's distribution can be kept: iso-KL calibration
  reads the steered distributions from here instead of running a second, teacher-forced pass.

Prompts are left-padded (chat.encode) and get explicit position ids counted over their real
tokens, so a padded prompt is decoded as it would be alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

BATCH = 64  # rows per decoding batch where the caller has no reason to choose: a step of a small model
#             on a CPU costs about twice as much for 64 rows as for 16 (it is bound by reading the weights)


@dataclass
class Decoded:
    tokens: list[list[int]]  # per row: the generated tokens, up to and including the first stop token
    logprobs: list[torch.Tensor] | None  # per row: (len(tokens), vocab) float32 log-softmax, when kept


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens generation stops on: the model's generation config, else the tokenizer's EOS."""
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return [eos] if isinstance(eos, int) else list(eos)


def left_padded(token_lists: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token lists padded on the left to the longest (the padding masked)."""
    width = max(len(tokens) for tokens in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, device=device)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long, device=device)
    for row, tokens in enumerate(token_lists):
        if tokens:
            ids[row, width - len(tokens):] = torch.tensor(tokens, device=device)
            mask[row, width - len(tokens):] = 1
    return ids, mask


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted over the real tokens of a left-padded batch (padding gets 0)."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


def sample_rows(logits: torch.Tensor, temperature: float, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), each row with its own generator."""
    probs = torch.softmax(logits.double() / temperature, -1)
    cdf = probs.cumsum(-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators]).to(cdf.device)
    picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    return picks.clamp_max(logits.shape[-1] - 1)


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
           stop_ids: list[int], temperature: float = 0.0, seeds: list[int] | None = None,
           keep_logprobs: bool = False, done: Callable[[list[int]], bool] | None = None,
           on_step: Callable[[], None] | None = None) -> Decoded:
    """Greedy (temperature 0) or sampled continuations of a left-padded batch of prompts.

    With sampling, `seeds` gives each row's seed (required: it is what makes a row reproducible).
    `done(tokens)` can end a row early as a stop token does (a stop string, say); `on_step()` is
    called after every step (a progress bar: one batch can take minutes)."""
    n = len(input_ids)
    if temperature > 0 and (seeds is None or len(seeds) != n):
        raise ValueError("sampling needs one seed per row")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds] if temperature > 0 else []
    stops = torch.tensor(stop_ids, device=input_ids.device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    kept: list[list[torch.Tensor]] = [[] for _ in range(n)]
    rows = torch.arange(n)  # the original index of each row still in the batch
    mask = attention_mask
    positions = positions_of(mask)[:, -1:]
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions_of(mask),
                   cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    for step in range(max_new_tokens):
        logits = logits.float()
        if temperature > 0:
            chosen = sample_rows(logits, temperature, [generators[i] for i in rows.tolist()])
        else:
            chosen = logits.argmax(-1)
        logprobs = logits.log_softmax(-1) if keep_logprobs else None
        for j, i in enumerate(rows.tolist()):
            tokens[i].append(int(chosen[j]))
            if keep_logprobs:
                kept[i].append(logprobs[j])
        if on_step is not None:
            on_step()
        going = ~torch.isin(chosen, stops)
        if done is not None:
            going &= torch.tensor([not done(tokens[i]) for i in rows.tolist()], device=going.device)
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():  # drop finished rows from the batch and the cache
            index = going.nonzero()[:, 0]
            cache.batch_select_indices(index)
            rows, chosen, mask, positions = rows[index], chosen[index], mask[index], positions[index]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        positions = positions + 1
        logits = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=positions,
                       cache=cache, use_cache=True).logits[:, -1]
    return Decoded(tokens, [torch.stack(k) for k in kept] if keep_logprobs else None)
