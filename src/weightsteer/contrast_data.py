"""Your own contrastive data instead of generated responses (`--data FILE.jsonl` or a behaviour's `data`).

Two row shapes, mixed freely in one JSONL file:

    {"prompt": ..., "pos": "the POS response", "neg": "the NEG response"}      a pair
    {"side": "pos" | "neg", "prompt": ..., "response": "..."}                  one side

`prompt` is a string (one user turn) or a list of chat messages [{"role": "system" | "user" |
"assistant", "content": "..."}] ending with a user turn; the response is the assistant's reply to
it. Other keys are kept out of training and ignored. A Hugging Face dataset id (ORG/NAME, with
`--data-split`) is read the same way where the hub is reachable and the `datasets` package is
installed. Every row is checked, and a problem names the file and line.
"""

from __future__ import annotations

from pathlib import Path

from .errors import WeightsteerError
from .jsonl import jsonl_rows

SIDES = ("pos", "neg")
ROLES = ("system", "user", "assistant")


def read_contrast_data(source: str | Path, split: str | None = None) -> list[dict]:
    """Rows {side, prompt, response}: every pair split into its two sides, in file order."""
    path = Path(source)
    if path.is_file():
        raw = list(jsonl_rows(path))
    elif path.exists() or path.suffix in (".jsonl", ".json") or str(source).count("/") != 1:
        raise WeightsteerError(f"contrastive data file '{source}' does not exist: pass a JSONL file "
                               "(see docs/behaviours.md) or a Hugging Face dataset id ORG/NAME")
    else:
        raw = _hub_rows(str(source), split)
    rows = [side_row for row, where in raw for side_row in normalise(row, where)]
    for side in SIDES:
        if not any(r["side"] == side for r in rows):
            raise WeightsteerError(f"'{source}' has no {side.upper()} responses: each side needs at least one row")
    return rows


def normalise(row, where: str) -> list[dict]:
    if not isinstance(row, dict):
        raise WeightsteerError(f"{where}: a row must be a JSON object")
    prompt = check_prompt(row.get("prompt"), where)
    if "side" in row:
        side, response = row["side"], row.get("response")
        if side not in SIDES:
            raise WeightsteerError(f"{where}: 'side' must be \"pos\" or \"neg\", got {side!r}")
        return [{"side": side, "prompt": prompt, "response": check_text(response, where, "response")}]
    if "pos" in row or "neg" in row:
        return [{"side": side, "prompt": prompt, "response": check_text(row.get(side), where, side)}
                for side in SIDES]
    raise WeightsteerError(f"{where}: a row needs 'pos' and 'neg' (a pair) or 'side' and 'response' (one side)")


def check_text(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise WeightsteerError(f"{where}: '{key}' must be a non-empty string")
    return value


def check_prompt(prompt, where: str) -> str | list[dict]:
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if not isinstance(prompt, list) or not prompt:
        raise WeightsteerError(f"{where}: 'prompt' must be a non-empty string or a list of chat messages")
    for turn in prompt:
        if (not isinstance(turn, dict) or turn.get("role") not in ROLES
                or not isinstance(turn.get("content"), str)):
            raise WeightsteerError(f"{where}: each message in 'prompt' must be {{\"role\": "
                                   f"{' | '.join(ROLES)}, \"content\": \"...\"}}")
    if prompt[-1]["role"] != "user":
        raise WeightsteerError(f"{where}: 'prompt' must end with a user message (the response answers it)")
    return [{"role": t["role"], "content": t["content"]} for t in prompt]


def _hub_rows(name: str, split: str | None):
    try:
        from datasets import load_dataset
    except ImportError:
        raise WeightsteerError(f"reading the hub dataset '{name}' needs the datasets package: pip install "
                               "datasets, or download it and pass a JSONL file") from None
    try:
        dataset = load_dataset(name, split=split or "train")
    except Exception as err:  # network, missing split, unknown id: one line either way
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsteerError(f"could not read dataset '{name}' split '{split or 'train'}' ({reason}): "
                               "check the id and --data-split, or pass a local JSONL file") from None
    for index, row in enumerate(dataset):
        yield dict(row), f"{name} ({split or 'train'}) row {index}"
