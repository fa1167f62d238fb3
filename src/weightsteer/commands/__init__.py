"""Subcommands of the `weightsteer` CLI, one module per group, each with register(subparsers)."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_model(p):
    from ..models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local folder or 'smollm2-135m' (default)")
