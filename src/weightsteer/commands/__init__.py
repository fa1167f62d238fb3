"""Subcommands of the `weightsteer` CLI, one module per group, each with register(subparsers)."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_model(p):
    from ..models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local folder or 'smollm2-135m' (default)")


def add_allow_modified_base(p):
    p.add_argument("--allow-modified-base", action="store_true",
                   help="steer a model whose weights differ from the direction's base (a fine-tuned or already "
                        "steered copy), with a warning")
