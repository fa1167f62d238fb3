"""0. Dtype checks that the speed numbers rest on (no timing).

- models.default_dtype: bf16 on a GPU that supports it, float32 otherwise (this machine: CPU).
- dW is float32 whatever the model's dtype: extracted on a bf16 model, every part is float32.
- ws.steer restores bf16 weights bit for bit (tests/test_steer.py covers it on tiny models; this
  repeats it on the Qwen3 architecture with a dense and a factored dW).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import Row, make_adapters, qwen3_model

import weightsteer as ws
from weightsteer.delta import LowRank
from weightsteer.models import default_dtype


def run(quick: bool) -> list[dict]:
    cpu = default_dtype(torch.device("cpu"))
    rows = [Row("0 check: models.default_dtype on this CPU", "-", str(cpu).removeprefix("torch."), "-", None,
                "float32 (bf16 only on a bf16 GPU)", cpu == torch.float32)]
    model = qwen3_model("quick", dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        for method, (pos, neg) in make_adapters(model, ["lora", "dora"], Path(tmp), rank=8).items():
            delta = ws.WeightDelta.from_adapters(model, pos, neg)
            dtypes = {t.dtype for p in delta.parts.values() for t in ((p.B, p.A) if isinstance(p, LowRank) else (p,))}
            saved = {n: p.detach().clone() for n, p in model.named_parameters()}
            with ws.steer(model, delta, 3.7):
                moved = sum(not torch.equal(p, saved[n]) for n, p in model.named_parameters())
            exact = all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
            rows.append(Row(f"0 check: {method} dW dtype on a bf16 model", "Qwen3-quick bf16",
                            ", ".join(str(d).removeprefix("torch.") for d in dtypes), "-", None, "float32",
                            dtypes == {torch.float32}))
            rows.append(Row(f"0 check: bf16 weights after ws.steer ({method}, {moved} weights moved)",
                            "Qwen3-quick bf16", "bit-exact" if exact else "CHANGED", "-", None, "bit-exact",
                            exact and moved > 0))
    return [vars(r) for r in rows]
