"""Moving a unit's files between the run folder and a worker that does not share its filesystem.

The worker gets the files the unit reads (the shared work, and the unit's own finished stages so
that it resumes instead of starting over) as {path relative to the run root: bytes}, runs the unit
in a scratch copy, and sends back the files that are new or changed and the names of any it
removed. The driver writes them into the run folder atomically, each stage's stamp last (as
stages.run_stage does), so a driver killed while writing leaves stages that are rebuilt, never a
stale output taken for a fresh one.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path
from ..locks import is_lock_file

STAMP_SUFFIX = ".inputs"  # stages.stamp_path: .<output name>.inputs beside the output


def is_stamp(rel: str) -> bool:
    name = Path(rel).name
    return name.startswith(".") and name.endswith(STAMP_SUFFIX)


def is_temporary(path: Path) -> bool:
    """atomic_path's scratch folders (.<name>.<random>.tmp): half-written, never moved."""
    return any(part.startswith(".") and part.endswith(".tmp") for part in path.parts)


def pack(root: Path, paths) -> dict[str, bytes]:
    """Every file under each of `paths` (files or folders under root), keyed by path relative to root."""
    root = Path(root)
    files = {}
    for path in paths:
        path = Path(path)
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        for f in found:
            rel = f.relative_to(root)
            if not is_temporary(rel) and not is_lock_file(rel):
                files[str(rel)] = f.read_bytes()
    return files


def unpack(root: Path, files: dict[str, bytes]) -> None:
    """Write files into a scratch folder (not the run folder: no atomicity needed there)."""
    for rel, data in files.items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def changes(root: Path, before: dict[str, bytes]) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """(files new or changed since `before`, paths of `before` that are gone) under root."""
    now = pack(root, [root])
    changed = {rel: data for rel, data in now.items() if before.get(rel) != data}
    return changed, tuple(rel for rel in before if rel not in now)


def write_outputs(root: Path, files: dict[str, bytes], removed=()) -> None:
    """Write a unit's outputs into the run folder: stale stamps first removed, outputs written
    atomically, stamps last."""
    root = Path(root)
    stamps = [rel for rel in files if is_stamp(rel)]
    for rel in [*stamps, *removed]:
        (root / rel).unlink(missing_ok=True)
    for rel in [*(r for r in files if not is_stamp(r)), *stamps]:
        with atomic_path(root / rel) as tmp:
            tmp.write_bytes(files[rel])
