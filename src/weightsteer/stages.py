"""Resumable stages: an output is rebuilt only when it is missing, damaged or its inputs changed.

Each output has a stamp file beside it holding a hash of its inputs (settings and the hashes of
input files) and a hash of the output as it was written. Outputs are written atomically and the
stamp last, so a run killed at any moment either finds a complete output with a matching stamp
(skipped) or rebuilds it; an output changed after it was written (truncated, edited, replaced)
no longer matches its stamp and is rebuilt, with one line saying so.

Stamps written before output hashes were recorded hold only the inputs' hash; they are still
honoured, and upgraded with the output's hash the first time they are found fresh.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from .atomic import remove_stale_temporaries, write_text
from .locks import output_lock


def file_hash(path: Path) -> str:
    """sha256 of a file, or of every file in a folder (names and contents)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def inputs_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def stamp_path(output: Path) -> Path:
    return output.parent / f".{output.name}.inputs"


def write_stamp(output: Path, inputs: dict) -> None:
    write_text(stamp_path(output), json.dumps({"inputs": inputs_key(inputs), "output": file_hash(output)}) + "\n")


def staleness(output: Path, inputs: dict) -> str | None:
    """None when `output` is up to date; else why it must be built ("" when it simply was never built)."""
    stamp = stamp_path(output)
    if not output.exists() or not stamp.is_file():
        return ""
    text = stamp.read_text(errors="replace").strip()
    try:
        recorded = json.loads(text) if text.startswith("{") else {"inputs": text, "output": None}
        recorded_inputs, recorded_output = recorded["inputs"], recorded["output"]
    except (ValueError, KeyError, TypeError):
        return f"its stamp {stamp} is damaged"
    if recorded_inputs != inputs_key(inputs):
        return ""  # new settings or inputs: the ordinary reason to build, not worth a line
    if recorded_output is None:  # an older stamp: trust the output once and record its hash from now on
        write_stamp(output, inputs)
        return None
    if recorded_output != file_hash(output):
        return "it changed after it was written (damaged or edited)"
    return None


def is_fresh(output: Path, inputs: dict) -> bool:
    return staleness(output, inputs) is None


def run_stage(name: str, output: Path, inputs: dict, build: Callable[[Path], None], log=print) -> bool:
    """Build `output` with build(output) unless it is fresh. Returns True when it was built.

    A build holds the output's lock (locks.output_lock): another process building the same output is
    waited for, and its result is then found up to date. A fresh output is read without the lock, so
    finished results in a read-only folder still serve."""
    def waiting(pid: str) -> None:
        log(f"[{name}] waiting for weightsteer process {pid}, which is building {output}")

    if staleness(output, inputs) is None:
        log(f"[{name}] up to date: {output}")
        return False
    with output_lock(output, on_wait=waiting):
        reason = staleness(output, inputs)  # again: another process may have built it while we waited
        if reason is None:
            log(f"[{name}] up to date: {output}")
            return False
        if reason:
            log(f"[{name}] rebuilding {output}: {reason}")
        stamp_path(output).unlink(missing_ok=True)
        remove_stale_temporaries(output)  # left by a process killed while writing it (no one else holds the lock)
        started = time.time()
        build(output)
        write_stamp(output, inputs)
    log(f"[{name}] done in {time.time() - started:.0f} s: {output}")
    return True
