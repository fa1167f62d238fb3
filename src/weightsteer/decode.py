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
- The KV cache reserves room for every token the loop can add (ReservedLayer), so a step writes its
  keys and values in place; transformers' dynamic cache concatenates, copying the whole cache at
  every step (an eighth of a sampling batch's time on the embedded model).

Prompts are left-padded (chat.encode) and get explicit position ids counted over their real
tokens, so a padded prompt is decoded as it would be alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

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
    """One token per row from softmax(logits / temperature), each row with its own generator: the first
    token whose float64 cumulative probability exceeds u times the total, for one uniform u per row.

    Row by row: the same arithmetic as on the whole batch at once (each row's softmax and cumulative
    sum are computed alone either way), about three times faster for a batch of 80 rows of a 49k
    vocabulary, whose float64 copies do not fit in the cache."""
    picks = []
    for row, generator in zip(logits, generators, strict=True):
        cdf = torch.softmax(row.double() / temperature, -1).cumsum(-1)
        u = torch.rand(1, generator=generator, dtype=torch.float64).to(cdf.device)
        picks.append(torch.searchsorted(cdf, u * cdf[-1:], right=True))
    return torch.cat(picks).clamp_max(logits.shape[-1] - 1)


class ReservedLayer(DynamicLayer):
    """A dynamic cache layer that keeps its keys and values in a buffer with room for `reserve` more
    tokens than the first update brings, and writes each later update in place (growing by doubling
    if a caller adds more than it reserved). `keys` and `values` are views of the filled part."""

    def __init__(self, reserve: int):
        super().__init__()
        self.reserve = reserve
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if self.buffers is None or end > self.buffers[0].shape[-2]:
            capacity = end + self.reserve if self.buffers is None else max(end, 2 * self.buffers[0].shape[-2])
            self.buffers = tuple(self._grown(old, new, capacity) for old, new in
                                 zip((self.keys, self.values), (key_states, value_states), strict=True))
            self.device, self.is_initialized = key_states.device, True
        for buffer, new in zip(self.buffers, (key_states, value_states), strict=True):
            buffer[..., length:end, :] = new
        self.keys, self.values = (buffer[..., :end, :] for buffer in self.buffers)
        return self.keys, self.values

    def _grown(self, old: torch.Tensor | None, new: torch.Tensor, capacity: int) -> torch.Tensor:
        buffer = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
        if old is not None and old.numel():
            buffer[..., :old.shape[-2], :] = old
        return buffer

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.buffers is not None:
            self.buffers = tuple(buffer[indices] for buffer in self.buffers)
            length = self.keys.shape[-2]
            self.keys, self.values = (buffer[..., :length, :] for buffer in self.buffers)

    def reset(self) -> None:
        self.buffers = None
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a ReservedLayer is not cropped: decode never does it")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a ReservedLayer is not repeated: decode never does it")


def reserved_cache(model, reserve: int) -> DynamicCache:
    """A dynamic cache whose plain layers reserve room for `reserve` tokens after the prompt (others,
    such as sliding-window layers, stay as transformers makes them)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
           stop_ids: list[int], temperature: float = 0.0, seeds: list[int] | None = None,
           keep_logprobs: bool = False, done: Callable[[list[int]], bool] | None = None,
           on_step: Callable[[], None] | None = None,
           keep_rows: Callable[[torch.Tensor], None] | None = None) -> Decoded:
    """Greedy (temperature 0) or sampled continuations of a left-padded batch of prompts.

    With sampling, `seeds` gives each row's seed (required: it is what makes a row reproducible).
    `done(tokens)` can end a row early as a stop token does (a stop string, say); `on_step()` is
    called after every step (a progress bar: one batch can take minutes); `keep_rows(index)` is told
    which rows stay whenever finished ones leave the batch (per-row state such as steer_rows')."""
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
    cache = reserved_cache(model, max_new_tokens)
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
            if keep_rows is not None:
                keep_rows(index)
            rows, chosen, mask, positions = rows[index], chosen[index], mask[index], positions[index]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        positions = positions + 1
        logits = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=positions,
                       cache=cache, use_cache=True).logits[:, -1]
    return Decoded(tokens, [torch.stack(k) for k in kept] if keep_logprobs else None)
