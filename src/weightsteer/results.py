"""Per-row benchmark results, scored once per (model, benchmark items, method, coefficient) and kept.

Rows are written as JSONL (what the code reads back) and CSV (for people and spreadsheets). The
stage key holds the model's fingerprint, a hash of the exact items and the coefficient, so `eval`,
`sweep` and `headroom` share the unsteered rows of a model instead of scoring them again.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from .atomic import atomic_path, read_jsonl, write_jsonl
from .delta import model_fingerprint
from .evals import BENCHMARKS
from .stages import is_fresh, run_stage


def write_rows_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def base_stem(out_root: Path, model_label: str, bench: str) -> Path:
    """Where a model's unsteered rows live, whatever command scored them."""
    return Path(out_root) / model_label / "base" / bench


def score_rows(model, tokenizer, bench: str, items: list[dict], method, coef: float, stem: Path,
               inputs: dict | None = None, *, batch_size: int = 16, log=print) -> tuple[list[dict], bool]:
    """(rows, whether they were computed now) of `bench` under `method` at `coef`, kept at stem.rows.*.

    `inputs` adds what else defines the rows (the direction's hash, the persona text...).
    """
    rows_path = stem.with_name(f"{stem.name}.rows.jsonl")
    key = {**(inputs or {}), "model": model_fingerprint(model), "bench": bench, "coef": coef,
           "items": hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()}
    if is_fresh(rows_path, key):
        return read_jsonl(rows_path), False

    def build(out: Path) -> None:
        log(f"[eval] {bench}: {method.name} coef={coef:+.4g}")
        with method.apply(model, coef):
            rows = BENCHMARKS[bench].score(model, tokenizer, items, system=method.system,
                                           user_prefix=method.user_prefix, batch_size=batch_size)
        write_rows_csv(out.with_name(f"{stem.name}.rows.csv"), rows)
        write_jsonl(out, rows)

    run_stage(f"eval {bench}", rows_path, key, build, log)
    return read_jsonl(rows_path), True
