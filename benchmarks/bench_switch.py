"""3. Applying and removing alpha * dW: what calibration and every eval sweep do again and again.

One switch is entering and leaving ws.steer (copy the touched weights, add alpha * dW, copy them
back). The naive alternative is a steered checkpoint per alpha, i.e. a model reload
(from_pretrained of a saved checkpoint, then one read of every weight page: from_pretrained maps
the file lazily and would otherwise defer the reading to the first forward pass). The file is in
the page cache, so this is the cheapest a reload gets; from disk it would be slower. Both are put against one forward pass of a 16 x 128 batch, the unit of
work they sit between. A factored (lora) and a dense (ia3) dW are timed, as their update costs differ.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import Row, best_of, fmt_s, log, make_adapters, qwen3_model
from transformers import AutoModelForCausalLM

import weightsteer as ws

TARGET = 10.0  # "well under one forward pass": a switch costs at most a tenth of one


def measure(size: str, batch: int, seq: int, repeats: int) -> dict:
    model = qwen3_model(size)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = make_adapters(model, ["lora", "ia3"], tmp)
        for method, (pos, neg) in pairs.items():
            delta = ws.WeightDelta.from_adapters(model, pos, neg)

            def switch(delta=delta):
                with ws.steer(model, delta, 1.0):
                    pass

            switch()
            result[f"switch_{method}"] = best_of(switch, repeats)
            log(f"switch {method}: {result[f'switch_{method}']:.3f} s")
        model.save_pretrained(tmp / "checkpoint")

        def reload():
            """from_pretrained maps the file lazily; reading one float per 4 KiB page brings it all in."""
            fresh = AutoModelForCausalLM.from_pretrained(tmp / "checkpoint", dtype=torch.float32)
            return sum(float(p.detach().reshape(-1)[::1024].sum()) for p in fresh.parameters())

        reload()
        result["reload"] = best_of(reload, 2)
        log(f"reload: {result['reload']:.2f} s")
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    with torch.inference_mode():
        result["forward"] = best_of(lambda: model(input_ids=ids, logits_to_keep=1), 1)
    log(f"forward {batch}x{seq}: {result['forward']:.2f} s")
    return result


def run(quick: bool) -> list[dict]:
    size = "quick" if quick else "0.6B"
    batch, seq = 16, 128
    r = measure(size, batch, seq, repeats=3 if quick else 5)
    rows = []
    for method in ("lora", "ia3"):
        s = r[f"switch_{method}"]
        rows.append(Row(f"3 switch alpha*dW on+off ({method}) vs one forward {batch}x{seq}", f"Qwen3-{size}",
                        fmt_s(s), fmt_s(r["forward"]), r["forward"] / s, f">= {TARGET:g}x", r["forward"] / s >= TARGET))
        rows.append(Row(f"3 switch alpha*dW on+off ({method}) vs model reload", f"Qwen3-{size}", fmt_s(s),
                        fmt_s(r["reload"]), r["reload"] / s, "-", None))
    return [vars(r) for r in rows]
