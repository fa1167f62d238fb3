"""alpha * dW as a llama.cpp LoRA adapter GGUF, written directly with the gguf package.

What llama.cpp's adapter loader reads (the layout convert_lora_to_gguf.py writes):
- general.type = "adapter", adapter.type = "lora", general.architecture = the base model's.
- per module, <base tensor name>.lora_a holding A (rank x in) and .lora_b holding B (out x rank),
  numpy row-major, so GGUF's reversed dimensions are (in, rank) and (rank, out).
- adapter.lora.alpha: llama.cpp scales each module by alpha / (that module's rank). It is set to
  the rank and every module is zero-padded to that rank, as in the PEFT export, so the scale is 1
  and alpha lives in B; a run-time scale s (--lora-scaled FILE:s) then gives s * alpha.
- For Llama, B's rows go through the same per-head rope reordering as the base q/k weights
  (B @ A reordered is B-reordered @ A).
Beside those, weightsteer.* keys record alpha, the direction's base model and fingerprint, and
the iso-KL calibration found beside the direction, so the file says what it is.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import torch.nn.functional as F

from .atomic import atomic_path
from .delta import LowRank, WeightDelta
from .export import FORMAT, approximate, check_lora_export, steered_kl
from .gguf_arch import WRITTEN_BY_KEY, GGUFArch, gguf_arch, interleave_rows, rope_heads, tensor_name
from .steer import check_alpha


def adapter_arrays(arch: GGUFArch, factors: dict[str, LowRank]) -> tuple[dict[str, np.ndarray], int]:
    """{blk.N.attn_q.weight.lora_a: A, ...lora_b: B} as float32 arrays, every module zero-padded
    to the largest rank; returns (arrays, rank)."""
    rank = max(f.B.shape[1] for f in factors.values())
    arrays = {}
    for name, f in factors.items():
        pad = rank - f.B.shape[1]
        a = F.pad(f.A.float(), (0, 0, 0, pad)).numpy()
        b = F.pad(f.B.float(), (0, pad)).numpy()
        if (heads := rope_heads(arch, name)) is not None:
            b = interleave_rows(b, heads)
        base = tensor_name(arch, name)
        arrays[f"{base}.lora_a"] = np.ascontiguousarray(a, dtype=np.float32)
        arrays[f"{base}.lora_b"] = np.ascontiguousarray(b, dtype=np.float32)
    return arrays, rank


def export_lora_gguf(delta: WeightDelta, alpha: float, out_file, *, config, rank: int | None = None,
                     max_error: float | None = None, model=None, tokenizer=None,
                     calibration: dict | None = None, source: str | None = None) -> dict:
    """Write alpha * dW to `out_file` as a llama.cpp LoRA GGUF for the base model of `config`
    (a transformers config); return a report like export_lora's (with the KL check given a model)."""
    alpha = check_alpha(alpha)
    arch = gguf_arch(config)
    check_lora_export(delta, rank, max_error)
    modules = {name: approximate(part, rank, max_error) for name, part in delta.parts.items()}
    factors = {name: LowRank(alpha * m.factors.B, m.factors.A) for name, m in modules.items()}
    arrays, adapter_rank = adapter_arrays(arch, factors)  # refuses unnamed modules before any work
    report = {
        "format": FORMAT, "delta": source, "alpha": alpha, "architecture": arch.name, "rank": adapter_rank,
        **{key: delta.meta.get(key) for key in ("base_model", "behaviour", "method", "fingerprint")},
        "exact": all(m.exact for m in modules.values()),
        "max_rel_error": max(m.rel_error for m in modules.values()),
        "kl": None,
    }
    if model is not None:
        report["kl"] = steered_kl(model, tokenizer, delta, alpha, WeightDelta(factors, delta.meta))
    with atomic_path(out_file) as tmp:
        write_adapter_gguf(tmp, arch, arrays, adapter_rank, report, calibration)
    return report


def write_adapter_gguf(path, arch: GGUFArch, arrays: dict[str, np.ndarray], rank: int, report: dict,
                       calibration: dict | None) -> None:
    writer = gguf.GGUFWriter(path=None, arch=arch.name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    writer.add_name(f"weightsteer {report.get('behaviour') or 'direction'} alpha {report['alpha']:g}")
    writer.add_string(WRITTEN_BY_KEY, "export")
    writer.add_string("weightsteer.format", report["format"])
    writer.add_float64("weightsteer.alpha", report["alpha"])
    for key in ("base_model", "fingerprint", "behaviour", "method"):
        if report.get(key) is not None:
            writer.add_string(f"weightsteer.{key}", str(report[key]))
    writer.add_bool("weightsteer.exact", bool(report["exact"]))
    writer.add_float64("weightsteer.max_rel_error", float(report["max_rel_error"]))
    if report["kl"] is not None:
        writer.add_float64("weightsteer.kl_mean", report["kl"]["mean"])
        writer.add_float64("weightsteer.kl_max", report["kl"]["max"])
    writer.add_string("weightsteer.calibration", json.dumps(calibration))
    for name, array in arrays.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
