"""Resumable stages: an output is rebuilt only when it is missing or its inputs changed.

Each output has a stamp file beside it holding a hash of its inputs (settings and the hashes of
input files). Outputs are written atomically and the stamp last, so a run killed at any moment
either finds a complete output with a matching stamp (skipped) or rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from .atomic import write_text


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


def is_fresh(output: Path, inputs: dict) -> bool:
    stamp = stamp_path(output)
    return output.exists() and stamp.exists() and stamp.read_text() == inputs_key(inputs)


def run_stage(name: str, output: Path, inputs: dict, build: Callable[[Path], None], log=print) -> bool:
    """Build `output` with build(output) unless it is fresh. Returns True when it was built."""
    if is_fresh(output, inputs):
        log(f"[{name}] up to date: {output}")
        return False
    stamp_path(output).unlink(missing_ok=True)
    started = time.time()
    build(output)
    write_text(stamp_path(output), inputs_key(inputs))
    log(f"[{name}] done in {time.time() - started:.0f} s: {output}")
    return True
