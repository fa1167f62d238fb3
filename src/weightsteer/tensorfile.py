"""Safetensors files with a JSON header of our own: written atomically, read with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .errors import WeightsteerError

HEADER_KEY = "weightsteer"


def save_tensors(path, tensors: dict[str, torch.Tensor], header: dict) -> None:
    """float32 CPU tensors and `header` (which must hold a "format") in one safetensors file."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={HEADER_KEY: json.dumps(header)})


def load_tensors(path, *, what: str, fmt: str, fix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, header) of a file saved by save_tensors with header["format"] == fmt.

    `what` names the content ("a steering direction") and `fix` says what to do ("regenerate it").
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsteerError(f"no {what} at '{path}': {fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(HEADER_KEY)
        tensors = load_file(str(path))
        header = json.loads(raw) if raw else {}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsteerError(f"'{path}' is not a readable safetensors file ({err}): {fix}") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise WeightsteerError(f"'{path}' is a safetensors file without weightsteer's header (not weightsteer's "
                               f"{what}): {fix}")
    return tensors, header


def header_format(path) -> str | None:
    """The "format" of a file's weightsteer header; None for anything else (not safetensors, no header)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get(HEADER_KEY) or "null")
    except (SafetensorError, OSError, ValueError):
        return None
    return header.get("format") if isinstance(header, dict) else None
