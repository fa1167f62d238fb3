"""`sspace`: steering in the S-space of each layer's residual writers, as steering-lite defines it.

For a Linear y = x W^T + b with W = U S V^T (thin SVD), the whitened S-space coordinates of its input,
x V sqrt(S), can be read off its output: x_S = (y - b) U / sqrt(S). In every steered decoder layer both
residual writers are used: the attention output projection (o_proj) and the MLP down projection
(down_proj).

Fit, per module, from the last-token outputs under the POS and NEG persona prompts:
    d_S = mean(x_S over POS) - mean(x_S over NEG),   d_hat = d_S / |d_S|
over all min(d_out, d_in) modes (full rank, the reference default), or over the `rank` modes of
largest |d_S| when a rank is given.

Apply, at every token, to the module's output:
    gate  = |cos(x_S, d_hat)|                      (per token, in [0, 1])
    y'    = y + coef * gate * (d_hat * sqrt(S)) U^T
so a token is pushed along the direction in proportion to how much its S-space coordinates already
line up with it, and a token orthogonal to it is left alone. The reference also flips singular-vector
signs by a majority vote; d_S and U change sign together under such a flip, so the edit is the same and
the flip is left out.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .. import chat
from ..adapters import decoder_layers
from ..delta import model_fingerprint
from ..errors import WeightsteerError
from ..methods import SteeringMethod
from ..steer import check_alpha

WRITERS = ("o_proj", "down_proj")  # the Linears of a decoder layer that write into its residual stream
EPS = 1e-8  # in the cosine's norms, as the reference


def writer_modules(model, layers: list[int]) -> dict[str, torch.nn.Linear]:
    """Full name -> module of every residual writer in the given decoder layers."""
    stack = decoder_layers(model)
    prefix = next(name for name, m in model.named_modules() if m is stack)
    found = {}
    for i in layers:
        for sub, module in stack[i].named_modules():
            if sub.split(".")[-1] in WRITERS and isinstance(module, torch.nn.Linear):
                found[f"{prefix}.{i}.{sub}"] = module
    missing = [i for i in layers if not any(n.startswith(f"{prefix}.{i}.") for n in found)]
    if missing:
        raise WeightsteerError(f"sspace needs Linear {' and '.join(WRITERS)} modules in each decoder layer; "
                               f"layer {missing[0]} of {type(model).__name__} has none")
    return found


@torch.no_grad()
def last_token_outputs(model, tokenizer, texts: list[str], modules: dict[str, torch.nn.Module],
                       batch_size: int = 16) -> dict[str, torch.Tensor]:
    """name -> (len(texts), d_out) float32 output of each module at each prompt's last token."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def capture(name: str):
        def hook(module, args, output):
            captured[name].append(output[:, -1].float().cpu())  # left padding: the last token is at -1
        return hook

    handles = [m.register_forward_hook(capture(name)) for name, m in modules.items()]
    try:
        for start in range(0, len(texts), batch_size):
            batch = chat.encode(tokenizer, texts[start:start + batch_size], model.device)
            model(**batch, use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(rows) for name, rows in captured.items()}


def fit_module(weight: torch.Tensor, bias: torch.Tensor | None, y_pos: torch.Tensor, y_neg: torch.Tensor,
               rank: int | None = None) -> dict[str, torch.Tensor]:
    """The S-space state of one Linear: U (d_out, r), sqrt_s (r), d_hat (r) and the bias (zeros if none)."""
    u, s, _ = torch.linalg.svd(weight.float(), full_matrices=False)
    b = bias.float() if bias is not None else torch.zeros(weight.shape[0])
    sqrt_s = s.sqrt()
    d_s = ((y_pos.float() - b) @ u / sqrt_s).mean(0) - ((y_neg.float() - b) @ u / sqrt_s).mean(0)
    if rank is not None and rank < len(s):
        keep = d_s.abs().topk(rank).indices.sort().values
        u, sqrt_s, d_s = u[:, keep], sqrt_s[keep], d_s[keep]
    return {"U": u.contiguous(), "sqrt_s": sqrt_s.contiguous(), "d_hat": (d_s / (d_s.norm() + EPS)).contiguous(),
            "bias": b.contiguous()}


def edit(state: dict[str, torch.Tensor], coef: float, y: torch.Tensor) -> torch.Tensor:
    """The module output y plus coef * gate * (d_hat sqrt(S)) U^T, the gate per token (module docstring)."""
    x_s = (y - state["bias"]) @ state["U"] / state["sqrt_s"]
    gate = ((x_s / (x_s.norm(dim=-1, keepdim=True) + EPS)) @ state["d_hat"]).abs()
    return y + coef * gate[..., None] * ((state["d_hat"] * state["sqrt_s"]) @ state["U"].T)


def check_fitted_on(meta: dict, model) -> None:
    """One clear line when steering vectors (their file's metadata) were fitted on another model."""
    fingerprint = meta.get("fingerprint")
    if fingerprint and fingerprint != model_fingerprint(model):
        raise WeightsteerError(f"these steering vectors were fitted on '{meta.get('base_model', 'another model')}' "
                               "and do not fit this model (different weights): refit them on this model")


@dataclass
class SSpaceSteering(SteeringMethod):
    states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # module name -> fit_module state
    meta: dict = field(default_factory=dict)

    def apply(self, model, coef: float):
        coef = check_alpha(coef)
        self.check_fits(model)
        ref = next(model.parameters())
        modules = {name: model.get_submodule(name) for name in self.states}

        def hook_for(state):
            moved = {k: v.to(ref.device, ref.dtype) for k, v in state.items()}
            return lambda module, args, output: edit(moved, coef, output)

        @contextlib.contextmanager
        def hooked():
            handles = []
            try:
                for name, module in modules.items():
                    handles.append(module.register_forward_hook(hook_for(self.states[name])))
                yield model
            finally:
                for handle in handles:
                    handle.remove()

        return hooked()

    def check_fits(self, model) -> None:
        check_fitted_on(self.meta, model)
        made_for = self.meta.get("base_model", "another model")
        names = dict(model.named_modules())
        for name, state in self.states.items():
            module = names.get(name)
            if not isinstance(module, torch.nn.Linear) or module.out_features != state["U"].shape[0]:
                raise WeightsteerError(f"these sspace vectors were fitted on '{made_for}' (module {name} "
                                       "differs here): refit them on this model")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{name}::{key}": t for name, state in self.states.items() for key, t in state.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict) -> SSpaceSteering:
        states: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            name, part = key.rsplit("::", 1)
            states.setdefault(name, {})[part] = t
        return cls("sspace", states=states, meta=meta)


def fit_sspace(model, tokenizer, pos_texts: list[str], neg_texts: list[str], layers: list[int],
               rank: int | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The S-space state of every residual writer in `layers` (module docstring)."""
    modules = writer_modules(model, layers)
    pos = last_token_outputs(model, tokenizer, pos_texts, modules)
    neg = last_token_outputs(model, tokenizer, neg_texts, modules)
    return {name: fit_module(m.weight.detach().cpu(), None if m.bias is None else m.bias.detach().cpu(),
                             pos[name], neg[name], rank)
            for name, m in modules.items()}
