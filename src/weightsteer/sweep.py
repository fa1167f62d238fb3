"""The sweep: every steering method for one behaviour, built, calibrated to the same KL and evaluated.

For each method: build it (weight steering: data, adapters, dW; activation steering: fit vectors;
prompting: nothing), calibrate its coefficient for +alpha and -alpha to kl_p95 = target, and score
each benchmark at both calibrated coefficients. The base model and the POS/NEG persona prompts (the
headroom; the POS prompt is also the `prompt` baseline) are scored once per behaviour. Every step
is a resumable stage (stages.py); one failing method is reported and the others go on.

Files, under out/<model>/<behaviour>/:
  ../base/<bench>.rows.jsonl|csv               unsteered (out/<model>/base/, shared with `eval`)
  headroom/<bench>.{pos,neg}.rows.jsonl|csv    POS / NEG persona as system prompt
  <method>/calibration.json                    both signs, with iterations and convergence
  <method>/eval/<bench>.{pos,neg}.rows.jsonl   at the calibrated coefficients (prompt_only: .pos only)
  <method>/eval/<bench>.summary.json           summaries vs base, headroom, SI, coefficients
  sweep.json                                   which methods finished, which failed and why
  timings.jsonl                                seconds per stage
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
from .baselines.activation import ACTIVATION_METHODS, fit_activation_method, load_activation_method
from .behaviours import calibration_questions, get_behaviour
from .calibrate import calibrate_both_signs, load_calibration, save_calibration
from .delta import model_fingerprint
from .errors import WeightsteerError
from .evals import BENCHMARKS, si
from .methods import WeightSteering, prompt_baseline, prompt_only_baseline
from .models import model_label
from .pipeline import DataSettings, behaviour_dir, build_direction
from .results import base_stem, score_rows
from .stages import file_hash, run_stage
from .train import TrainConfig

PROMPT_METHODS = ("prompt", "prompt_only")
ALL_METHODS = WEIGHT_METHODS + ACTIVATION_METHODS + PROMPT_METHODS
SIDES = {"pos": 1, "neg": -1}


@dataclass
class SweepSettings:
    behaviour: str
    methods: tuple[str, ...] = ALL_METHODS
    benchmarks: tuple[str, ...] = ("tinymfv", "sycophancy")
    target_kl: float = 1.0
    tol: float = 0.05
    limit: int | None = None
    data_dirs: dict = field(default_factory=dict)  # benchmark -> local data folder
    n_boot: int = 256
    pos_only: tuple[str, ...] = ()  # benchmarks scored at +C only (to halve the cost of slow ones)
    n_calibration: int | None = None  # calibration prompts (default: all 40 held-out questions)
    data: DataSettings = field(default_factory=DataSettings)
    train: dict = field(default_factory=dict)  # TrainConfig overrides (steps, rank, lr, layer_span)


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


class Sweep:
    def __init__(self, model, tokenizer, settings: SweepSettings, out_root: Path, log=print):
        self.model, self.tokenizer, self.s, self.log = model, tokenizer, settings, log
        self.root = behaviour_dir(out_root, model, settings.behaviour)
        self.out_root = Path(out_root)
        self.behaviour = get_behaviour(settings.behaviour)
        self.pos_persona, self.neg_persona = self.behaviour.persona_prompts(1)[0]
        self.fingerprint = model_fingerprint(model)
        self.items = {name: BENCHMARKS[name].load(settings.data_dirs.get(name), settings.limit)
                      for name in settings.benchmarks}

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

    def scored(self, stem: Path, inputs: dict, bench: str, method, coef: float = 0.0) -> list[dict]:
        """Rows of one benchmark under one method and coefficient, computed once and kept."""
        started = time.time()
        rows, built = score_rows(self.model, self.tokenizer, bench, self.items[bench], method, coef, stem, inputs,
                                 log=self.log)
        if built:
            self.record_time(method.name, f"eval {bench}", time.time() - started)
        return rows

    # ---- shared references -----------------------------------------------------------------------
    def base_rows(self, bench: str) -> list[dict]:
        from .methods import UNSTEERED

        return self.scored(base_stem(self.out_root, model_label(self.model), bench), {}, bench, UNSTEERED)

    def persona_rows(self, bench: str, side: str) -> list[dict]:
        persona = self.pos_persona if side == "pos" else self.neg_persona
        return self.scored(self.root / "headroom" / f"{bench}.{side}", {"persona": persona}, bench,
                           prompt_baseline(persona))

    def headroom(self, bench: str) -> dict:
        module = BENCHMARKS[bench]
        return module.summarise(self.persona_rows(bench, "pos"), base_rows=self.persona_rows(bench, "neg"),
                                n_boot=self.s.n_boot)["shift"]

    # ---- one method ------------------------------------------------------------------------------
    def build(self, name: str):
        """(method object, hash of what defines it)."""
        if name in WEIGHT_METHODS:
            train = TrainConfig(method=name, seed=self.s.data.seed, **self.s.train)
            run, delta = build_direction(self.model, self.tokenizer, self.s.behaviour, name, self.out_root,
                                         self.s.data, train, self.log)
            return WeightSteering(name, delta=delta), file_hash(run / "delta.safetensors")
        if name in ACTIVATION_METHODS:
            path = self.root / name / "vectors.safetensors"
            inputs = {"model": self.fingerprint, "method": name, "n_personas": self.s.data.n_personas}
            run_stage("fit", path, inputs, lambda out: fit_activation_method(
                name, self.model, self.tokenizer, self.behaviour, self.s.data.n_personas).save(out), self.log)
            return load_activation_method(path), file_hash(path)
        if name == "prompt":
            return prompt_baseline(self.pos_persona), self.pos_persona
        return prompt_only_baseline(self.pos_persona), self.pos_persona

    def calibration(self, name: str, method, source: str) -> dict:
        path = self.root / name / "calibration.json"
        inputs = {"source": source, "target": self.s.target_kl, "tol": self.s.tol, "n": self.s.n_calibration}
        prompts = calibration_questions()[: self.s.n_calibration]

        def build(out: Path) -> None:
            save_calibration(out, calibrate_both_signs(self.model, self.tokenizer, method, self.s.target_kl,
                                                       self.s.tol, prompts, self.log))

        run_stage("calibrate", path, inputs, build, self.log)
        return load_calibration(path)

    def run_method(self, name: str) -> None:
        with self.timed(name, "build"):
            method, source = self.build(name)
        cal = {}
        if method.has_coefficient:
            with self.timed(name, "calibrate"):
                cal = self.calibration(name, method, source)
        for bench in self.s.benchmarks:
            module = BENCHMARKS[bench]
            base = self.base_rows(bench)
            sides, rows = {}, {}
            for side in (SIDES if cal and bench not in self.s.pos_only else ("pos",)):
                coef = cal[side].coef if cal else 0.0
                if name == "prompt":  # the POS persona prompt: the same rows as the headroom's
                    rows[side] = self.persona_rows(bench, "pos")
                else:
                    rows[side] = self.scored(self.root / name / "eval" / f"{bench}.{side}", {"source": source},
                                             bench, method, coef)
                fit = {"coef": coef, "kl": cal[side].kl, "converged": cal[side].converged,
                       "iterations": cal[side].iterations} if cal else {"coef": None, "kl": None}
                sides[side] = {**fit, "summary": module.summarise(rows[side], base_rows=base, n_boot=self.s.n_boot)}
            summary = {"method": name, "kind": method_kind(name), "benchmark": bench,
                       "behaviour": self.s.behaviour, "target_kl": self.s.target_kl, "sides": sides,
                       "base": module.summarise(base, n_boot=self.s.n_boot), "headroom": self.headroom(bench)}
            if bench == "airisk" and len(rows) == 2:
                summary["si"] = si.surgical_informedness(rows["neg"], base, rows["pos"], metric="log_ratio",
                                                         mass="p_mass", n_boot=self.s.n_boot)
            write_json(self.root / name / "eval" / f"{bench}.summary.json", summary)

    def run(self) -> dict:
        status_path = self.root / "sweep.json"
        for i, name in enumerate(self.s.methods, 1):
            self.log(f"== [{i}/{len(self.s.methods)}] {self.s.behaviour}: {name}")
            started = time.time()
            try:
                self.run_method(name)
                outcome = {"ok": True, "seconds": round(time.time() - started, 1)}
            except Exception as err:  # one failing method must not stop the others
                detail = str(err) if isinstance(err, WeightsteerError) else traceback.format_exc(limit=3)
                self.log(f"[{name}] FAILED: {type(err).__name__}: {err}")
                outcome = {"ok": False, "error": f"{type(err).__name__}: {err}", "detail": detail}
            # read again just before writing: sweeps of other methods may share this folder
            status = json.loads(status_path.read_text()) if status_path.exists() else {}
            write_json(status_path, {**status, name: outcome})
        return json.loads(status_path.read_text())


def method_kind(name: str) -> str:
    if name in WEIGHT_METHODS:
        return "weight"
    return "activation" if name in ACTIVATION_METHODS else "prompting"

