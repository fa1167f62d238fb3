"""The README's main command (`bash scripts/demo.sh`), stage by stage, against a baseline checkout in the same run.

    python benchmarks/bench_run.py --before /path/to/baseline/src [--after src] [--behaviours mood,honesty] [--threads 1]
        [--after-args "--matmul-dtype bfloat16 --mmlu-dir ../shared/data/mmlu"]

Runs `weightsteer run --behavior B --adapter lora --max-new-tokens 64 --target-kl 1` (what demo.sh
runs) for each behaviour, once with this checkout's src and once with the baseline's, each in a fresh
run folder so no stage is skipped. The two versions run at the same time, one process each, so they
share whatever else the machine is doing; each process's CPU time (os.wait4) is reported beside its
wall time, because on a shared machine CPU time is the steadier of the two. Stage times come from the
"[stage] done in N s" lines every stage logs, calibration evaluations from calibration.json and the
before/after table's time from showcase.json. Prints a markdown table with ratios (before / after)
and the load average at both ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _versions import add_version_args, load_average

STAGE = re.compile(r"^\[(?P<name>[^\]]+)\] done in (?P<s>\d+) s")
ARGS = ["--adapter", "lora", "--max-new-tokens", "64", "--target-kl", "1"]


def run_version(src: Path, behaviours: list[str], work: Path, threads: int, result: dict,
                extra: list[str]) -> None:
    """Each behaviour's `weightsteer run` in turn, in its own process; fills result[behaviour]."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for behaviour in behaviours:
        out, logfile = work / behaviour, work / f"{behaviour}.log"
        command = [sys.executable, "-c", "import sys; from weightsteer.cli import main; sys.exit(main())",
                   "run", "--behavior", behaviour, *ARGS, *extra, "--out", str(out)]
        started = time.time()
        with open(logfile, "w") as f:
            proc = subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=work)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - started
        text = logfile.read_text()
        if status != 0:
            raise RuntimeError(f"{src}: run --behavior {behaviour} failed; see {logfile}")
        stages: dict[str, float] = {}
        for line in text.replace("\r", "\n").splitlines():
            m = STAGE.match(line)
            if m:  # several "eval" stages: the probe at each alpha and persona
                stages[m["name"]] = stages.get(m["name"], 0.0) + float(m["s"])
        run = next(out.glob("*/*/lora"))
        calibration = json.loads(next(run.glob("kl-*/calibration.json")).read_text())["results"]
        showcase = json.loads((run / "showcase.json").read_text())
        result[behaviour] = {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "stages": stages,
                             "evals": {side: r["iterations"] for side, r in calibration.items()},
                             "alphas": {side: r["coef"] for side, r in calibration.items()},
                             "kl": {side: r["kl"] for side, r in calibration.items()},
                             "table": showcase["seconds"], "log": str(logfile)}
        (work / "results.json").write_text(json.dumps(result, indent=1))  # kept even if the other version fails


def row(name: str, before: float, after: float, unit: str = "s", target: str = "") -> str:
    """A table row; no ratio where either side is 0 (a stage one version does not have, or under 1 s)."""
    ratio = f"{before / after:.2f}x" if before and after else "-"
    return f"| {name} | {before:.1f} {unit} | {after:.1f} {unit} | {ratio} | {target} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_version_args(parser)
    parser.add_argument("--behaviours", default="mood,honesty")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--after-args", default="", help="more options for the measured version's `run`, e.g. "
                        "\"--matmul-dtype bfloat16 --mmlu-dir ../shared/data/mmlu\" (the baseline gets none)")
    parser.add_argument("--work", default=None, help="where the run folders and logs go (default: a new temp folder)")
    args = parser.parse_args()
    behaviours = [b for b in args.behaviours.split(",") if b]
    work = Path(args.work or tempfile.mkdtemp(prefix="weightsteer-bench-run-"))
    versions = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    results: dict[str, dict] = {name: {} for name in versions}
    load_start, started = load_average(), time.time()
    extra = {"before": [], "after": shlex.split(args.after_args)}
    threads = [threading.Thread(target=run_version, args=(src, behaviours, work / name, args.threads, results[name],
                                                          extra[name]))
               for name, src in versions.items()]
    for name in versions:
        (work / name).mkdir(parents=True, exist_ok=True)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load_end = load_average()
    b, a = results["before"], results["after"]
    if set(b) != set(behaviours) or set(a) != set(behaviours):
        sys.exit(f"a run failed; logs under {work}")
    after_args = f" --after-args {shlex.quote(args.after_args)}" if args.after_args else ""
    lines = [f"Command: `python benchmarks/bench_run.py --before {args.before} --after {args.after} "
             f"--behaviours {args.behaviours} --threads {args.threads}{after_args}`; "
             f"both versions at the same time, {args.threads} thread(s) each; "
             f"load average (1/5/15 min) {load_start} at the start, {load_end} at the end; "
             f"{(time.time() - started) / 60:.0f} min; logs in {work}.", "",
             "| what | before | after | before / after | target |", "|---|---|---|---|---|"]
    lines.append(row("main command (all behaviours): wall time", sum(b[x]["wall"] for x in b),
                     sum(a[x]["wall"] for x in a), target=">= 2x, < 300 s idle"))
    lines.append(row("main command (all behaviours): CPU time", sum(b[x]["cpu"] for x in b),
                     sum(a[x]["cpu"] for x in a)))
    for x in behaviours:
        lines.append(row(f"{x}: `run` wall time", b[x]["wall"], a[x]["wall"], target=">= 2x"))
        lines.append(row(f"{x}: `run` CPU time", b[x]["cpu"], a[x]["cpu"]))
        for stage in dict.fromkeys([*b[x]["stages"], *a[x]["stages"]]):
            lines.append(row(f"{x}: stage {stage} (wall)", b[x]["stages"].get(stage, 0.0),
                             a[x]["stages"].get(stage, 0.0)))
        lines.append(row(f"{x}: before/after table (wall)", b[x]["table"], a[x]["table"], target=">= 2x"))
        for side in ("pos", "neg"):
            lines.append(row(f"{x}: calibration evaluations, {side}", b[x]["evals"][side], a[x]["evals"][side],
                             unit="", target="<= 4 per sign on average"))
            lines.append(f"| {x}: calibrated alpha, {side} (kl_p95) | {b[x]['alphas'][side]:+.3g} "
                         f"({b[x]['kl'][side]:.3f}) | {a[x]['alphas'][side]:+.3g} ({a[x]['kl'][side]:.3f}) | - | |")
    n_sides = 2 * len(behaviours)
    lines.append(row("calibration evaluations per sign, mean", sum(sum(b[x]["evals"].values()) for x in b) / n_sides,
                     sum(sum(a[x]["evals"].values()) for x in a) / n_sides, unit="", target="<= 4"))
    report = "\n".join(lines)
    (work / "RESULTS.md").write_text(report + "\n")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(report)


if __name__ == "__main__":
    main()
