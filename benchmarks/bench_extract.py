"""1. dW extraction: ws.WeightDelta.from_adapters vs merging each adapter into a full model copy.

The naive way is what one would write with PEFT alone: PeftModel.from_pretrained on a deepcopy of the
base, merge_and_unload, once per side, then subtract every parameter. It holds two extra full models.
Ours wraps the one base model with both adapters and reads factors (lora, pissa, delora) or merges one
weight at a time (dora, oft, ia3). Each side of each comparison runs in its own fresh process, so the
peak RSS growth is that call's alone.
"""

from __future__ import annotations

import copy
import subprocess
import tempfile
from pathlib import Path

import torch
from _common import Row, fmt_bytes, fmt_s, in_subprocess, log, make_adapters, measure, qwen3_model

from weightsteer.adapters import METHODS

SPEED_TARGET, MEMORY_TARGET = 5.0, 10.0  # for lora at Qwen3-0.6B
# The naive PiSSA load reruns an exact SVD of every targeted weight, per side: minutes at 0.6B on a
# busy 2-core machine. It is stopped here and reported as "more than", which bounds the ratio below.
NAIVE_LIMIT_S = 60


def naive_delta(model, pos_dir, neg_dir) -> dict[str, torch.Tensor]:
    from peft import PeftModel

    merged = [dict(PeftModel.from_pretrained(copy.deepcopy(model), str(d)).merge_and_unload().named_parameters())
              for d in (pos_dir, neg_dir)]
    delta = {}
    for name, pos in merged[0].items():
        diff = pos.detach() - merged[1][name].detach()
        if diff.any():
            delta[name] = diff
    return delta


def ours_delta(model, pos_dir, neg_dir):
    import weightsteer as ws

    return ws.WeightDelta.from_adapters(model, pos_dir, neg_dir)


def measure_one(way: str, size: str, pos_dir: str, neg_dir: str) -> dict:
    """In a fresh process: build the base model, then time and measure one extraction."""
    import peft  # noqa: F401  (imports are not part of either way's cost)

    import weightsteer  # noqa: F401

    model = qwen3_model(size)
    fn = ours_delta if way == "ours" else naive_delta
    delta, seconds, extra = measure(fn, model, Path(pos_dir), Path(neg_dir))
    n_modules = len(delta.parts) if way == "ours" else len(delta)
    return {"seconds": seconds, "bytes": extra, "modules": n_modules}


def naive_or_limit(size: str, pos: str, neg: str) -> dict:
    try:
        return in_subprocess("bench_extract", "measure_one", "naive", size, pos, neg, timeout=NAIVE_LIMIT_S)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        return {"seconds": NAIVE_LIMIT_S, "bytes": None, "modules": None, "stopped": True}


def compare(size: str, methods, root: Path, naive: bool = True) -> dict[str, dict]:
    """{method: {"ours": ..., "naive": ... or None}}; adapters are made once, in this process."""
    model = qwen3_model(size)
    pairs = make_adapters(model, methods, root)
    del model
    results = {}
    for method in methods:
        pos, neg = (str(p) for p in pairs[method])
        results[method] = {"ours": in_subprocess("bench_extract", "measure_one", "ours", size, pos, neg),
                           "naive": naive_or_limit(size, pos, neg) if naive else None}
        log(f"extract {method} {size}: {results[method]}")
    return results


def run(quick: bool) -> list[dict]:
    size = "quick" if quick else "0.6B"
    with tempfile.TemporaryDirectory() as tmp:
        results = compare(size, METHODS, Path(tmp))
    rows = []
    for method, r in results.items():
        ours, naive = r["ours"], r["naive"]
        stopped = naive.get("stopped", False)
        assert stopped or ours["modules"] == naive["modules"], f"{method}: ours and naive disagree on modules"
        lora = method == "lora"
        speed = naive["seconds"] / ours["seconds"]
        note = f"naive stopped at {NAIVE_LIMIT_S} s: ratio is a lower bound" if stopped else ""
        rows.append(Row(f"1 dW extraction time, {method}", f"Qwen3-{size}", fmt_s(ours["seconds"]),
                        ("> " if stopped else "") + fmt_s(naive["seconds"]), speed,
                        f">= {SPEED_TARGET:g}x" if lora else "-", speed >= SPEED_TARGET if lora else None, note))
        memory = None if stopped else naive["bytes"] / max(ours["bytes"], 1)
        rows.append(Row(f"1 dW extraction peak extra RSS, {method}", f"Qwen3-{size}", fmt_bytes(ours["bytes"]),
                        "not measured" if stopped else fmt_bytes(naive["bytes"]), memory,
                        f">= {MEMORY_TARGET:g}x" if lora else "-", memory >= MEMORY_TARGET if lora else None))
    return [vars(r) for r in rows]
