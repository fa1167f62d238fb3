"""Helper of scripts/llama_parity.sh: does llama.cpp, given weightsteer's GGUF exports, predict what
weightsteer's steered model predicts?

Two halves, run by two interpreters:
  reference  (the project's .venv: torch + weightsteer) - the prompts' token ids and weightsteer's
             next-token log-probabilities, unsteered and steered at each alpha, into an .npz file
  compare    (the llama-cpp-python venv: llama_cpp + numpy only) - the same token ids through
             llama.cpp (base GGUF, plus each adapter GGUF at a run-time scale), the same
             log-probabilities, and the comparison: KL(weightsteer || llama.cpp) mean and max,
             top-1 agreement, and the steering effect KL(steered || unsteered) it must be far below.
The token ids are handed over, so the comparison is of the weights, not of the two tokenizers;
whether llama.cpp's own tokenizer gives the same ids is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

N_PROMPTS = 20


# ---- reference (weightsteer) ------------------------------------------------------------------

def reference(args) -> None:
    import torch

    import weightsteer as ws
    from weightsteer import chat
    from weightsteer.behaviours import calibration_questions

    model, tokenizer = ws.load_model(args.model)
    delta = ws.WeightDelta.load(args.delta)
    delta.check_fits(model)
    questions = list(calibration_questions())[:args.prompts]
    texts = [chat.render(tokenizer, chat.messages(q)) for q in questions]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    alphas = [float(a) for a in args.alphas.split(",")]

    @torch.no_grad()
    def logprobs() -> np.ndarray:  # one prompt at a time: no padding anywhere
        rows = [model(torch.tensor([row])).logits[0, -1].double().log_softmax(-1).numpy() for row in ids]
        return np.stack(rows)

    out = {"unsteered": logprobs()}
    for alpha in alphas:
        with ws.steer(model, delta, alpha):
            out[f"alpha={alpha!r}"] = logprobs()
        print(f"[parity] weightsteer reference at alpha {alpha:+g}", file=sys.stderr)
    lengths = np.array([len(r) for r in ids])
    np.savez(args.out, ids=np.concatenate(ids), lengths=lengths, texts=np.array(texts), **out)


# ---- compare (llama.cpp) ----------------------------------------------------------------------

def kl_rows(p_log: np.ndarray, q_log: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, in nats, from log-probabilities."""
    return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def llama_logprobs(base: str, prompts: list[list[int]], adapter: str | None, scale: float, threads: int):
    from llama_cpp import Llama

    kwargs = {"lora_path": adapter, "lora_scale": scale} if adapter else {}
    llm = Llama(model_path=base, n_ctx=1024, n_threads=threads, n_batch=512, logits_all=True, verbose=False,
                **kwargs)
    rows = []
    for tokens in prompts:
        llm.reset()
        llm.eval(tokens)
        rows.append(log_softmax(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)))
    return np.stack(rows), llm


def compare(args) -> int:
    ref = np.load(args.reference)
    prompts = np.split(ref["ids"], np.cumsum(ref["lengths"])[:-1])
    prompts = [[int(t) for t in p] for p in prompts]
    unsteered = ref["unsteered"]
    failed = False

    base_lp, llm = llama_logprobs(args.base, prompts, None, 1.0, args.threads)
    same_ids = sum(llm.tokenize(str(t).encode(), add_bos=False, special=True) == p
                   for t, p in zip(ref["texts"], prompts, strict=True))
    print(f"tokenizer: llama.cpp's own tokenization of the rendered prompts equals weightsteer's on "
          f"{same_ids}/{len(prompts)} prompts")
    results = [summary("base, unsteered", unsteered, base_lp, None)]
    del llm
    informational = []
    for other in args.base_also:  # other base files (f16, the original Q4_1): how close, not pass/fail
        got, llm = llama_logprobs(other, prompts, None, 1.0, args.threads)
        del llm
        informational.append(summary(f"{other.split('/')[-1]}, unsteered", unsteered, got, None))

    for check in args.check:  # ADAPTER:SCALE:ALPHA  (the adapter at run-time SCALE should be ALPHA * dW)
        adapter, scale, alpha = check.rsplit(":", 2)
        scale, alpha = float(scale), float(alpha)
        expected = ref[f"alpha={alpha!r}"]
        got, llm = llama_logprobs(args.base, prompts, adapter, scale, args.threads)
        del llm
        results.append(summary(f"{adapter.split('/')[-1]} at scale {scale:+g} = alpha {alpha:+g}",
                               expected, got, unsteered))

    print(f"\n{'setting':<52} {'KL mean':>9} {'KL max':>9} {'top-1':>7} {'effect':>8} {'ratio':>8}")
    for r in results:
        effect = f"{r['effect']:.3f}" if r["effect"] is not None else "-"
        ratio = f"{r['effect'] / r['kl_mean']:.0f}x" if r["effect"] is not None and r["kl_mean"] > 0 else "-"
        print(f"{r['name']:<52} {r['kl_mean']:9.2e} {r['kl_max']:9.2e} {r['top1']:>7} {effect:>8} {ratio:>8}")
        if r["kl_mean"] > args.max_kl:
            print(f"FAIL {r['name']}: KL mean {r['kl_mean']:.2e} > {args.max_kl:g}")
            failed = True
        if r["effect"] is not None and r["kl_mean"] * 100 > r["effect"]:
            print(f"FAIL {r['name']}: KL mean is not 100x below the steering effect {r['effect']:.3g}")
            failed = True
    for r in informational:
        print(f"{r['name']:<52} {r['kl_mean']:9.2e} {r['kl_max']:9.2e} {r['top1']:>7} {'-':>8} {'-':>8}  (other base)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results + informational, f, indent=2)
    print("\nparity: " + ("FAILED" if failed else "passed") + f" ({len(prompts)} prompts, last-token next-token "
          "distributions; KL(weightsteer || llama.cpp) in nats; effect = KL(steered || unsteered) in weightsteer)")
    return 1 if failed else 0


def summary(name: str, expected: np.ndarray, got: np.ndarray, unsteered: np.ndarray | None) -> dict:
    kl = np.clip(kl_rows(expected, got), 0, None)
    top1 = int((expected.argmax(-1) == got.argmax(-1)).sum())
    effect = float(kl_rows(expected, unsteered).mean()) if unsteered is not None else None
    return {"name": name, "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1": f"{top1}/{len(kl)}", "effect": effect}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("reference")
    p.add_argument("--delta", required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--alphas", required=True, help="comma list of alphas to steer at")
    p.add_argument("--prompts", type=int, default=N_PROMPTS, help=f"the first N calibration questions ({N_PROMPTS})")
    p.add_argument("--out", required=True, help=".npz file to write")
    p = sub.add_parser("compare")
    p.add_argument("--reference", required=True)
    p.add_argument("--base", required=True, help="base model GGUF")
    p.add_argument("--check", action="append", default=[], metavar="ADAPTER:SCALE:ALPHA")
    p.add_argument("--base-also", action="append", default=[], metavar="GGUF",
                   help="another base file to compare unsteered (reported, not checked)")
    p.add_argument("--max-kl", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.step == "reference":
        reference(args)
        return 0
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
