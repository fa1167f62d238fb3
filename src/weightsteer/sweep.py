"""The sweep's unit of work: one method for one behaviour and one seed, built, calibrated to each
KL dose and evaluated, with the model loaded once.

A unit builds its method (weight steering: adapters and dW on the seed's data; activation steering:
vectors fitted with the seed; prompting: nothing), then, for each dose (target kl_p95), calibrates
its coefficient for +alpha and -alpha and scores each benchmark at both calibrated coefficients.
Prompt baselines have no dose and are scored once. Every step is a resumable stage (stages.py).
What a unit needs but does not make (the seed's data, the unsteered rows, the headroom) is made
once by the driver (sweep_driver.py) before any unit runs; UnitWork.run(unit) is the same function
whichever executor calls it, in this process or on a Ray worker.

Files, under out/<model>/<behaviour>[-seed<s>]/ (seed 0 in the plain folder):
  ../base/<bench>.rows.jsonl|csv                      unsteered (out/<model>/base/, shared with `eval`)
  headroom/<bench>.{pos,neg}.rows.jsonl|csv           POS / NEG persona as system prompt (seed 0 folder)
  <method>/kl-<dose>/calibration.json                 both signs, with iterations and convergence
  <method>/kl-<dose>/eval/<bench>.{pos,neg}.rows.*    at the calibrated coefficients
  <method>/kl-<dose>/eval/<bench>.summary.json        summary vs base, headroom, SI, coefficients
  <method>/kl-<dose>/eval/cost.json                   MMLU and coherence at both coefficients (cost.py)
  <prompt method>/eval/<bench>.*                      prompt baselines: no coefficient, no dose, first seed only
  sweep.json                                          which methods finished, which failed and why
  timings.jsonl                                       seconds per stage
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from .adapters import METHODS as WEIGHT_METHODS
from .atomic import write_json
from .baselines.activation import (
    ACTIVATION_METHODS,
    FORMAT,
    fit_activation_method,
    load_activation_method,
    save_activation_method,
)
from .behaviours import Behaviour
from .cost import Cost, CostSettings, write_cost
from .delta import model_fingerprint
from .doses import calibrate_doses, dose_dir
from .errors import WeightsteerError
from .evals import mmlu, si
from .matmuls import compute_key
from .methods import WeightSteering, prompt_baseline, prompt_only_baseline
from .pipeline import DataSettings, behaviour_dir, build_direction
from .results import References, base_stem, rows_files
from .stages import file_hash, run_stage, stamp_path
from .train import TrainConfig

PROMPT_METHODS = ("prompt", "prompt_only")
ALL_METHODS = WEIGHT_METHODS + ACTIVATION_METHODS + PROMPT_METHODS
SIDES = {"pos": 1, "neg": -1}
# Surgical informedness is reported on each behaviour's own probe; AIRiskDilemmas' truthfulness metric
# is that axis only for these behaviours.
TRUTHFULNESS_BEHAVIOURS = ("honesty",)


@dataclass
class SweepSettings:
    behaviour: Behaviour
    methods: tuple[str, ...] = ALL_METHODS
    benchmarks: tuple = ()  # benchmark objects; the behaviour's probe is added first when it has one
    target_kls: tuple[float, ...] = (1.0,)  # the doses
    tol: float = 0.05
    limit: int | None = None
    data_dirs: dict = field(default_factory=dict)  # benchmark name -> local data folder
    n_boot: int = 256
    pos_only: tuple[str, ...] = ()  # benchmark names scored at +C only (to halve the cost of slow ones)
    n_calibration: int | None = None  # calibration prompts (default: all of the behaviour's)
    data: DataSettings = field(default_factory=DataSettings)  # its seed is replaced by each unit's
    train: dict = field(default_factory=dict)  # TrainConfig overrides (steps, rank, lr, layer_span)
    method_train: dict = field(default_factory=dict)  # method -> TrainConfig overrides for it alone (--ia3-*)
    activation_scale: str = "median_norm"  # "unit" is the reference's (baselines/activation.py)
    preset: str | None = None  # a presets.py name: its settings-vs-seed table is written as preset.json
    cost: CostSettings | None = None  # MMLU + coherence per condition (the CLI's default); None: off
    preset_used: dict = field(default_factory=dict)  # the values this run used for the preset's options
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Unit:
    """One method of the behaviour at one seed: everything from building it to its last summary."""
    method: str
    seed: int = 0

    def __str__(self) -> str:
        return f"{self.method} (seed {self.seed})"


@dataclass
class UnitResult:
    unit: Unit
    ok: bool
    seconds: float
    error: str | None = None
    detail: str | None = None
    timings: list[dict] = field(default_factory=list)  # {"method", "stage", "seconds"} per stage done
    files: dict[str, bytes] | None = None  # outputs relative to out_root when made in another folder (Ray)
    removed: tuple[str, ...] = ()  # files of the unit that its stages deleted there

    def outcome(self) -> dict:
        """The unit's entry in sweep.json."""
        if self.ok:
            return {"ok": True, "seconds": self.seconds}
        return {"ok": False, "error": self.error, "detail": self.detail, "seconds": self.seconds}


def parse_methods(text: str) -> tuple[str, ...]:
    groups = {"all": ALL_METHODS, "weight": WEIGHT_METHODS, "activation": ACTIVATION_METHODS,
              "prompting": PROMPT_METHODS}
    names: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if part not in groups and part not in ALL_METHODS:
            raise WeightsteerError(f"unknown method '{part}': choose from {', '.join(ALL_METHODS)} or "
                                   f"{', '.join(groups)}")
        names += groups.get(part, (part,))
    return tuple(dict.fromkeys(names))


def sweep_benchmarks(behaviour: Behaviour, others) -> list:
    """The behaviour's probe first, then the other benchmarks, without scoring the same rows twice (a
    tiny-mfv axis probe is the tiny-mfv benchmark with an axis added to its summary)."""
    benches = [behaviour.probe] if behaviour.probe is not None else []
    return benches + [b for b in others if b.name not in {p.name for p in benches}]


def sweep_units(settings: SweepSettings) -> list[Unit]:
    """Every (method, seed), seed-major so that a stopped sweep has whole seeds. Prompt baselines have
    nothing that a seed changes (no data, no training, deterministic scoring): they run at the first seed."""
    return [Unit(m, seed) for i, seed in enumerate(settings.seeds) for m in settings.methods
            if i == 0 or m not in PROMPT_METHODS]


def method_kind(name: str) -> str:
    if name in WEIGHT_METHODS:
        return "weight"
    return "activation" if name in ACTIVATION_METHODS else "prompting"


class UnitWork:
    """What a process needs to run units: the model (loaded once), the benchmarks with their items and
    the reference rows, rooted at out_root (the run folder, or a Ray worker's scratch copy of it)."""

    def __init__(self, model, tokenizer, settings: SweepSettings, items: dict[str, list[dict]], out_root: Path,
                 log=print):
        self.model, self.tokenizer, self.s, self.log = model, tokenizer, settings, log
        self.behaviour = settings.behaviour
        self.out_root = Path(out_root)
        self.fingerprint = model_fingerprint(model)
        self.timings: list[dict] = []
        self.refs = References(model, tokenizer, out_root, self.behaviour, n_boot=settings.n_boot, log=log,
                               on_scored=lambda method, bench, seconds: self.timings.append(
                                   {"method": method, "stage": f"eval {bench}", "seconds": round(seconds, 2)}))
        self.benches = sweep_benchmarks(self.behaviour, settings.benchmarks)
        self.items = items
        # MMLU and coherence of every condition; their unsteered rows are shared work (in the seed 0 folder)
        self.cost = None if settings.cost is None else Cost(
            model, tokenizer, self.refs, self.behaviour, self.folder(0), settings.cost, log,
            on_timed=lambda method, stage, seconds: self.timings.append(
                {"method": method, "stage": stage, "seconds": round(seconds, 2)}))

    def folder(self, seed: int) -> Path:
        return behaviour_dir(self.out_root, self.model, self.behaviour, seed)

    def data_settings(self, seed: int) -> DataSettings:
        return replace(self.s.data, seed=seed)

    def stage_time(self, unit: Unit, stage: str, started: float) -> None:
        self.timings.append({"method": unit.method, "stage": stage, "seconds": round(time.time() - started, 2)})

    # ---- one unit ------------------------------------------------------------------------------
    def build(self, unit: Unit):
        """(method object, hash of what defines it)."""
        name = unit.method
        if name in WEIGHT_METHODS:
            train = TrainConfig(method=name, seed=unit.seed, **{**self.s.train, **self.s.method_train.get(name, {})})
            run, delta = build_direction(self.model, self.tokenizer, self.behaviour, name, self.out_root,
                                         self.data_settings(unit.seed), train, self.log)
            return WeightSteering(name, delta=delta), file_hash(run / "delta.safetensors")
        if name in ACTIVATION_METHODS:
            path = self.folder(unit.seed) / name / "vectors.safetensors"
            inputs = {"model": self.fingerprint, **compute_key(self.model), "method": name,
                      "n_personas": self.s.data.n_personas,
                      "behaviour": self.behaviour.generation_key(), "format": FORMAT,
                      "scale": self.s.activation_scale, "seed": unit.seed}
            run_stage("fit", path, inputs, lambda out: save_activation_method(fit_activation_method(
                name, self.model, self.tokenizer, self.behaviour, self.s.data.n_personas,
                scale=self.s.activation_scale, seed=unit.seed), out), self.log)
            return load_activation_method(path), file_hash(path)
        if self.behaviour.personas is None:
            raise WeightsteerError(f"the '{name}' baseline needs persona pairs, and '{self.behaviour.name}' has none")
        pos_persona = self.behaviour.personas[0]
        method = prompt_baseline(pos_persona) if name == "prompt" else prompt_only_baseline(pos_persona)
        return method, pos_persona

    def evaluate(self, name: str, method, source: str, folder: Path, cal: dict, target_kl: float | None) -> None:
        """Score every benchmark at both calibrated coefficients (or once, without a coefficient)."""
        for bench in self.benches:
            items = self.items[bench.name]
            base = self.refs.base_rows(bench, items)
            headroom = self.refs.headroom(bench, items)
            sides, rows = {}, {}
            for side in (SIDES if cal and bench.name not in self.s.pos_only else ("pos",)):
                coef = cal[side].coef if cal else 0.0
                if name == "prompt":  # the POS persona prompt: the same rows as the headroom's
                    rows[side] = self.refs.persona_rows(bench, items, "pos")
                else:
                    rows[side] = self.refs.scored(bench, items, method, coef, folder / "eval" / f"{bench.name}.{side}",
                                                  {"source": source})
                fit = {"coef": coef, "kl": cal[side].kl, "converged": cal[side].converged,
                       "iterations": cal[side].iterations} if cal else {"coef": None, "kl": None}
                summary = bench.summarise(rows[side], base_rows=base, n_boot=self.s.n_boot)
                sides[side] = {**fit, "summary": summary, "stat": bench.stat(summary),
                               "shift": bench.stat(summary, shift=True)}
            base_summary = bench.summarise(base, n_boot=self.s.n_boot)
            summary = {"method": name, "kind": method_kind(name), "benchmark": bench.name,
                       "probe": bench is self.behaviour.probe, "behaviour": self.behaviour.name,
                       "target_kl": target_kl, "sides": sides, "base": base_summary,
                       "base_stat": bench.stat(base_summary), "headroom": headroom,
                       "headroom_stat": bench.stat(headroom, shift=True) if headroom else None}
            if len(rows) == 2 and bench is self.behaviour.probe and hasattr(bench, "si"):
                summary["si"] = bench.si(rows["neg"], base, rows["pos"], n_boot=self.s.n_boot)  # the behaviour's axis
            elif bench.name == "airisk" and len(rows) == 2 and self.behaviour.name in TRUTHFULNESS_BEHAVIOURS:
                summary["si"] = si.surgical_informedness(rows["neg"], base, rows["pos"], metric="log_ratio",
                                                         mass="p_mass", n_boot=self.s.n_boot)
            write_json(folder / "eval" / f"{bench.name}.summary.json", summary)
        if self.cost is not None:  # what this condition costs: MMLU and coherence, in eval/cost.json
            write_cost(self.cost, folder, {"method": name, "kind": method_kind(name), "behaviour": self.behaviour.name,
                                           "target_kl": target_kl}, method, source, cal, self.s.n_boot)

    def shared_inputs(self, seed: int) -> list[Path]:
        """The files of the driver's shared work that the units of one seed read (existing ones)."""
        stems = [base_stem(self.out_root, self.model, b) for b in self.benches]
        stems += [self.folder(0) / "headroom" / f"{b.name}.{side}" for b in self.benches for side in ("pos", "neg")]
        if self.cost is not None and self.cost.items is not None:
            stems.append(base_stem(self.out_root, self.model, mmlu))
        paths = [p for stem in stems for p in rows_files(stem)]
        if self.cost is not None:
            coherence = self.folder(0) / "base" / "coherence.rows.jsonl"
            paths += [coherence, stamp_path(coherence)]
        data = self.folder(seed) / "data.jsonl"
        return [p for p in [*paths, data, stamp_path(data)] if p.exists()]

    def summary_paths(self, unit: Unit) -> list[Path]:
        """The last files a finished unit has written: one summary per benchmark (and dose)."""
        folder = self.folder(unit.seed) / unit.method
        folders = [folder] if unit.method in PROMPT_METHODS else [dose_dir(folder, t) for t in self.s.target_kls]
        return [f / "eval" / f"{b.name}.summary.json" for f in folders for b in self.benches]

    def run_method(self, unit: Unit) -> None:
        started = time.time()
        method, source = self.build(unit)
        self.stage_time(unit, "build", started)
        root = self.folder(unit.seed) / unit.method
        if not method.has_coefficient:
            self.evaluate(unit.method, method, source, root, {}, None)
            return
        started = time.time()
        for target_kl, cal in calibrate_doses(self.model, self.tokenizer, method, source,
                                              self.behaviour.calibration[: self.s.n_calibration], root,
                                              self.s.target_kls, self.s.tol, self.log):
            self.stage_time(unit, f"calibrate kl={target_kl:g}", started)
            self.evaluate(unit.method, method, source, dose_dir(root, target_kl), cal, target_kl)
            started = time.time()

    def run(self, unit: Unit) -> UnitResult:
        """Run one unit; a failure is caught and returned, so one failing unit does not stop the others."""
        self.timings = []
        started = time.time()
        try:
            self.run_method(unit)
            return UnitResult(unit, True, round(time.time() - started, 1), timings=self.timings)
        except Exception as err:  # one failing unit must not stop the others
            detail = str(err) if isinstance(err, WeightsteerError) else traceback.format_exc(limit=3)
            self.log(f"[{unit}] FAILED: {type(err).__name__}: {err}")
            return UnitResult(unit, False, round(time.time() - started, 1), f"{type(err).__name__}: {err}", detail,
                              timings=self.timings)
