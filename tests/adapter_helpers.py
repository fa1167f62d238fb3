"""Make pairs of saved adapters with random (non-zero) weights, fast, for dW tests."""

from __future__ import annotations

from weightsteer.tiny import noisy_adapter as random_adapter


def adapter_pair(model, method: str, root, rank: int = 4):
    pos, neg = root / f"{method}-pos", root / f"{method}-neg"
    random_adapter(model, method, pos, seed=1, rank=rank)
    random_adapter(model, method, neg, seed=2, rank=rank)
    return pos, neg
