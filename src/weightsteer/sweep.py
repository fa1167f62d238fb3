"""The sweep: every steering method for one behaviour, built, calibrated to each KL dose and evaluated.

For each method: build it (weight steering: data, adapters, dW; activation steering: fit vectors;
prompting: nothing); then, for each dose (target kl_p95), calibrate its coefficient for +alpha and
-alpha and score each benchmark at both calibrated coefficients. Prompt baselines have no dose and
are scored once. The base model and the POS/NEG persona prompts (the headroom; the POS prompt is
also the `prompt` baseline) are scored once per behaviour (results.References). Every step is a
resumable stage (stages.py); one failing method is reported and the others go on.

Files, under out/<model>/<behaviour>/:
  ../base/<bench>.rows.jsonl|csv                      unsteered (out/<model>/base/, shared with `eval`)
  headroom/<bench>.{pos,neg}.rows.jsonl|csv           POS / NEG persona as system prompt
  <method>/kl-<dose>/calibration.json                 both signs, with iterations and convergence
  <method>/kl-<dose>/eval/<bench>.{pos,neg}.rows.*    at the calibrated coefficients
  <method>/kl-<dose>/eval/<bench>.summary.json        summary vs base, headroom, SI, coefficients
  <method>/kl-<dose>/eval/cost.json                   MMLU and coherence at both coefficients (cost.py)
  <prompt method>/eval/<bench>.*                      prompt baselines: no coefficient, no dose
  sweep.json                                          which methods finished, which failed and why
  timings.jsonl                                       seconds per stage
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .adapters import METHODS as WEIGHT_METHODS
from .atomic import read_jsonl, write_json, write_jsonl
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
from .doses import calibrate_dose, dose_dir
from .errors import WeightsteerError
from .evals import si
from .methods import WeightSteering, prompt_baseline, prompt_only_baseline
from .pipeline import DataSettings, behaviour_dir, build_direction
from .results import References
from .stages import file_hash, run_stage
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
    data: DataSettings = field(default_factory=DataSettings)
    train: dict = field(default_factory=dict)  # TrainConfig overrides (steps, rank, lr, layer_span)
    method_train: dict = field(default_factory=dict)  # method -> TrainConfig overrides for it alone (--ia3-*)
    activation_scale: str = "median_norm"  # "unit" is the reference's (baselines/activation.py)
    preset: str | None = None  # a presets.py name: its settings-vs-seed table is written as preset.json
    cost: CostSettings | None = None  # MMLU + coherence per condition (the CLI's default); None: off
    preset_used: dict = field(default_factory=dict)  # the values this run used for the preset's options


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


class Sweep:
    def __init__(self, model, tokenizer, settings: SweepSettings, out_root: Path, log=print):
        self.model, self.tokenizer, self.s, self.log = model, tokenizer, settings, log
        self.behaviour = settings.behaviour
        self.root = behaviour_dir(out_root, model, self.behaviour)
        self.out_root = Path(out_root)
        self.fingerprint = model_fingerprint(model)
        self.refs = References(model, tokenizer, out_root, self.behaviour, n_boot=settings.n_boot, log=log,
                               on_scored=lambda method, bench, seconds: self.record_time(method, f"eval {bench}",
                                                                                         seconds))
        self.benches = sweep_benchmarks(self.behaviour, settings.benchmarks)
        self.items = {b.name: b.load(settings.data_dirs.get(b.name), settings.limit) for b in self.benches}
        self.cost = None if settings.cost is None else Cost(model, tokenizer, self.refs, self.behaviour, self.root,
                                                             settings.cost, log, on_timed=self.record_time)

    # ---- bookkeeping ---------------------------------------------------------------------------
    def record_time(self, method: str, stage: str, seconds: float) -> None:
        """Append a stage's wall time to timings.jsonl (the report's timing table), atomically."""
        path = self.root / "timings.jsonl"
        rows = read_jsonl(path) if path.exists() else []
        write_jsonl(path, rows + [{"method": method, "stage": stage, "seconds": round(seconds, 2)}])

    @contextlib.contextmanager
    def timed(self, method: str, stage: str):
        started = time.time()
        yield
        self.record_time(method, stage, time.time() - started)

    # ---- one method ------------------------------------------------------------------------------
    def build(self, name: str):
        """(method object, hash of what defines it)."""
        if name in WEIGHT_METHODS:
            train = TrainConfig(method=name, seed=self.s.data.seed,
                                **{**self.s.train, **self.s.method_train.get(name, {})})
            run, delta = build_direction(self.model, self.tokenizer, self.behaviour, name, self.out_root,
                                         self.s.data, train, self.log)
            return WeightSteering(name, delta=delta), file_hash(run / "delta.safetensors")
        if name in ACTIVATION_METHODS:
            path = self.root / name / "vectors.safetensors"
            inputs = {"model": self.fingerprint, "method": name, "n_personas": self.s.data.n_personas,
                      "behaviour": self.behaviour.generation_key(), "format": FORMAT,
                      "scale": self.s.activation_scale}
            run_stage("fit", path, inputs, lambda out: save_activation_method(fit_activation_method(
                name, self.model, self.tokenizer, self.behaviour, self.s.data.n_personas,
                scale=self.s.activation_scale), out), self.log)
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

    def run_method(self, name: str) -> None:
        with self.timed(name, "build"):
            method, source = self.build(name)
        if not method.has_coefficient:
            self.evaluate(name, method, source, self.root / name, {}, None)
            return
        for target_kl in self.s.target_kls:
            folder = dose_dir(self.root / name, target_kl)
            with self.timed(name, f"calibrate kl={target_kl:g}"):
                cal = calibrate_dose(self.model, self.tokenizer, method, source,
                                     self.behaviour.calibration[: self.s.n_calibration], self.root / name,
                                     target_kl, self.s.tol, self.log)
            self.evaluate(name, method, source, folder, cal, target_kl)

    def run(self) -> dict:
        status_path = self.root / "sweep.json"
        if self.s.preset:
            from .presets import table

            write_json(self.root / "preset.json", {"preset": self.s.preset,
                                                   "settings": table(self.s.preset, self.s.preset_used)})
        for i, name in enumerate(self.s.methods, 1):
            self.log(f"== [{i}/{len(self.s.methods)}] {self.behaviour.name}: {name}")
            started = time.time()
            try:
                self.run_method(name)
                outcome = {"ok": True, "seconds": round(time.time() - started, 1)}
            except Exception as err:  # one failing method must not stop the others
                detail = str(err) if isinstance(err, WeightsteerError) else traceback.format_exc(limit=3)
                self.log(f"[{name}] FAILED: {type(err).__name__}: {err}")
                outcome = {"ok": False, "error": f"{type(err).__name__}: {err}", "detail": detail}
            # read again just before writing: sweeps of other methods may share this folder
            write_json(status_path, {**self.read_status(status_path), name: outcome})
        return self.read_status(status_path)

    def read_status(self, path: Path) -> dict:
        """sweep.json, or {} when it is missing or damaged (it is rewritten method by method)."""
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


def method_kind(name: str) -> str:
    if name in WEIGHT_METHODS:
        return "weight"
    return "activation" if name in ACTIVATION_METHODS else "prompting"
