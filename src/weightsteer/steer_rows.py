"""Several alphas in one batch: row i of every forward pass runs the model at W + alphas[i] * dW.

Weights hold one alpha at a time, so this leaves them alone and adds each row's alpha * B @ (A @ x)
to the output of every linear layer a low-rank direction touches (a forward hook). The extra
products cost 2k(in + out) per token at rank k, little beside the layer's own in * out, and a small
model's decoding step on a CPU costs about as much for 9 rows as for 3: greedy answers at -alpha, 0
and +alpha took 5.6 s in one batch against 14.8 s one alpha at a time (mood's three questions,
SmolLM2-135M, bf16 products, one thread; docs/performance.md). A dense direction would double
every steered product, so it is not batched this way (`rows_steerable` says no and callers take one
pass per alpha with `steer`).

(W + a B A) x = W x + a B (A x), so each row is the merged model's up to rounding: in float32 the
greedy answers are the same tokens as `steer`'s (test_steer_rows, and on the embedded model). With
bf16 products both ways round differently from float32 and equally far from it; greedy text is as
sensitive to that as to the batch's size (the alpha-0 answers, where the hooks add exactly zero,
differ from token 14 on between a batch of 3 and one of 9).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .delta import LowRank, WeightDelta
from .steer import check_alpha


def _steered_linears(model, delta: WeightDelta) -> dict[str, torch.nn.Linear] | None:
    """The linear layer of each part of a factored direction, or None if a part is dense, is not the
    weight of a plain linear layer (a hook on another kind of module could not add B @ A x), or is a
    weight other modules share (tied: merging moves them all, a hook only this layer's output)."""
    modules = dict(model.named_modules())
    holders = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    layers = {}
    for name, part in delta.parts.items():
        module_name, _, leaf = name.rpartition(".")
        layer = modules.get(module_name)
        if (not isinstance(part, LowRank) or leaf != "weight" or type(layer) is not torch.nn.Linear
                or holders[id(layer.weight)] > 1):
            return None
        layers[name] = layer
    return layers


def rows_steerable(model, delta: WeightDelta) -> bool:
    """Whether `steer_rows` can run this direction (a factored one, on unshared plain linear layers)."""
    return _steered_linears(model, delta) is not None


class RowAlphas:
    """The alpha of each row of the batch the model runs next. `keep(index)` follows a decoding loop
    that drops finished rows from its batch (decode's `keep_rows`)."""

    def __init__(self, alphas: Sequence[float], device):
        self.values = torch.tensor([check_alpha(a) for a in alphas], dtype=torch.float32, device=device)

    def keep(self, index: torch.Tensor) -> None:
        self.values = self.values[index.to(self.values.device)]


@contextlib.contextmanager
def steer_rows(model, delta: WeightDelta, alphas: Sequence[float]) -> Iterator[RowAlphas]:
    """Within the block, row i of every batch the model runs is steered at alphas[i] (the batch must
    have len(alphas) rows, or as many as `keep` has left). The weights are not touched."""
    delta.check_fits(model)
    layers = _steered_linears(model, delta)
    if layers is None:
        raise ValueError("steer_rows needs a factored direction on unshared plain linear layers; use steer per alpha")
    device = next(model.parameters()).device
    rows = RowAlphas(alphas, device)

    def hook_for(part: LowRank, weight: torch.Tensor):
        A, B = part.A.to(weight), part.B.to(weight)

        def add_rows(module, inputs, output):
            x = inputs[0]
            if x.shape[0] != len(rows.values):
                raise ValueError(f"a batch of {x.shape[0]} rows under steer_rows with {len(rows.values)} alphas")
            scale = rows.values.view(-1, *[1] * (x.dim() - 1)).to(output.dtype)
            return output + scale * F.linear(F.linear(x, A), B)
        return add_rows

    handles = [layer.register_forward_hook(hook_for(delta.parts[name], layer.weight)) for name, layer in layers.items()]
    try:
        yield rows
    finally:
        for handle in handles:
            handle.remove()
