"""WeightDelta: the steering direction dW = theta_pos - theta_neg, in weight space.

Each entry maps a parameter name (as in model.named_parameters()) to either a dense float32
tensor or a LowRank pair (B, A) with dW = B @ A. LoRA, PiSSA and DeLoRA directions are exactly
low rank (rank <= 2r: the pos and neg factors stacked), so they are kept factored; DoRA, OFT and
IA3 change weights at full rank and are stored dense, one module at a time.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsteerError
from .models import FINGERPRINT_PREFIX, base_fingerprint, model_name
from .tensorfile import load_tensors, save_tensors

FORMAT = "weightsteer.delta/1"
# (fingerprint a direction was made for, fingerprint of the modified model) pairs the user allowed
_ACCEPTED_BASES: set[tuple[str, str]] = set()


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
    bf16 copies of the same checkpoint agree. Kept for what it already keys (cached rows, data and
    activation fits: changing it would recompute every finished run) and for directions saved before
    models.base_fingerprint; it cannot tell a fine-tuned or steered copy from its base."""
    rows = model.get_input_embeddings().weight[:16].detach().float().cpu().to(torch.bfloat16)
    return hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest()[:16]


def fingerprint_like(model: torch.nn.Module, recorded: str) -> str:
    """The model's fingerprint of the same kind as a recorded one (directions saved before
    base_fingerprint hold the embedding-only kind)."""
    return base_fingerprint(model) if recorded.startswith(FINGERPRINT_PREFIX) else model_fingerprint(model)


def same_kind(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a.startswith(FINGERPRINT_PREFIX) == b.startswith(FINGERPRINT_PREFIX)


def check_part(name: str, part: Part, where: str) -> None:
    """Refuse a module whose tensors are not finite floating point matrices of matching ranks."""
    tensors = (part.B, part.A) if isinstance(part, LowRank) else (part,)
    for t in tensors:
        if not t.is_floating_point():
            raise WeightsteerError(f"{where}: module '{name}' holds {t.dtype} numbers, not floating point; regenerate it")
        if not bool(torch.isfinite(t).all()):
            raise WeightsteerError(f"{where}: module '{name}' holds NaN or infinite values (did training diverge? "
                                   "try a lower --lr); regenerate it")
    if isinstance(part, LowRank) and (part.B.dim() != 2 or part.A.dim() != 2 or part.B.shape[1] != part.A.shape[0]):
        raise WeightsteerError(f"{where}: module '{name}' has factors of shapes {tuple(part.B.shape)} and "
                               f"{tuple(part.A.shape)}, which do not multiply; regenerate it")


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
        info = {"base_model": model_name(model), "fingerprint": base_fingerprint(model), "method": method}
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
        if same_kind(fp, other_fp) and fp != other_fp:
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
    def check_fits(self, model, allow_modified: bool = False, warn=None) -> None:
        """Refuse, with one clear line, a direction made for another model, or for this model's base
        when this model's weights differ from it (a fine-tuned or an already steered copy).

        With allow_modified, a model whose parameters have the right names and shapes is accepted
        with one warning (through `warn`, default stderr), and not questioned again in this process
        (for this direction, or any scaled, exported or combined copy of it)."""
        made_for = self.meta.get("base_model", "another model")
        fp = self.meta.get("fingerprint")
        self._check_shapes(model, made_for)
        if not fp:
            return
        actual = fingerprint_like(model, fp)
        if actual == fp or (fp, actual) in _ACCEPTED_BASES:
            return
        if not allow_modified:
            raise WeightsteerError(f"this steering direction was made for '{made_for}' and does not fit this model: "
                                   "its weights differ (another checkpoint, or a fine-tuned or already steered "
                                   "copy); rebuild the direction on this model, or pass --allow-modified-base to "
                                   "steer it anyway")
        _ACCEPTED_BASES.add((fp, actual))
        (warn or _warn)(f"weightsteer: warning: this model's weights differ from '{made_for}', which the direction "
                        "was made for; steering it anyway (--allow-modified-base)")

    def _check_shapes(self, model, made_for: str) -> None:
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
        for name, part in self.parts.items():
            check_part(name, part, "this direction")
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
        modules = meta.pop("modules", None)
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise WeightsteerError(f"'{path}' is damaged: its header has no list of modules; regenerate it")
        parts: dict[str, Part] = {}
        for name in modules:
            if f"{name}:dense" in tensors:
                parts[name] = tensors[f"{name}:dense"]
            elif f"{name}:B" in tensors and f"{name}:A" in tensors:
                parts[name] = LowRank(tensors[f"{name}:B"], tensors[f"{name}:A"])
            else:
                raise WeightsteerError(f"'{path}' is damaged: module '{name}' has no tensors; regenerate it")
            check_part(name, parts[name], f"'{path}' is damaged")
        meta.pop("norms", None)
        meta.pop("format", None)
        if not isinstance(meta.get("fingerprint", ""), str) or not isinstance(meta.get("base_model", ""), str):
            raise WeightsteerError(f"'{path}' is damaged: its header's base_model or fingerprint is not text; "
                                   "regenerate it")
        return cls(parts, meta)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
