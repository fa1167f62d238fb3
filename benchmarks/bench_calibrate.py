"""5. Calibration: how many steered evaluations iso-KL search needs, default strategy vs bisection.

The same problems for both strategies: the trained lora direction from benchmark 6 (a random lora
dW when benchmark 6 did not run first), a random ia3 dW, and a fitted mean_diff activation direction;
at the positive sign, target kl_p95 = 1 with the sweep's tolerance (5%). Every evaluation is the real
statistic (calibrate.token_kls: greedy generation, then steered and base teacher-forced passes) on a
fixed subset of the calibration questions. Evaluations are cached by coefficient, so points both
strategies visit (the doubling/halving bracket is the same) are computed once; each strategy is
still charged for every evaluation it asks for.
"""

from __future__ import annotations

import inspect
import math
import tempfile
import time
from pathlib import Path

import torch
from _common import Row, log, make_adapters

import weightsteer as ws
from weightsteer import calibrate as cal
from weightsteer.behaviours import calibration_questions, load_behaviour
from weightsteer.methods import WeightSteering

TARGET_EVALS = 4.0
TARGET_KL, TOL = 1.0, 0.05
SECANT = "secant (prototype)"


def default_strategy() -> str:
    return inspect.signature(cal.calibrate).parameters["strategy"].default


def secant_search(kl_of, target: float, tol: float, sign: int, max_iter: int = 12) -> tuple[int, bool, float]:
    """Prototype, not in calibrate.py: secant steps on log KL vs log|alpha| from the very first point.

    KL grows as alpha^2 near zero, so one point already predicts where the target is: step with slope 2
    until two points give a measured slope, keep any bracket found, and bisect it when a step leaves it.
    calibrate.search instead doubles or halves from `start` until it brackets, which costs
    log2(alpha* / start) evaluations before the refinement starts. Returns (evaluations, converged, coef).
    """
    def f(x: float) -> float:
        kl = kl_of(sign * math.exp(x))
        return math.log(kl / target) if 0 < kl < math.inf else (-math.inf if kl == 0 else math.inf)

    x, fx, n = 0.0, f(0.0), 1
    lo, hi, prev = None, None, None
    while n < max_iter and not math.log(1 - tol) <= fx <= math.log(1 + tol):
        if fx < 0:
            lo = (x, fx) if lo is None or x > lo[0] else lo
        else:
            hi = (x, fx) if hi is None or x < hi[0] else hi
        slope = 2.0
        if prev is not None and math.isfinite(fx) and math.isfinite(prev[1]) and x != prev[0]:
            measured = (fx - prev[1]) / (x - prev[0])
            slope = measured if measured > 0.1 else 2.0
        step = -fx / slope if math.isfinite(fx) else (-1.0 if fx > 0 else 1.0)
        new = x + max(-3.0, min(3.0, step))
        if lo is not None and hi is not None and not lo[0] < new < hi[0]:
            new = (lo[0] + hi[0]) / 2
        prev, x = (x, fx), new
        fx, n = f(x), n + 1
    return n, math.log(1 - tol) <= fx <= math.log(1 + tol), sign * math.exp(x)


def methods_to_calibrate(model, tokenizer, root: Path, work: Path | None, kinds) -> dict:
    from weightsteer.baselines import fit_activation_method

    methods = {}
    trained = sorted(work.glob("**/delta.safetensors")) if work else []
    if trained:  # the realistic lora direction; a random one stands in when benchmark 6 did not run
        methods["trained lora (benchmark 6)"] = WeightSteering("lora", delta=ws.WeightDelta.load(trained[0]))
        kinds = [k for k in kinds if k != "lora"]
    for name, (pos, neg) in make_adapters(model, kinds, root).items():
        methods[f"random {name}"] = WeightSteering(name, delta=ws.WeightDelta.from_adapters(model, pos, neg))
    methods["mean_diff (activation)"] = fit_activation_method("mean_diff", model, tokenizer, load_behaviour("honesty"), n_questions=16)
    return methods


def measure(quick: bool, work: str | None) -> dict:
    if quick:  # a tiny random model: checks the plumbing, says nothing about counts on a real model
        from weightsteer.tiny import embedded_tokenizer, tiny_model

        model, tokenizer = tiny_model("llama", embedded_tokenizer())
        # as in tests/test_calibrate.py: an untied random head, else the tiny model's KL saturates near 0
        head = 0.1 * torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
        model.lm_head.weight = torch.nn.Parameter(head)
        n_questions, T, kinds = 4, 8, ["lora"]
    else:
        model, tokenizer = ws.load_model("smollm2-135m")
        n_questions, T, kinds = 8, 20, ["lora", "ia3"]  # a factored and a dense dW
    batches = cal.encode_prompts(tokenizer, calibration_questions()[:n_questions], model.device)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        methods = methods_to_calibrate(model, tokenizer, Path(tmp), Path(work) if work else None, kinds)
        for name, method in methods.items():
            cache: dict[float, float] = {}

            def kl_of(coef: float, method=method, cache=cache) -> float:
                if coef not in cache:
                    cache[coef] = cal.p95(cal.token_kls(model, tokenizer, method, coef, batches, T))
                return cache[coef]

            started = time.perf_counter()
            for strategy in (default_strategy(), "bisection"):
                r = cal.search(kl_of, TARGET_KL, TOL, sign=1, strategy=strategy)
                results[f"{name}|{strategy}"] = {"evals": r.iterations, "converged": r.converged, "coef": r.coef,
                                                 "kl": r.kl}
            n, converged, coef = secant_search(kl_of, TARGET_KL, TOL, 1)
            results[f"{name}|{SECANT}"] = {"evals": n, "converged": converged, "coef": coef, "kl": kl_of(coef)}
            log(f"calibrate {name}: {len(cache)} distinct evaluations in {time.perf_counter() - started:.0f} s: "
                + ", ".join(f"{k}={v}" for k, v in results.items() if k.startswith(f"{name}|")))
    return {"strategies": [default_strategy(), "bisection", SECANT], "results": results, "T": T,
            "n_questions": n_questions}


def run(quick: bool, work: str | None = None) -> list[dict]:
    m = measure(quick, work)
    strategies, results = m["strategies"], m["results"]
    default, bisection, secant = strategies
    problems = sorted({k.split("|")[0] for k in results})
    size = "tiny-llama" if quick else "SmolLM2-135M"
    mean = {s: sum(results[f"{p}|{s}"]["evals"] for p in problems) / len(problems) for s in strategies}
    failed = {s: sum(not results[f"{p}|{s}"]["converged"] for p in problems) for s in strategies}
    setting = f"{len(problems)} problems, target kl_p95 {TARGET_KL:g} +-{TOL:.0%}, {m['n_questions']} prompts x {m['T']} tokens"
    rows = [
        Row(f"5 calibration: mean steered evaluations, {default} (default) vs bisection", size,
            f"{mean[default]:.1f}", f"{mean[bisection]:.1f}", mean[bisection] / mean[default],
            f"<= {TARGET_EVALS:g}", mean[default] <= TARGET_EVALS,
            f"{setting}; not converged: {failed[default]} vs {failed[bisection]}"),
        Row(f"5 calibration: mean steered evaluations, {secant} vs bisection", size,
            f"{mean[secant]:.1f}", f"{mean[bisection]:.1f}", mean[bisection] / mean[secant],
            f"<= {TARGET_EVALS:g}", mean[secant] <= TARGET_EVALS, f"not converged: {failed[secant]}"),
    ]
    for p in problems:
        a, b, c = (results[f"{p}|{s}"] for s in strategies)
        rows.append(Row(f"5 calibration: {p}: {default} / {secant}", size, f"{a['evals']} / {c['evals']}",
                        f"{b['evals']}", b["evals"] / a["evals"], "-", None,
                        f"alpha* {abs(a['coef']):.3g}, kl {a['kl']:.3f}" + ("" if a["converged"] else ", NOT converged")))
    return [vars(r) for r in rows]
