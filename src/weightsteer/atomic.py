"""Atomic writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    Works for files and folders. On any error (or Ctrl-C) the temporary is removed and
    `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def temporaries_of(path: str | os.PathLike) -> list[Path]:
    """The temporary folders atomic_path makes for `path` (left behind only by a killed process)."""
    path = Path(path)
    return sorted(p for p in path.parent.glob(f".{path.name}.*.tmp") if p.is_dir()) if path.parent.is_dir() else []


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove what a process killed while writing `path` left behind. Call only where no other process
    can be writing `path` at the same time (a stage about to run, holding locks.output_lock(path))."""
    for tmp in temporaries_of(path):
        shutil.rmtree(tmp, ignore_errors=True)


def json_safe(obj, where: str = "", nulled: dict | None = None):
    """`obj` with every NaN or infinite float replaced by None; nulled[where] = what it was.

    JSON has no NaN or Infinity (Python writes them, most readers refuse them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if nulled is not None:
            nulled[where or "."] = repr(obj)
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v, f"{where}.{k}" if where else str(k), nulled) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v, f"{where}[{i}]", nulled) for i, v in enumerate(obj)]
    return obj


def json_text(obj, **dumps_args) -> str:
    """JSON of `obj` with non-finite numbers written as null; a dict also gets "null_because":
    {field: "nan" | "inf" | "-inf"} naming each one, so a null is never mistaken for a missing value."""
    nulled: dict = {}
    clean = json_safe(obj, "", nulled)
    if nulled and isinstance(clean, dict):
        clean["null_because"] = {field: f"{value}: not a finite number" for field, value in nulled.items()}
    return json.dumps(clean, allow_nan=False, **dumps_args)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json_text(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows) -> None:
    write_text(path, "".join(json_text(row) + "\n" for row in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- folders weightsteer writes for the user (exports), and only those may be replaced ----------

OUTPUT_MARKER = ".weightsteer-output.json"


def mark_output(folder: str | os.PathLike, kind: str) -> None:
    """Record in `folder` that weightsteer wrote it, and which files: a later write may replace
    exactly these and nothing else. Call it last, inside the atomic write of the folder."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER)
    (folder / OUTPUT_MARKER).write_text(json.dumps({"written_by": "weightsteer", "kind": kind, "files": files},
                                                   indent=2) + "\n")


def why_not_replaceable(path: str | os.PathLike, kind: str) -> str | None:
    """None when `path` is free, or a folder weightsteer wrote as `kind` that holds only the files it
    wrote; else why replacing it would destroy something (a model's own folder, files added later)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_dir() or path.is_symlink():
        return "it exists and is not a folder"
    marker = path / OUTPUT_MARKER
    try:
        record = json.loads(marker.read_text())
        written, recorded_kind = set(record["files"]), record["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return "it exists and was not written by weightsteer (it may hold a model or other files)"
    if recorded_kind != kind:
        return f"it holds a weightsteer {recorded_kind} output, not a {kind} one"
    extra = sorted(str(p.relative_to(path)) for p in path.rglob("*")
                   if p.is_file() and p.name != OUTPUT_MARKER and str(p.relative_to(path)) not in written)
    if extra:
        return f"it holds files weightsteer did not write ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})"
    return None


def check_replaceable(path: str | os.PathLike, kind: str, protected: tuple = ()) -> None:
    """Refuse to write the folder `path` over anything weightsteer did not write there, or over one
    of the `protected` folders (the model being read)."""
    from .errors import WeightsteerError

    path = Path(path)
    for folder in protected:
        if folder and Path(folder).is_dir() and path.exists() and path.resolve() == Path(folder).resolve():
            raise WeightsteerError(f"'{path}' is the base model's own folder: write the {kind} to a new folder")
    reason = why_not_replaceable(path, kind)
    if reason:
        raise WeightsteerError(f"will not write into '{path}': {reason}; choose a new output folder")


def read_json(path: str | os.PathLike, fix: str):
    """The parsed JSON of a file weightsteer wrote; a damaged or unreadable one is one line saying `fix`."""
    from .errors import WeightsteerError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = getattr(err, "strerror", None) or getattr(err, "msg", None) or str(err)
        raise WeightsteerError(f"'{path}' is damaged or unreadable ({reason}): {fix}") from None
