"""Export alpha * dW for serving stacks that know nothing about weightsteer.

Two formats:

- `lora`: a standard PEFT LoRA folder (adapter_config.json + adapter_model.safetensors) whose
  B @ A equals alpha * dW. Factored parts (lora, pissa, delora: rank 2r, the pos and neg factors
  stacked) are written as they are, so the export is exact. Dense parts (dora, oft, ia3) are
  truncated SVDs at a fixed rank or at the smallest rank reaching a relative Frobenius error; the
  report records each module's error, measured directly as ||dW - B A||_F / ||dW||_F, and the KL
  between the exact and the exported steered next-token distributions on the calibration prompts.
- `merged`: a Hugging Face checkpoint with alpha * dW merged in (steer.save_steered) and a model
  card recording what was merged and how alpha was calibrated.

Choices that serving stacks force:
- lora_alpha = r, so PEFT's scaling is 1 and alpha lives in B (sqrt(S) goes into both factors,
  which keeps them in the same range under fp16/bf16 casting).
- Every module gets the same rank: modules of lower rank are padded with zero columns/rows.
  PEFT honours rank_pattern, but vLLM scales every module by the global lora_alpha / r and
  llama.cpp by lora_alpha / (that tensor's rank), so per-module ranks would be scaled wrongly by
  one or the other; zero padding is exact everywhere and only costs memory.
- SVD: a full torch.linalg.svd per module (float32) unless the module is large (min side above
  FULL_SVD_MAX_SIDE) and the asked rank small (at most an eighth of it): then torch.svd_lowrank,
  seeded, with oversampling. --max-error needs the whole spectrum, so it always uses the full SVD.
  Factored parts are re-factored exactly through QR of B and A^T and a k x k SVD when asked for
  fewer than their k columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig
from safetensors.torch import save_file

from . import chat
from .atomic import atomic_path, check_replaceable, json_text, mark_output
from .behaviours import calibration_questions
from .delta import LowRank, Part, WeightDelta, part_dense
from .doses import calibrations_beside
from .errors import WeightsteerError
from .steer import MERGED_KIND, check_alpha, save_steered, steer

FORMAT = "weightsteer.export/1"
LORA_KIND = "LoRA export"
FULL_SVD_MAX_SIDE = 2048  # below this a full SVD per module takes at most seconds on a CPU
OVERSAMPLE = 10
KL_BATCH_SIZE = 8


@dataclass(frozen=True)
class ModuleExport:
    factors: LowRank  # of dW itself; alpha is applied when writing
    exact: bool
    rel_error: float


# ---- low-rank approximation -------------------------------------------------------------------

def check_rank_args(rank: int | None, max_error: float | None) -> None:
    if rank is not None and max_error is not None:
        raise WeightsteerError("give --rank or --max-error, not both")
    if rank is not None and rank < 1:
        raise WeightsteerError(f"--rank must be at least 1, got {rank}")
    if max_error is not None and not 0 <= max_error < 1:
        raise WeightsteerError(f"--max-error is a relative Frobenius error in [0, 1), got {max_error}")


def approximate(part: Part, rank: int | None = None, max_error: float | None = None) -> ModuleExport:
    """Factors B, A of one module's dW: as they are when no truncation is asked for, else from its SVD."""
    if isinstance(part, LowRank) and max_error is None and (rank is None or part.B.shape[1] <= rank):
        return ModuleExport(part, True, 0.0)
    if rank is None and max_error is None:
        raise WeightsteerError("a full-rank part needs --rank or --max-error")
    U, S, Vh = _spectrum(part, rank)
    k = _kept_rank(S, rank, max_error)
    root = S[:k].sqrt()
    factors = LowRank(U[:, :k] * root, root[:, None] * Vh[:k])
    dense = part_dense(part)
    norm = float(dense.norm())
    error = float((dense - factors.dense()).norm()) / norm if norm > 0 else 0.0
    return ModuleExport(factors, False, error)


def _spectrum(part: Part, rank: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(part, LowRank):  # B A = Qb (Rb Ra^T) Qa^T: only a k x k SVD
        Qb, Rb = torch.linalg.qr(part.B.float())
        Qa, Ra = torch.linalg.qr(part.A.float().T)
        U, S, Vh = torch.linalg.svd(Rb @ Ra.T, full_matrices=False)
        return Qb @ U, S, Vh @ Qa.T
    side = min(part.shape)
    if rank is not None and side > FULL_SVD_MAX_SIDE and rank <= side // 8:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            U, S, V = torch.svd_lowrank(part.float(), q=rank + OVERSAMPLE, niter=4)
        return U, S, V.T
    return torch.linalg.svd(part.float(), full_matrices=False)


def _kept_rank(S: torch.Tensor, rank: int | None, max_error: float | None) -> int:
    if max_error is None:
        return max(1, min(rank, len(S)))
    energy = S.double().square()
    left_out = energy.sum() - energy.cumsum(0)  # keeping 1, 2, ... singular values
    reached = (left_out <= max_error**2 * energy.sum()).nonzero()
    return int(reached[0]) + 1 if len(reached) else len(S)


# ---- the adapter folder -----------------------------------------------------------------------

def adapter_tensors(factors: dict[str, LowRank]) -> tuple[dict[str, torch.Tensor], int]:
    """PEFT's key layout, every module zero-padded to the largest rank; returns (tensors, rank)."""
    rank = max(f.B.shape[1] for f in factors.values())
    tensors = {}
    for name, f in factors.items():
        pad = rank - f.B.shape[1]
        key = f"base_model.model.{name.removesuffix('.weight')}"
        tensors[f"{key}.lora_A.weight"] = F.pad(f.A.float(), (0, 0, 0, pad)).contiguous()
        tensors[f"{key}.lora_B.weight"] = F.pad(f.B.float(), (0, pad)).contiguous()
    return tensors, rank


def write_adapter(folder: Path, factors: dict[str, LowRank], base_model: str | None) -> int:
    tensors, rank = adapter_tensors(factors)
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        target_modules=sorted(n.removesuffix(".weight") for n in factors),
                        base_model_name_or_path=base_model, inference_mode=True)
    config.save_pretrained(str(folder))
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return rank


def check_lora_export(delta: WeightDelta, rank: int | None, max_error: float | None) -> None:
    """Everything that can be refused before any work is done."""
    check_rank_args(rank, max_error)
    if not delta.parts:
        raise WeightsteerError("this direction changes no module: there is nothing to export")
    for name, part in delta.parts.items():
        if not name.endswith(".weight") or len(part.shape) != 2:
            raise WeightsteerError(f"'{name}' is not the weight of a linear layer: it cannot be a LoRA module")
    if rank is None and max_error is None and not delta.is_factored():
        raise WeightsteerError(f"this direction ({delta.meta.get('method', 'dense')}) changes weights at "
                               "full rank: pass --rank R or --max-error E for its truncated SVD")


def export_lora(delta: WeightDelta, alpha: float, out_dir, *, rank: int | None = None,
                max_error: float | None = None, model=None, tokenizer=None,
                base_model: str | None = None, source: str | None = None) -> dict:
    """Write alpha * dW as a PEFT LoRA folder with export_report.json beside the weights; return
    the report. With a model, the report holds the steered next-token KL, exact vs exported."""
    alpha = check_alpha(alpha)
    check_lora_export(delta, rank, max_error)
    check_replaceable(out_dir, LORA_KIND)
    modules = {name: approximate(part, rank, max_error) for name, part in delta.parts.items()}
    factors = {name: LowRank(alpha * m.factors.B, m.factors.A) for name, m in modules.items()}
    report = {
        "format": FORMAT, "delta": source, "alpha": alpha,
        **{key: delta.meta.get(key) for key in ("base_model", "behaviour", "method", "fingerprint")},
        "exact": all(m.exact for m in modules.values()),
        "max_rel_error": max(m.rel_error for m in modules.values()),
        "modules": {name: {"rank": m.factors.B.shape[1], "exact": m.exact, "rel_error": m.rel_error}
                    for name, m in modules.items()},
        "kl": None,
    }
    if model is not None:
        report["kl"] = steered_kl(model, tokenizer, delta, alpha, WeightDelta(factors, delta.meta))
    with atomic_path(out_dir) as tmp:
        report["rank"] = write_adapter(tmp, factors, base_model or delta.meta.get("base_model"))
        (tmp / "export_report.json").write_text(json_text(report, indent=2) + "\n")
        mark_output(tmp, LORA_KIND)
    return report


# ---- the KL check -----------------------------------------------------------------------------

@torch.no_grad()
def steered_kl(model, tokenizer, delta: WeightDelta, alpha: float, exported: WeightDelta,
               prompts: list[str] | None = None) -> dict:
    """KL(exact || exported) of the steered last-token next-token distributions, over the
    calibration prompts (plainly rendered, left padded, batched): mean and max."""
    questions = calibration_questions() if prompts is None else prompts
    texts = [chat.render(tokenizer, chat.messages(q)) for q in questions]
    kls = []
    for start in range(0, len(texts), KL_BATCH_SIZE):
        batch = chat.encode(tokenizer, texts[start:start + KL_BATCH_SIZE], model.device)
        with steer(model, delta, alpha):
            exact = _next_token_logprobs(model, batch)
        with steer(model, exported, 1.0):
            approx = _next_token_logprobs(model, batch)
        kls.append((exact.exp() * (exact - approx)).sum(-1))
    kl = torch.cat(kls).clamp_min(0.0)
    return {"mean": float(kl.mean()), "max": float(kl.max()), "prompts": len(texts)}


def _next_token_logprobs(model, batch) -> torch.Tensor:
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # left padding: each row starts at position 0
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
                   use_cache=False, logits_to_keep=1).logits[:, -1]
    return logits.float().log_softmax(-1)


# ---- the merged checkpoint --------------------------------------------------------------------

def read_calibration(delta_path) -> dict | None:
    """The doses `weightsteer calibrate` (or run, or sweep) calibrated beside the direction, as
    {"doses": [{"target_kl", "pos": {...}, "neg": {...}}, ...]}; None when there are none."""
    doses = calibrations_beside(delta_path)
    if not doses:
        return None
    return {"doses": [{"target_kl": target, **{side: {"coef": r.coef, "kl": r.kl, "converged": r.converged,
                                                      "iterations": r.iterations} for side, r in results.items()}}
                      for target, results in doses.items()]}


def model_card(delta: WeightDelta, alpha: float, base_model: str, calibration: dict | None) -> str:
    meta = delta.meta
    rows = [("base model", base_model), ("behaviour", meta.get("behaviour", "unknown")),
            ("adapter method", meta.get("method", "unknown")), ("alpha", f"{alpha:g}"),
            ("modules changed", str(len(delta.parts))), ("base fingerprint", meta.get("fingerprint", "-"))]
    lines = ["---", "library_name: transformers", "tags: [weightsteer, steering]", "---", "",
             f"# {base_model}, weight-steered ({meta.get('behaviour', 'unknown behaviour')})", "",
             f"The weights of `{base_model}` plus alpha * dW, with dW = theta_pos - theta_neg: the difference "
             "of two PEFT adapters trained on contrasting persona data (weight steering, Fierro & Roger 2025, "
             "arXiv 2511.05408). alpha > 0 pushes toward the positive persona, alpha < 0 away from it. "
             "Made with weightsteer.", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
             "## Calibration", ""]
    if calibration is None:
        lines.append("No kl-*/calibration.json was found beside the direction: this alpha was not chosen by "
                     "weightsteer's iso-KL calibration.")
        return "\n".join(lines) + "\n"
    lines += ["| target kl_p95 | side | coefficient | KL | converged |", "|---|---|---|---|---|"]
    lines += [f"| {dose['target_kl']:g} | {side} | {dose[side]['coef']:+.4g} | {dose[side]['kl']:.3f} | "
              f"{dose[side]['converged']} |" for dose in calibration["doses"] for side in ("pos", "neg")]
    return "\n".join(lines) + "\n"


def export_merged(model, tokenizer, delta: WeightDelta, alpha: float, out_dir, *, base_model: str,
                  calibration: dict | None = None) -> None:
    """A Hugging Face checkpoint of W + alpha * dW, with README.md; written all at once or not at all."""
    alpha = check_alpha(alpha)
    check_replaceable(out_dir, MERGED_KIND, protected=(getattr(model.config, "_name_or_path", None),))
    card = model_card(delta, alpha, base_model, calibration)
    with atomic_path(out_dir) as tmp:
        save_steered(model, tokenizer, delta, alpha, tmp)
        (tmp / "README.md").write_text(card)
        mark_output(tmp, MERGED_KIND)

