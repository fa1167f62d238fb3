"""Calibration cost on one trained direction, before vs after: steered evaluations per sign and CPU time.

    python benchmarks/bench_calibrate_cost.py --before OLD/src --after src --delta DIR/delta.safetensors

For each version (its src on PYTHONPATH, one process each, both at the same time): calibrate both
signs of the direction as `weightsteer run` does (the behaviour's first 20 calibration prompts,
kl_p95 = 1, tolerance 5%), then time one more evaluation at each calibrated alpha. Prints each
version's evaluations, alphas, KLs and CPU seconds, and the ratios.
"""

from __future__ import annotations

import argparse

from _versions import add_version_args, load_average, run_both

CHILD = r'''
import json, sys, time
import weightsteer as ws
from weightsteer import calibrate as cal
from weightsteer.behaviours import load_behaviour
from weightsteer.methods import WeightSteering
delta_path, behaviour = sys.argv[1], sys.argv[2]
model, tok = ws.load_model("smollm2-135m")
method = WeightSteering("lora", delta=ws.WeightDelta.load(delta_path))
prompts = load_behaviour(behaviour).calibration[:20]
c = time.process_time()
results = cal.calibrate_both_signs(model, tok, method, 1.0, 0.05, prompts, log=lambda *a: None)
search_cpu = time.process_time() - c
batches = cal.encode_prompts(tok, prompts, model.device)
per_eval = []
for r in results.values():
    c = time.process_time()
    cal.token_kls(model, tok, method, r.coef, batches, 20)
    per_eval.append(time.process_time() - c)
print(json.dumps({"search_cpu": search_cpu, "eval_cpu": per_eval,
                  **{side: {"coef": r.coef, "kl": r.kl, "evals": r.iterations, "converged": r.converged}
                     for side, r in results.items()}}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_version_args(parser)
    parser.add_argument("--delta", required=True)
    parser.add_argument("--behaviour", default="mood")
    args = parser.parse_args()
    load = load_average()
    child_args = [args.delta, args.behaviour]
    out = run_both(CHILD, {"before": child_args, "after": child_args}, {"before": args.before, "after": args.after})
    b, a = out["before"], out["after"]
    print(f"load average {load} at the start, {load_average()} at the end")
    for side in ("pos", "neg"):
        print(f"{side}: evaluations {b[side]['evals']} -> {a[side]['evals']}; alpha {b[side]['coef']:+.4g} "
              f"(kl {b[side]['kl']:.3f}) -> {a[side]['coef']:+.4g} (kl {a[side]['kl']:.3f})")
    print(f"CPU per evaluation: {sum(b['eval_cpu']) / 2:.1f} s -> {sum(a['eval_cpu']) / 2:.1f} s "
          f"({sum(b['eval_cpu']) / sum(a['eval_cpu']):.2f}x)")
    print(f"CPU of the search (both signs): {b['search_cpu']:.0f} s -> {a['search_cpu']:.0f} s "
          f"({b['search_cpu'] / a['search_cpu']:.2f}x)")


if __name__ == "__main__":
    main()
