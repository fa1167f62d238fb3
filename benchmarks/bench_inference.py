"""2. Steered inference: tokens per second with alpha * dW added in place vs unsteered vs PEFT.

In place (ws.steer) the steered model is an ordinary model, so it should run at unsteered speed. The
PEFT way keeps both adapters in one PeftModel and combines them with add_weighted_adapter([pos, neg],
[+1, -1], combination_type="cat"), so every adapted Linear also runs the low-rank side path. The PEFT
model wraps a deepcopy of the base, so all three can be timed interleaved, rep by rep: on a shared
machine, slow spells then hit every variant alike; the best rep of each is reported.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from _common import Row, best_of, log, make_adapters, qwen3_model

import weightsteer as ws

TARGET = 0.97  # in place within 3% of unsteered


def peft_combined(model, pos_dir: Path, neg_dir: Path):
    """A deepcopy of `model` with pos - neg as one active LoRA adapter (rank 2r, 'cat')."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(pos_dir), adapter_name="pos")
    peft_model.load_adapter(str(neg_dir), adapter_name="neg")
    peft_model.add_weighted_adapter(["pos", "neg"], [1.0, -1.0], "steer", combination_type="cat")
    peft_model.set_adapter("steer")
    return peft_model.eval()


def tokens_per_second(size: str, batch: int, seq: int, new_tokens: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = qwen3_model(size)
    with tempfile.TemporaryDirectory() as tmp:
        pos, neg = make_adapters(model, ["lora"], Path(tmp))["lora"]
        delta = ws.WeightDelta.from_adapters(model, pos, neg)
        peft_model = peft_combined(model, pos, neg)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq))
    prompt = torch.randint(0, vocab, (1, 32))

    def forward(m):
        m(input_ids=ids, logits_to_keep=1)

    def decode(m):
        m.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    times = {k: {"forward": [], "decode": []} for k in ("unsteered", "in place", "peft")}
    with torch.inference_mode():
        for m in (model, peft_model):  # warm up: first calls allocate and pick kernels
            forward(m)
            decode(m)
        for rep in range(repeats):
            for task, fn, n in (("forward", forward, 2), ("decode", decode, 1)):
                # best of n back-to-back calls, so the first call after a switch of variant (cold
                # caches after ws.steer wrote 0.9 GB) is not all that is seen
                times["unsteered"][task].append(best_of(lambda fn=fn: fn(model), n))
                with ws.steer(model, delta, 1.0):
                    times["in place"][task].append(best_of(lambda fn=fn: fn(model), n))
                times["peft"][task].append(best_of(lambda fn=fn: fn(peft_model), n))
            log(f"inference rep {rep}: {times}")
    work = {"forward": batch * seq, "decode": new_tokens}
    return {k: {task: work[task] / min(t) for task, t in v.items()} for k, v in times.items()}


def run(quick: bool) -> list[dict]:
    size = "quick" if quick else "0.6B"
    batch, seq, new, repeats = (2, 64, 8, 2) if quick else (4, 128, 16, 2)
    tps = tokens_per_second(size, batch, seq, new, repeats)
    rows = []
    for task, label in (("forward", f"forward {batch}x{seq}"), ("decode", f"greedy decode {new} tokens, batch 1")):
        ours, base, peft = tps["in place"][task], tps["unsteered"][task], tps["peft"][task]
        rows.append(Row(f"2 steered {label}: in place vs unsteered (tok/s)", f"Qwen3-{size}", f"{ours:.1f}",
                        f"{base:.1f}", ours / base, f">= {TARGET}", ours / base >= TARGET))
        rows.append(Row(f"2 steered {label}: in place vs PEFT cat adapter (tok/s)", f"Qwen3-{size}",
                        f"{ours:.1f}", f"{peft:.1f}", ours / peft, "-", None))
    return [vars(r) for r in rows]
