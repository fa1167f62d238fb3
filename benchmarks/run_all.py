"""Run every benchmark, print one markdown table and write it to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run_all.py            # the full run (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # small models, a sanity check in a few minutes
    .venv/bin/python benchmarks/run_all.py --before ../baseline/src   # and the main command, before vs now

With --before, the table is followed by bench_run.py's: the README's main command run by a baseline
checkout and by this one at the same time (one thread each), stage by stage, with ratios.

Each benchmark runs in its own interpreter, so one benchmark's heap and threads do not colour the
next one's numbers, and a failure is reported as a row rather than ending the run. The machine's
load average is recorded at both ends: these numbers come from a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import BENCH_DIR, GiB, Row, in_subprocess, log
from _versions import load_average

# (module, takes the shared work folder): benchmark 6 leaves a trained direction there for 5
BENCHMARKS = [("bench_checks", False), ("bench_extract", False), ("bench_inference", False),
              ("bench_switch", False), ("bench_tinymfv", False), ("bench_pipeline", True),
              ("bench_calibrate", True), ("bench_scaling", False)]
COLUMNS = ("benchmark", "size", "ours", "naive", "ratio", "target", "met?")


def machine(threads: int | None) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    import torch

    return (f"{cpu} (AVX-512, AMX), {os.cpu_count()} cores (intra-op threads: {threads or os.cpu_count()}), "
            f"{psutil.virtual_memory().total / GiB:.1f} GiB RAM, no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def table(rows: list[dict]) -> str:
    def cell(r: dict, column: str) -> str:
        if column == "ratio":
            return "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        if column == "met?":
            return {True: "yes", False: "**NO**", None: ""}[r["met"]]
        text = r[column]
        return f"{text} ({r['note']})" if column == "benchmark" and r.get("note") else text

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main_command_table(before: str, work: Path) -> str:
    """bench_run.py's markdown: the README's main command under `before` and this checkout, as demo.sh runs it."""
    mmlu = BENCH_DIR.parent.parent / "shared" / "data" / "mmlu"
    after_args = "--matmul-dtype auto" + (f" --mmlu-dir {mmlu}" if (mmlu / "test.jsonl").exists() else "")
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "bench_run.py"), "--before", before, "--work", str(work),
                           "--after-args", after_args], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"bench_run.py FAILED: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return proc.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models and few repeats: a sanity run")
    parser.add_argument("--only", nargs="*", help="run only these benchmark modules (e.g. bench_switch)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for every benchmark (default: torch's, one per core)")
    parser.add_argument("--before", default=None,
                        help="a baseline checkout's src folder: also run bench_run.py (the main command, baseline "
                             "vs this checkout, same run) and add its table")
    args = parser.parse_args()
    if args.threads:  # read by torch when each benchmark's interpreter starts
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    command = ("cd /work/main && .venv/bin/python benchmarks/run_all.py" + (" --quick" if args.quick else "")
               + (f" --threads {args.threads}" if args.threads else "") + (f" --before {args.before}" if args.before
                                                                           else ""))
    started, load_before = time.time(), load_average()
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="weightsteer-bench-") as work:
        for module, uses_work in BENCHMARKS:
            if args.only and module not in args.only:
                continue
            log(f"---- {module} (load {load_average()})")
            t = time.time()
            try:
                rows += in_subprocess(module, "run", args.quick, *([work] if uses_work else []))
            except Exception as err:  # one broken benchmark must not hide the others
                rows.append(vars(Row(f"{module} FAILED", "-", str(err)[:120], "-", None, "-", False)))
            seconds[module] = time.time() - t
            log(f"---- {module} took {seconds[module]:.0f} s")
        if args.before:
            log(f"---- bench_run: the main command, {args.before} vs this checkout (load {load_average()})")
            t = time.time()
            main_command = main_command_table(args.before, Path(work) / "run")
            seconds["bench_run"] = time.time() - t
    rows.sort(key=lambda r: r["benchmark"].split(" ", 1)[0])  # by benchmark number; stable within one
    total = time.time() - started
    body = table(rows)
    per_module = ", ".join(f"{m.removeprefix('bench_')} {s:.0f} s" for m, s in seconds.items())
    report = "\n".join([
        "# weightsteer benchmarks", "",
        f"Command: `{command}`" + (f" (only {' '.join(args.only)})" if args.only else ""), "",
        f"Machine: {machine(args.threads)}. Load average (1/5/15 min) {load_before} at the start, {load_average()} at the end "
        "(a shared machine: other users' work slows every number here, ours and the baselines alike).", "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; total wall time {total / 60:.1f} min "
        f"({per_module}).", "",
        "Models are float32 on CPU. ratio = how many times better ours is than the baseline "
        "(speed: baseline time / ours; memory: baseline / ours; tok/s: ours / baseline); "
        "a row with no target is context. See docs/performance.md for what each row means.", "",
        body, ""] + (["## The main command, before and after (bench_run.py)", "", main_command, ""] if args.before
                     else []))
    out = BENCH_DIR / "RESULTS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(report)
    os.replace(tmp, out)  # atomic: a reader never sees half a table
    print(report)
    log(f"wrote {out} ({shlex.quote(sys.executable)}; {total:.0f} s)")


if __name__ == "__main__":
    main()
