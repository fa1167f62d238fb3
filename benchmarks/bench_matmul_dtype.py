"""float32 vs bfloat16 matrix products (--matmul-dtype) on the embedded model: speed and agreement.

    python benchmarks/bench_matmul_dtype.py [--threads 1]

One process, one model, switched between the two dtypes before every measurement, so both see the
same load. Per stage of a run: the time of each dtype (best of `--repeats`) and the ratio; then how
far the bf16 results are from the float32 ones, beside the float32 results' own 95% CIs: the mood
probe (32 prompts, the run table's next-word read), its 32-token greedy replies, MMLU (57 questions,
one per subject, when ../shared/data/mmlu is there), and the KL between the two next-token
distributions. Prints a markdown table and the load average.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from _versions import load_average

ROOT = Path(__file__).resolve().parents[1]
MMLU_DIR = ROOT.parent / "shared" / "data" / "mmlu"


def best_time(fn, repeats: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import weightsteer as ws
    from weightsteer import chat
    from weightsteer.evals import mmlu, scoring
    from weightsteer.matmuls import set_matmul_dtype
    from weightsteer.probes.next_word import N_GENERATE

    load_start = load_average()
    model, tok = ws.load_model("smollm2-135m")
    behaviour = ws.load_behaviour("mood")
    probe = copy.copy(behaviour.probe)
    probe.vader = False
    items = probe.load()
    starts = [chat.render(tok, chat.messages(item["prompt"])) for item in items]
    questions = mmlu.load(MMLU_DIR, limit=57) if (MMLU_DIR / mmlu.LOCAL_FILE).exists() else None
    tokens = torch.randint(100, 20000, (16, 128), generator=torch.Generator().manual_seed(0))
    train_tokens = tokens[:4, :128]

    def train_step():
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        peft_model.train()
        start = time.perf_counter()
        for _ in range(3):
            peft_model(input_ids=train_tokens, labels=train_tokens).loss.backward()
        return (time.perf_counter() - start) / 3

    stages = {
        "forward pass, 16 x 128 tokens": lambda: model(input_ids=tokens, logits_to_keep=1).logits,
        "mood probe, 32 prompts (next-word read)": lambda: probe.score(model, tok, items, progress=False),
        f"greedy replies, 32 prompts x {N_GENERATE} tokens": lambda: scoring.greedy_continuations(
            model, tok, starts, max_new_tokens=N_GENERATE, progress=False),
        "next-token distribution, 32 prompts": lambda: next_token_logprobs(model, tok, starts),
    }
    if questions is not None:
        stages["MMLU, 57 questions"] = lambda: mmlu.score(model, tok, questions, progress=False)
    results: dict[str, dict[str, tuple[float, object]]] = {}
    for name, fn in stages.items():
        results[name] = {}
        for dtype in ("float32", "bfloat16"):
            set_matmul_dtype(model, dtype)
            with torch.inference_mode():
                results[name][dtype] = best_time(fn, args.repeats)
    step_times = {}
    for dtype in ("float32", "bfloat16"):
        set_matmul_dtype(model, dtype)
        step_times[dtype] = min(train_step() for _ in range(args.repeats))

    print(f"\nbfloat16 vs float32 matrix products, SmolLM2-135M, {args.threads} thread(s), load average "
          f"{load_start} at the start, {load_average()} at the end\n")
    print("| stage | float32 | bfloat16 | float32 / bfloat16 |\n|---|---|---|---|")
    for name, by_dtype in results.items():
        a, b = by_dtype["float32"][0], by_dtype["bfloat16"][0]
        print(f"| {name} | {a:.2f} s | {b:.2f} s | {a / b:.2f}x |")
    a, b = step_times["float32"], step_times["bfloat16"]
    print(f"| LoRA training step (r 8, 7 modules, 4 x 128 tokens, forward + backward) | {a:.2f} s | {b:.2f} s "
          f"| {a / b:.2f}x |")

    print("\n| agreement | float32 | bfloat16 | bfloat16 - float32 |\n|---|---|---|---|")
    rows = {d: results["mood probe, 32 prompts (next-word read)"][d][1] for d in ("float32", "bfloat16")}
    base = probe.summarise(rows["float32"])["log_ratio"]
    paired = probe.summarise(rows["bfloat16"], base_rows=rows["float32"])
    print(f"| mood log-ratio, mean [95% CI] | {cell(base)} | {cell(paired['log_ratio'])} | "
          f"{cell(paired['shift']['log_ratio'])}; largest per prompt "
          f"{max(abs(x['log_ratio'] - y['log_ratio']) for x, y in zip(rows['bfloat16'], rows['float32'], strict=True)):.3f} |")
    replies = {d: results[f"greedy replies, 32 prompts x {N_GENERATE} tokens"][d][1] for d in ("float32", "bfloat16")}
    same = sum(x == y for x, y in zip(replies["float32"], replies["bfloat16"], strict=True))
    vader = {d: np.mean([probe_vader(t) for t in replies[d]]) for d in replies}
    print(f"| greedy replies identical | | | {same} of {len(starts)} |")
    print(f"| VADER of the replies, mean | {vader['float32']:+.3f} | {vader['bfloat16']:+.3f} | "
          f"{vader['bfloat16'] - vader['float32']:+.3f} |")
    logp = {d: results["next-token distribution, 32 prompts"][d][1] for d in ("float32", "bfloat16")}
    kl = (np.exp(logp["float32"]) * (logp["float32"] - logp["bfloat16"])).sum(-1)
    print(f"| KL(float32 || bfloat16) of the next token, mean / max over prompts | | | {kl.mean():.4f} / "
          f"{kl.max():.4f} nats |")
    if questions is not None:
        rows = {d: results["MMLU, 57 questions"][d][1] for d in ("float32", "bfloat16")}
        summary = mmlu.summarise(rows["bfloat16"], base_rows=rows["float32"])
        base = mmlu.summarise(rows["float32"])
        for key, label in (("correct", "MMLU accuracy"), ("logp_correct", "MMLU normalised log P(correct)")):
            print(f"| {label} | {cell(base[key])} | {cell(summary[key])} | {cell(summary['shift'][key])} |")


def next_token_logprobs(model, tok, prompts) -> np.ndarray:
    from weightsteer import chat

    enc = chat.encode(tok, prompts, next(model.parameters()).device)
    positions = (enc.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=positions,
                   logits_to_keep=1).logits[:, -1].double()
    return torch.log_softmax(logits, -1).numpy()


def probe_vader(text: str) -> float:
    from weightsteer.probes.next_word import vader

    return vader().polarity_scores(text)["compound"]


def cell(stat: dict) -> str:
    return f"{stat['mean']:+.3f} [{stat['lo']:+.3f}, {stat['hi']:+.3f}]"


if __name__ == "__main__":
    main()
