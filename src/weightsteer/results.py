"""Per-row benchmark results, scored once per (model, benchmark items, method, coefficient) and kept.

Rows are written as JSONL (what the code reads back) and CSV (for people and spreadsheets). The
stage key holds the model's fingerprint, a hash of the exact items, what else decides the rows (a
probe's settings) and the coefficient, so `run`, `eval`, `sweep` and `headroom` share the rows
that do not depend on a direction (References) instead of scoring them again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path

from .atomic import atomic_path, read_jsonl, write_jsonl
from .delta import model_fingerprint
from .matmuls import compute_key
from .methods import UNSTEERED, prompt_baseline
from .models import model_label
from .stages import is_fresh, run_stage, stamp_path


def write_rows_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def rows_key(model, bench, items: list[dict], coef: float, inputs: dict | None = None) -> dict:
    rows_settings = bench.rows_key() if hasattr(bench, "rows_key") else {}
    return {**(inputs or {}), "model": model_fingerprint(model), **compute_key(model), "bench": bench.name,
            "settings": rows_settings, "coef": coef,
            "items": hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()}


def score_rows(model, tokenizer, bench, items: list[dict], method, coef: float, stem: Path,
               inputs: dict | None = None, *, batch_size: int = 16, log=print) -> tuple[list[dict], bool]:
    """(rows, whether they were computed now) of `bench` under `method` at `coef`, kept at stem.rows.*.

    `inputs` adds what else defines the rows (the direction's hash, the persona text...).
    """
    rows_path = stem.with_name(f"{stem.name}.rows.jsonl")
    key = rows_key(model, bench, items, coef, inputs)
    if is_fresh(rows_path, key):
        return read_jsonl(rows_path), False

    def build(out: Path) -> None:
        log(f"[eval] {bench.name}: {method.name} coef={coef:+.4g}")
        with method.apply(model, coef):
            rows = bench.score(model, tokenizer, items, system=method.system, user_prefix=method.user_prefix,
                               batch_size=batch_size)
        write_rows_csv(out.with_name(f"{stem.name}.rows.csv"), rows)
        write_jsonl(out, rows)

    run_stage(f"eval {bench.name}", rows_path, key, build, log)
    return read_jsonl(rows_path), True


def rows_files(stem: Path) -> list[Path]:
    """The files score_rows keeps for one stem: the rows as JSONL and CSV, and the stamp."""
    rows = stem.with_name(f"{stem.name}.rows.jsonl")
    return [rows, stem.with_name(f"{stem.name}.rows.csv"), stamp_path(rows)]


def base_stem(out_root: Path, model, bench) -> Path:
    """Where a model's unsteered rows of a benchmark live, whatever command scored them."""
    return Path(out_root) / model_label(model) / "base" / bench.name


class References:
    """The rows that do not depend on any direction: the unsteered model's, and the model's under the
    behaviour's POS and NEG persona prompts (their contrast is the headroom; the POS prompt is also
    the `prompt` baseline). Scored once per model and behaviour, kept, and shared."""

    def __init__(self, model, tokenizer, out_root: Path, behaviour, *, batch_size: int = 16, n_boot: int = 256,
                 log=print, on_scored=None):
        self.model, self.tokenizer, self.behaviour = model, tokenizer, behaviour
        self.out_root, self.batch_size, self.n_boot, self.log = Path(out_root), batch_size, n_boot, log
        self.on_scored = on_scored  # (method name, bench name, seconds) of every scoring actually done

    def scored(self, bench, items: list[dict], method, coef: float, stem: Path, inputs: dict | None = None):
        started = time.time()
        rows, built = score_rows(self.model, self.tokenizer, bench, items, method, coef, stem, inputs,
                                 batch_size=self.batch_size, log=self.log)
        if built and self.on_scored:
            self.on_scored(method.name, bench.name, time.time() - started)
        return rows

    def base_rows(self, bench, items: list[dict]) -> list[dict]:
        return self.scored(bench, items, UNSTEERED, 0.0, base_stem(self.out_root, self.model, bench))

    def persona_rows(self, bench, items: list[dict], side: str) -> list[dict]:
        persona = self.behaviour.personas[0 if side == "pos" else 1]
        stem = Path(self.out_root) / model_label(self.model) / self.behaviour.name / "headroom" / f"{bench.name}.{side}"
        return self.scored(bench, items, prompt_baseline(persona), 0.0, stem, {"persona": persona})

    def headroom(self, bench, items: list[dict]) -> dict | None:
        """The paired POS-prompt minus NEG-prompt summary (its "shift"), or None without persona pairs."""
        if self.behaviour.personas is None:
            return None
        return bench.summarise(self.persona_rows(bench, items, "pos"),
                               base_rows=self.persona_rows(bench, items, "neg"), n_boot=self.n_boot)
