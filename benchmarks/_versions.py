"""What the before/after benchmarks share: the load average as they print it, and one child script
run under two versions of the code at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def load_average() -> str:
    """The 1/5/15-minute load average, as every benchmark prints it."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def add_version_args(parser) -> None:
    parser.add_argument("--before", required=True, help="the baseline's src folder (e.g. a worktree of main)")
    parser.add_argument("--after", default=str(SRC),
                        help="the src folder to measure (default: this checkout's; pass a frozen copy when editing)")


def run_both(child: str, args_of: dict[str, list[str]], sources: dict[str, str]) -> dict[str, dict]:
    """Run `child` (Python source whose last stdout line is a JSON object) once per version, each with
    its src on PYTHONPATH and one thread, both at the same time so they share the machine's load;
    {version: that object}."""
    procs = {name: subprocess.Popen([sys.executable, "-c", child, *args_of[name]], stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": str(Path(src).resolve()), "OMP_NUM_THREADS": "1"})
             for name, src in sources.items()}
    return {name: json.loads(p.communicate()[0].strip().splitlines()[-1]) for name, p in procs.items()}
