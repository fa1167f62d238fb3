"""Subcommands of the `weightsteer` CLI, one module per group, each with register(subparsers)."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_model(p):
    from ..models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local folder or 'smollm2-135m' (default)")


def add_matmul_dtype(p):
    from ..matmuls import CHOICES

    p.add_argument("--matmul-dtype", choices=CHOICES, default="float32",
                   help="bfloat16: matrix products in bf16 (autocast; weights and steering arithmetic stay float32), "
                        "2-3.5x faster scoring and 1.5x faster training on CPUs with AMX/AVX512-BF16; auto: "
                        "bfloat16 where the hardware has it. Results are kept apart from float32 ones "
                        "(default float32; docs/performance.md)")


def add_allow_modified_base(p):
    p.add_argument("--allow-modified-base", action="store_true",
                   help="steer a model whose weights differ from the direction's base (a fine-tuned or already "
                        "steered copy), with a warning")


# ---- option types: a bad value is refused while the command line is read, before any work -------

def _whole_at_least(text: str, least: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def _finite(text: str, ok, what: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number {what}, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number of at least 1 (--limit, --batch-size, --n-boot, --steps...)."""
    return _whole_at_least(text, 1)


def whole(text: str) -> int:
    """A whole number of at least 0 (--max-think, --warmup-steps, --oft-block-size)."""
    return _whole_at_least(text, 0)


def non_negative_number(text: str) -> float:
    """A finite number of at least 0 (--weight-decay)."""
    return _finite(text, lambda v: v >= 0, "of at least 0")


def positive_number(text: str) -> float:
    """A finite number above 0 (--lr)."""
    return _finite(text, lambda v: v > 0, "above 0")


def tolerance(text: str) -> float:
    """A relative tolerance: a finite number strictly between 0 and 1 (--tol)."""
    import argparse

    value = positive_number(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a relative tolerance between 0 and 1, got {text!r}")
    return value
