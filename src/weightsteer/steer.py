"""Apply alpha * dW to a model's weights in place, and put them back bit for bit.

No hooks: the steered model is an ordinary model, so steered inference runs at unsteered speed.
The touched weights are kept as they were and copied back on exit, which is exact in any dtype
(adding and subtracting alpha * dW in bf16 would not round-trip).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from .atomic import atomic_path, check_replaceable, mark_output
from .delta import LowRank, WeightDelta
from .errors import WeightsteerError

MERGED_KIND = "merged checkpoint"


def check_alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise WeightsteerError(f"alpha must be a finite number, got {alpha!r}")
    return value


@torch.no_grad()
def add_delta(model, delta: WeightDelta, alpha: float) -> None:
    """W += alpha * dW for every module of dW (in float32, then rounded once to the weight's dtype)."""
    params = dict(model.named_parameters())
    for name, part in delta.parts.items():
        weight = params[name]
        if isinstance(part, LowRank) and weight.dtype == torch.float32:
            weight.addmm_(part.B.to(weight.device), part.A.to(weight.device), alpha=alpha)
        elif isinstance(part, LowRank):
            update = part.B.to(weight.device) @ part.A.to(weight.device)
            weight.copy_(weight.float().add_(update, alpha=alpha))
        else:
            weight.copy_(weight.float().add_(part.to(weight.device), alpha=alpha))


@contextlib.contextmanager
def steer(model, delta: WeightDelta, alpha: float = 1.0) -> Iterator[torch.nn.Module]:
    """Within the block the weights are W + alpha * dW; after it they are exactly W again,
    on a normal exit, an exception or Ctrl-C."""
    alpha = check_alpha(alpha)
    delta.check_fits(model)
    params = dict(model.named_parameters())
    originals = {name: params[name].detach().clone() for name in delta.names}
    try:
        if alpha != 0.0:
            add_delta(model, delta, alpha)
        yield model
    finally:
        with torch.no_grad():
            for name, value in originals.items():
                params[name].copy_(value)


def save_steered(model, tokenizer, delta: WeightDelta, alpha: float, out_dir) -> None:
    """A normal Hugging Face checkpoint of the base model with alpha * dW merged in. `out_dir` must be
    new or an earlier checkpoint written here: never the base model's folder or anyone else's files."""
    check_replaceable(out_dir, MERGED_KIND, protected=(getattr(model.config, "_name_or_path", None),))
    with steer(model, delta, alpha), atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        mark_output(tmp, MERGED_KIND)
