"""The before/after table of one direction, before vs after: CPU and wall time, and whether the outputs match.

    python benchmarks/bench_table.py --before OLD/src --after src --delta D.safetensors --alphas=-4.3,0,6.86

For each version (its src on PYTHONPATH, one process each, both at the same time, fresh reference
folders so every row is scored): `showcase` of the behaviour's probe at the given alphas. Prints
each version's CPU and wall time, the ratio, and whether the greedy answers and every probe number
are the same.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from _versions import add_version_args, load_average, run_both

CHILD = r'''
import json, sys, time
from pathlib import Path
import weightsteer as ws
from weightsteer.behaviours import load_behaviour
from weightsteer.results import References
from weightsteer.showcase import showcase
from weightsteer.stages import file_hash
delta_path, behaviour, alphas, out = Path(sys.argv[1]), sys.argv[2], [float(a) for a in sys.argv[3].split(",")], Path(sys.argv[4])
model, tok = ws.load_model("smollm2-135m")
delta = ws.WeightDelta.load(delta_path)
b = load_behaviour(behaviour)
refs = References(model, tok, out, b, log=lambda *a: None)
t, c = time.time(), time.process_time()
r = showcase(model, tok, delta, b, refs, out, file_hash(delta_path), benches=[(b.probe, b.probe.load())],
             alphas=alphas, log=lambda *a: None)
print(json.dumps({"cpu": time.process_time() - c, "wall": time.time() - t, "probes": r["probes"], "answers": r["answers"]}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_version_args(parser)
    parser.add_argument("--delta", required=True)
    parser.add_argument("--behaviour", default="mood")
    parser.add_argument("--alphas", default="-1,0,1")
    args = parser.parse_args()
    load = load_average()
    work = Path(tempfile.mkdtemp(prefix="weightsteer-bench-table-"))
    child_args = {name: [args.delta, args.behaviour, args.alphas, str(work / name)] for name in ("before", "after")}
    out = run_both(CHILD, child_args, {"before": args.before, "after": args.after})
    b, a = out["before"], out["after"]
    print(f"load average {load} at the start, {load_average()} at the end")
    print(f"CPU time {b['cpu']:.1f} s -> {a['cpu']:.1f} s ({b['cpu'] / a['cpu']:.2f}x); "
          f"wall time {b['wall']:.0f} s -> {a['wall']:.0f} s ({b['wall'] / a['wall']:.2f}x)")
    gap = largest_difference(b["probes"], a["probes"])
    note = ""
    if gap is not None:
        note = f" (largest difference {gap:.2g})" if math.isfinite(gap) else " (their structure differs)"
    print(f"same answers: {b['answers'] == a['answers']}; same probe numbers: {gap is None}{note}")


def largest_difference(x, y) -> float | None:
    """The largest |difference| between the numbers of two equally shaped JSON values; None when they are
    equal, infinity when their shapes or non-numbers differ."""
    if x == y:
        return None
    if isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
        gaps = [largest_difference(x[k], y[k]) for k in x]
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        gaps = [largest_difference(u, v) for u, v in zip(x, y, strict=True)]
    elif isinstance(x, int | float) and isinstance(y, int | float):
        return abs(x - y)
    else:
        return float("inf")
    return max((g for g in gaps if g is not None), default=None)


if __name__ == "__main__":
    main()
