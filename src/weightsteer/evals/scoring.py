"""The plumbing every benchmark shares: its data files, batched next-token scoring, greedy continuations.

Every benchmark reads a probability from the model's next token after a rendered prompt (the prompt
itself always comes from chat.render). Doing that in one place keeps the details right everywhere:

- Prompts are encoded left-padded (chat.encode) and sorted by length, so a batch carries little
  padding; results come back in the caller's order.
- Position ids are passed explicitly (counted over real tokens only), so a left-padded prompt gets
  the positions it would get alone. transformers does this in generate() but not in a plain forward
  call; rotary models would not notice the offset, models with learned absolute positions would.
- The prompts' shared beginning is run once and its KV cache reused by every batch.
- Only the last position's logits are computed (`logits_to_keep=1`): the LM head over every other
  position is the largest single cost for small models with big vocabularies.
- A "token set" is every vocabulary entry that decodes to the same word ("true", " true", "True"...),
  so a probe does not depend on which spelling the model prefers.

Data files come from the Hugging Face hub or a local folder; both paths end in `read_jsonl`, which
names the file and row of anything malformed.
"""

from __future__ import annotations

import copy
import json
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from .. import chat
from ..decode import BATCH as DECODE_BATCH
from ..decode import decode, left_padded, stop_token_ids
from ..errors import WeightsteerError
from ..hub import hub_problem
from ..jsonl import jsonl_rows

_DECODED_VOCAB: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hub_file(repo_id: str, filename: str, local_layout: str) -> Path:
    """Download one file of a hub dataset (or take it from the local hub cache)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    advice = (f"pass a local copy ({local_layout}) with --data-dir (eval), or --tinymfv-dir / --airisk-dir / "
              "--mmlu-dir (run, sweep, headroom)")
    cached = try_to_load_from_cache(repo_id, filename, repo_type="dataset")
    if isinstance(cached, str):
        return Path(cached)
    problem = hub_problem()
    if problem:  # fail in seconds, not after the download's retries
        raise WeightsteerError(f"could not fetch {filename} of dataset {repo_id}: the Hugging Face hub cannot be "
                               f"used ({problem}); {advice}")
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as err:  # proxy errors, missing file, a hub that stops answering: all mean "use a local copy"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsteerError(f"could not fetch {filename} of dataset {repo_id} from the Hugging Face hub "
                               f"({reason}); {advice}") from None


MAX_TEXT_CHARS = 20_000  # a benchmark text longer than this is a damaged file, not a prompt


def read_jsonl(path: Path, required: Sequence[str], any_type: Sequence[str] = ()) -> list[dict]:
    """The rows of a UTF-8 JSONL file, each checked to have the required columns, each a non-empty
    string of at most MAX_TEXT_CHARS characters (except the columns in `any_type`)."""
    if not path.is_file():
        raise WeightsteerError(f"data file {path} does not exist")
    rows = []
    for row, where in jsonl_rows(path):
        missing = [c for c in required if not isinstance(row, dict) or c not in row]
        if missing:
            raise WeightsteerError(f"{where} has no column {missing[0]!r} "
                                   f"(required: {', '.join(required)})")
        for column in required:
            value = row[column]
            if column in any_type:
                continue
            if not isinstance(value, str) or not value.strip():
                raise WeightsteerError(f"{where}: {column!r} must be a non-empty string, got "
                                       f"{json.dumps(value)[:40]}")
            if len(value) > MAX_TEXT_CHARS:
                raise WeightsteerError(f"{where}: {column!r} is {len(value)} characters long, more "
                                       f"than the {MAX_TEXT_CHARS} a benchmark item may have; is the file damaged?")
        rows.append(row)
    if not rows:
        raise WeightsteerError(f"data file {path} has no rows")
    return rows


def decoded_vocab(tokenizer) -> list[str]:
    """Each token id's text, stripped; decoded once per tokenizer."""
    if tokenizer not in _DECODED_VOCAB:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _DECODED_VOCAB[tokenizer] = [t.strip() for t in texts]
    return _DECODED_VOCAB[tokenizer]


def token_set(tokenizer, words: Iterable[str], *, case_sensitive: bool = False) -> torch.Tensor:
    """Ids of every token whose decoded text, stripped (and lower-cased unless case_sensitive), is one
    of `words`: "yes" matches " Yes", "yes" and "YES"; a case-sensitive "A" matches " A" but not " a"."""
    fold = (lambda t: t) if case_sensitive else str.lower
    wanted = {fold(w.strip()) for w in words}
    ids = [i for i, text in enumerate(decoded_vocab(tokenizer)) if fold(text) in wanted]
    if not ids:
        raise WeightsteerError(f"the tokenizer has no token for any of {sorted(wanted)}")
    return torch.tensor(ids, dtype=torch.long)


def _length_sorted_batches(tokenizer, prompts: Sequence[str], batch_size: int) -> list[list[int]]:
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False).input_ids]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


MIN_SHARED_PREFIX = 8  # tokens; below this, copying the prefix's cache into every batch is not worth it


def shared_prefix_length(token_lists: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt has in common, leaving each at least one token of its own."""
    first, n = token_lists[0], min(len(t) for t in token_lists) - 1
    for i in range(n):
        if any(t[i] != first[i] for t in token_lists):
            return i
    return max(n, 0)


@torch.inference_mode()
def next_token_logprobs(model, tokenizer, prompts: Sequence[str], token_sets: Sequence[torch.Tensor], *,
                        batch_size: int = 16, progress: bool = True, desc: str = "scoring") -> np.ndarray:
    """log P(next token is in set k | prompt i), shape (prompts, sets), under the full-vocabulary softmax.

    The prompts' shared beginning (the chat template, a system prompt, a benchmark's instruction) runs
    once; each batch starts from a copy of its KV cache and runs only the rest. A row is laid out as
    [shared prefix][left padding][its own tokens], with the padding masked and positions counted over
    real tokens, so each row is scored as it would be alone."""
    out = np.empty((len(prompts), len(token_sets)), dtype=np.float64)
    device = next(model.parameters()).device
    sets = [s.to(device) for s in token_sets]
    ids = tokenizer(list(prompts), add_special_tokens=False).input_ids
    n = shared_prefix_length(ids) if len(ids) > 1 else 0
    prefix_cache = None
    if n >= MIN_SHARED_PREFIX:
        prefix_cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([ids[0][:n]], device=device), cache=prefix_cache, use_cache=True, logits_to_keep=1)
    else:
        n = 0
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
    with tqdm(total=len(prompts), desc=desc, disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            input_ids, own_mask = left_padded([ids[i][n:] for i in batch], tokenizer.pad_token_id, device)
            mask = torch.cat([own_mask.new_ones(len(batch), n), own_mask], 1)
            positions = (mask.cumsum(-1) - 1)[:, n:].clamp(min=0)
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                           logits_to_keep=1).logits[:, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            per_set = torch.stack([torch.logsumexp(logprobs[:, s], dim=-1) for s in sets], dim=-1)
            out[batch] = per_set.double().cpu().numpy()
            bar.update(len(batch))
    return out


def cut_at(text: str, stop: str, keep: bool) -> str:
    """`text` up to the first `stop` (and including it when keep); all of it when stop does not occur."""
    at = text.find(stop)
    return text if at < 0 else text[:at + len(stop)] if keep else text[:at]


@torch.inference_mode()
def greedy_continuations(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                         stop: str | None = None, keep_stop: bool = False, batch_size: int = 16,
                         progress: bool = True, desc: str = "generating") -> list[str]:
    """The greedy continuation of each prompt, cut before `stop` if it appears (after it with keep_stop,
    so a caller can tell a stopped continuation from one that ran out of tokens); special tokens removed.

    A row stops at an end-of-sequence token or as soon as its text contains `stop`. Batches hold at
    least decode.BATCH prompts: a decoding step costs about the same for 64 rows as for 16."""
    stops = stop_token_ids(model, tokenizer)
    batch_size = max(batch_size, DECODE_BATCH)

    def has_stop(tokens: list[int]) -> bool:
        return stop in tokenizer.decode(tokens, skip_special_tokens=True)

    device = next(model.parameters()).device
    texts = [""] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, disable=not progress) as bar:
        for batch in _length_sorted_batches(tokenizer, prompts, batch_size):
            enc = chat.encode(tokenizer, [prompts[i] for i in batch], device)
            new_tokens = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=max_new_tokens,
                                stop_ids=stops, done=has_stop if stop else None).tokens
            for i, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                texts[i] = cut_at(text, stop, keep_stop) if stop else text
            bar.update(len(batch))
    return texts
