"""7. Scaling: dW extraction and one steered forward pass at Qwen3-0.6B, 1.7B and 4B shapes.

Each size runs in its own process. The naive extraction (two merged deepcopies and a dense dW) fits
in this machine's memory only at 0.6B, where benchmark 1 measures it; above, the table gives what it
would need. ws.steer
keeps an exact copy of the weights it touches (exact restore in any dtype); where model + that copy do
not fit, the forward pass is timed with alpha * dW added by steer.add_delta alone, and the row says so.
At 0.6B a bfloat16 forward is timed too: this CPU has AMX, so bf16 is not the slow path here.
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import psutil
import torch
from _common import (
    GiB,
    Row,
    best_of,
    fmt_bytes,
    fmt_s,
    in_subprocess,
    log,
    make_adapters,
    param_bytes,
    qwen3_bytes,
    qwen3_model,
)

import weightsteer as ws
from weightsteer.steer import add_delta

MARGIN = 1.5 * GiB  # room left for the interpreter, activations and the other users of the machine


def touched_bytes(model, delta) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() * params[n].element_size() for n in delta.names)


def measure(size: str, seq: int) -> dict:
    """Extraction in fresh processes (this one holds no model meanwhile), then the forward passes here."""
    with tempfile.TemporaryDirectory() as tmp:
        model = qwen3_model(size)
        pos, neg = make_adapters(model, ["lora"], Path(tmp))["lora"]
        delta = ws.WeightDelta.from_adapters(model, pos, neg)
        out = {"model_bytes": param_bytes(model), "touched_bytes": touched_bytes(model, delta)}
        out["naive_needs"] = 3 * out["model_bytes"] + out["touched_bytes"]
        del model
        gc.collect()
        out["ours"] = in_subprocess("bench_extract", "measure_one", "ours", size, str(pos), str(neg))
        # at 0.6B the naive way is benchmark 1's lora row (the same measurement); above, it does not fit
        out["naive_fits"] = out["naive_needs"] + MARGIN < psutil.virtual_memory().available
    model = qwen3_model(size)
    ids = torch.randint(0, model.config.vocab_size, (1, seq))
    out["steer_fits"] = out["touched_bytes"] + MARGIN < psutil.virtual_memory().available

    def forward():
        model(input_ids=ids, logits_to_keep=1)

    with torch.inference_mode():
        forward()
        out["unsteered"] = best_of(forward, 2)
        if out["steer_fits"]:
            with ws.steer(model, delta, 1.0):
                out["steered"] = best_of(forward, 2)
        else:
            add_delta(model, delta, 1.0)  # no restore needed: this model is thrown away
            out["steered"] = best_of(forward, 2)
        if size == "0.6B":
            model.to(torch.bfloat16)
            forward()
            out["bf16"] = best_of(forward, 2)
    log(f"scaling {size}: {out}")
    return out


def run(quick: bool) -> list[dict]:
    sizes = ["quick"] if quick else ["0.6B", "1.7B", "4B"]
    seq = 128
    rows = []
    for size in sizes:
        needs = qwen3_bytes(size)
        if needs + MARGIN > psutil.virtual_memory().available:
            rows.append(Row("7 scaling: not run", f"Qwen3-{size}", f"needs {fmt_bytes(needs)}", "-", None, "-", None,
                            f"only {fmt_bytes(psutil.virtual_memory().available)} free now"))
            continue
        r = in_subprocess("bench_scaling", "measure", size, seq)
        name = f"Qwen3-{size} ({fmt_bytes(r['model_bytes'])} fp32)"
        ours = r["ours"]
        naive = ("see benchmark 1, lora" if r["naive_fits"] else f"does not fit: needs ~{fmt_bytes(r['naive_needs'])}")
        rows.append(Row("7 scaling: dW extraction time / peak extra RSS (lora r32)", name,
                        f"{fmt_s(ours['seconds'])} / {fmt_bytes(ours['bytes'])}", naive, None, "-", None,
                        "" if r["naive_fits"] else "naive holds 3 models + a dense dW"))
        note = "" if r["steer_fits"] else (f"ws.steer's restore copy ({fmt_bytes(r['touched_bytes'])}) does not fit "
                                          "beside the model: timed with add_delta alone")
        if "bf16" in r:
            note = f"bf16 forward: {seq / r['bf16']:.0f} tok/s ({r['unsteered'] / r['bf16']:.1f}x fp32)"
        rows.append(Row(f"7 scaling: steered vs unsteered forward 1x{seq} (tok/s)", name,
                        f"{seq / r['steered']:.1f}", f"{seq / r['unsteered']:.1f}", r["unsteered"] / r["steered"],
                        "-", None, note))
    return [vars(r) for r in rows]
