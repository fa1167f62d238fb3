"""WeightDelta: the steering direction dW = theta_pos - theta_neg, in weight space.

Each entry maps a parameter name (as in model.named_parameters()) to either a dense float32
tensor or a LowRank pair (B, A) with dW = B @ A. LoRA, PiSSA and DeLoRA directions are exactly
low rank (rank <= 2r: the pos and neg factors stacked), so they are kept factored; DoRA, OFT and
IA3 change weights at full rank and are stored dense, one module at a time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsteerError
from .models import model_name
from .tensorfile import load_tensors, save_tensors

FORMAT = "weightsteer.delta/1"


@dataclass(frozen=True)
class LowRank:
    """dW = B @ A with B (out, k) and A (k, in)."""

    B: torch.Tensor
    A: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B.shape[0], self.A.shape[1])

    def dense(self) -> torch.Tensor:
        return self.B @ self.A


Part = torch.Tensor | LowRank


def part_dense(part: Part) -> torch.Tensor:
    return part.dense() if isinstance(part, LowRank) else part


def part_norm(part: Part) -> float:
    """Frobenius norm; for B @ A via the k x k Gram matrices, without forming the dense matrix."""
    if isinstance(part, LowRank):
        return math.sqrt(max(float(((part.A @ part.A.T) * (part.B.T @ part.B)).sum()), 0.0))
    return float(part.norm())


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the first rows of the input embedding, rounded to bf16 so that float32 and
    bf16 copies of the same checkpoint agree, while other checkpoints (even of the same shape) do not."""
    rows = model.get_input_embeddings().weight[:16].detach().float().cpu().to(torch.bfloat16)
    return hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest()[:16]


class WeightDelta:
    def __init__(self, parts: dict[str, Part], meta: dict | None = None):
        self.parts = dict(parts)
        self.meta = dict(meta or {})

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_adapters(cls, model, pos_dir, neg_dir, **meta) -> WeightDelta:
        """dW = theta_pos - theta_neg for two PEFT adapters trained on the same base `model`.

        The model is wrapped with both adapters, each module's difference is taken in turn, and the
        model is returned to exactly its original weights; no full copy of the model is made.
        """
        from .extract import extract_parts  # imported here: extract imports this module

        parts, method = extract_parts(model, Path(pos_dir), Path(neg_dir))
        info = {"base_model": model_name(model), "fingerprint": model_fingerprint(model), "method": method}
        return cls(parts, {**info, **meta})

    # ---- views --------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.parts)

    def dense(self) -> dict[str, torch.Tensor]:
        return {name: part_dense(part) for name, part in self.parts.items()}

    def norms(self) -> dict[str, float]:
        return {name: part_norm(part) for name, part in self.parts.items()}

    def is_factored(self) -> bool:
        return all(isinstance(p, LowRank) for p in self.parts.values())

    def __repr__(self) -> str:
        kind = "factored" if self.is_factored() else "dense"
        return f"WeightDelta({len(self.parts)} modules, {kind}, method={self.meta.get('method')!r})"

    # ---- arithmetic ---------------------------------------------------------------------------
    def __mul__(self, c: float) -> WeightDelta:
        c = float(c)
        scaled = {n: LowRank(c * p.B, p.A) if isinstance(p, LowRank) else c * p for n, p in self.parts.items()}
        return WeightDelta(scaled, self.meta)

    __rmul__ = __mul__

    def __neg__(self) -> WeightDelta:
        return self * -1.0

    def __add__(self, other: WeightDelta) -> WeightDelta:
        fp, other_fp = self.meta.get("fingerprint"), other.meta.get("fingerprint")
        if fp and other_fp and fp != other_fp:
            raise WeightsteerError(f"cannot combine directions of different base models "
                                   f"({self.meta.get('base_model')} and {other.meta.get('base_model')})")
        parts = dict(self.parts)
        for name, part in other.parts.items():
            if name not in parts:
                parts[name] = part
            elif isinstance(parts[name], LowRank) and isinstance(part, LowRank):
                parts[name] = LowRank(torch.cat([parts[name].B, part.B], 1), torch.cat([parts[name].A, part.A], 0))
            else:
                parts[name] = part_dense(parts[name]) + part_dense(part)
        methods = {self.meta.get("method"), other.meta.get("method")}
        meta = {**self.meta, "method": methods.pop() if len(methods) == 1 else "composed"}
        return WeightDelta(parts, meta)

    def __sub__(self, other: WeightDelta) -> WeightDelta:
        return self + (-other)

    # ---- fitting a model ----------------------------------------------------------------------
    def check_fits(self, model) -> None:
        """Refuse, with one clear line, a direction made for another model."""
        made_for = self.meta.get("base_model", "another model")
        fp = self.meta.get("fingerprint")
        if fp and fp != model_fingerprint(model):
            raise WeightsteerError(f"this steering direction was made for '{made_for}' and does not fit "
                                   "this model (different weights): rebuild it on this model")
        params = dict(model.named_parameters())
        for name, part in self.parts.items():
            if name not in params:
                raise WeightsteerError(f"this steering direction was made for '{made_for}': the model has no "
                                       f"parameter '{name}' (another architecture?)")
            if tuple(params[name].shape) != tuple(part.shape):
                raise WeightsteerError(f"this steering direction was made for '{made_for}': '{name}' has shape "
                                       f"{tuple(part.shape)} but the model's is {tuple(params[name].shape)}")

    # ---- files --------------------------------------------------------------------------------
    def save(self, path) -> None:
        tensors = {}
        for name, part in self.parts.items():
            if isinstance(part, LowRank):
                tensors[f"{name}:B"], tensors[f"{name}:A"] = part.B, part.A
            else:
                tensors[f"{name}:dense"] = part
        save_tensors(path, tensors, {**self.meta, "format": FORMAT, "modules": self.names,
                                     "norms": {n: round(v, 6) for n, v in self.norms().items()}})

    @classmethod
    def load(cls, path) -> WeightDelta:
        tensors, meta = load_tensors(path, what="steering direction", fmt=FORMAT,
                                     fix="make one with 'weightsteer run'")
        parts: dict[str, Part] = {}
        for name in meta.pop("modules"):
            if f"{name}:dense" in tensors:
                parts[name] = tensors[f"{name}:dense"]
            elif f"{name}:B" in tensors and f"{name}:A" in tensors:
                parts[name] = LowRank(tensors[f"{name}:B"], tensors[f"{name}:A"])
            else:
                raise WeightsteerError(f"'{path}' is damaged: module '{name}' has no tensors; regenerate it")
        meta.pop("norms", None)
        meta.pop("format", None)
        return cls(parts, meta)
