"""The sweep's driver: shared work once, then every unit that is not done yet, through an executor.

The driver holds the model for the work units share (each seed's data, the unsteered rows and the
headroom), decides which units are already done (their sweep.json entry says ok with the same key,
and their summaries exist), hands the others to an executor (executors/: in this process, or Ray
tasks), and records each result as it arrives: the files a remote unit made, its stage timings, and
its entry in its seed folder's sweep.json. A unit that fails is recorded with its error and the
others go on; a stopped sweep resumes with the units it had not finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from tqdm.auto import tqdm

from .adapters import METHODS as WEIGHT_METHODS
from .atomic import read_jsonl, write_json, write_jsonl
from .executors.files import write_outputs
from .pipeline import build_data
from .results import rows_key
from .stages import file_hash, inputs_key
from .sweep import SweepSettings, Unit, UnitResult, UnitWork, sweep_units

UNIT_FORMAT = 1  # bump when a unit's outputs change meaning, so finished units are redone
NOT_IN_KEY = ("behaviour", "benchmarks", "methods", "seeds", "data_dirs", "limit")  # keyed by what they decide


class SweepDriver:
    def __init__(self, model, tokenizer, settings: SweepSettings, items: dict[str, list[dict]], out_root: Path,
                 log=print):
        self.work = UnitWork(model, tokenizer, settings, items, out_root, log)
        self.s, self.log, self.out_root = settings, log, Path(out_root)

    # ---- shared work -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """What units share, made once before any unit: each seed's data (weight methods train on
        it), the unsteered rows and the POS/NEG persona rows (the headroom; also the prompt baseline)."""
        w = self.work
        if self.s.preset:  # the preset's settings beside the seed's values (the report prints it)
            from .presets import table

            write_json(w.folder(self.s.seeds[0]) / "preset.json",
                       {"preset": self.s.preset, "settings": table(self.s.preset, self.s.preset_used)})
        if any(m in WEIGHT_METHODS for m in self.s.methods):
            for seed in self.s.seeds:
                started = time.time()
                build_data(w.model, w.tokenizer, w.behaviour, self.out_root, w.data_settings(seed), self.log)
                self.append_timings(seed, [{"method": "data", "stage": "data", "seconds": round(time.time() - started, 2)}])
        w.timings = []  # the scoring References does, as it reports it
        for bench in w.benches:
            w.refs.base_rows(bench, w.items[bench.name])
            w.refs.headroom(bench, w.items[bench.name])
        if w.cost is not None:  # the unsteered MMLU and coherence rows every condition is compared with
            w.cost.base()
        self.append_timings(self.s.seeds[0], w.timings)

    # ---- which units are done ---------------------------------------------------------------------
    def unit_key(self, unit: Unit) -> str:
        """Everything that decides a unit's outputs: its settings, the model, the benchmarks' exact
        items and the shared files it reads. A finished unit with another key is done again."""
        w = self.work
        settings = {f.name: getattr(self.s, f.name) for f in fields(self.s) if f.name not in NOT_IN_KEY}
        settings["data"] = asdict(replace(self.s.data, seed=unit.seed))
        benches = [rows_key(w.model, b, w.items[b.name], 0.0) for b in w.benches]
        shared = {str(p.relative_to(self.out_root)): file_hash(p) for p in self.work.shared_inputs(unit.seed)
                  if p.exists() and (unit.method in WEIGHT_METHODS or p.name != "data.jsonl")}
        return inputs_key({"format": UNIT_FORMAT, "method": unit.method, "seed": unit.seed, "settings": settings,
                           "behaviour": {**w.behaviour.generation_key(), "calibration": w.behaviour.calibration},
                           "benches": benches, "shared": shared})

    def status(self, seed: int) -> dict:
        """The seed folder's sweep.json, or {} when it is missing or damaged (it is rewritten unit by unit)."""
        path = self.work.folder(seed) / "sweep.json"
        if not path.exists():
            return {}
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = None
        if not isinstance(status, dict):
            self.log(f"[sweep] {path} was damaged: starting it again")
            return {}
        return status

    def is_done(self, unit: Unit, key: str) -> bool:
        entry = self.status(unit.seed).get(unit.method, {})
        return bool(entry.get("ok")) and entry.get("key") == key and all(
            p.exists() for p in self.work.summary_paths(unit))

    # ---- recording -------------------------------------------------------------------------------
    def append_timings(self, seed: int, timings: list[dict]) -> None:
        """Append stage wall times to the seed folder's timings.jsonl (the report's timing table), atomically."""
        if not timings:
            return
        path = self.work.folder(seed) / "timings.jsonl"
        write_jsonl(path, (read_jsonl(path) if path.exists() else []) + timings)

    def record(self, result: UnitResult, key: str) -> None:
        unit = result.unit
        if result.files is not None:  # made in another folder (a Ray worker): written here as locally
            write_outputs(self.out_root, result.files, result.removed)
        self.append_timings(unit.seed, result.timings)
        # read again just before writing: sweeps of other methods may share this folder
        status = {**self.status(unit.seed), unit.method: {**result.outcome(), **({"key": key} if result.ok else {})}}
        # in the sweep's method order whatever order units finish in (the report lists methods so)
        order = sorted(status, key=lambda m: self.s.methods.index(m) if m in self.s.methods else -1)
        write_json(self.work.folder(unit.seed) / "sweep.json", {m: status[m] for m in order})

    # ---- the sweep -------------------------------------------------------------------------------
    def run(self, executor) -> dict[Unit, dict]:
        """Run every unit that is not done; return each unit's sweep.json entry."""
        self.prepare()
        units = sweep_units(self.s)
        keys = {u: self.unit_key(u) for u in units}
        todo = [u for u in units if not self.is_done(u, keys[u])]
        if len(todo) < len(units):
            self.log(f"[sweep] {len(units) - len(todo)} of {len(units)} units already done: "
                     + ", ".join(str(u) for u in units if u not in todo))
        counts = {"submitted": 0, "done": 0, "failed": 0}
        bar = tqdm(total=len(todo), desc=f"sweep {self.s.behaviour.name}", unit="unit")

        def submitted(n: int) -> None:
            counts["submitted"] += n
            bar.set_postfix(counts)

        def finished(result: UnitResult) -> None:
            self.record(result, keys[result.unit])
            counts["done" if result.ok else "failed"] += 1
            self.log(f"[{result.unit}] " + (f"done in {result.seconds:.0f} s" if result.ok
                                             else f"FAILED: {result.error}"))
            bar.update(1)
            bar.set_postfix(counts)

        try:
            if todo:
                executor.run(self.work, todo, submitted, finished)
        finally:
            bar.close()
        return {u: self.status(u.seed).get(u.method, {}) for u in units}
