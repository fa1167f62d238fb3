"""What a steered condition costs: capability (MMLU) and coherence of its text, beside every shift.

`sweep` measures both at every (method, dose, sign) and for the prompt baselines, and `run` at every
alpha of its table. MMLU is scored on a seeded, subject-stratified subset (evals/mmlu.py; --mmlu-n,
"all" for the full 14,042 questions) and summarised against the unsteered model's rows on the same
questions (results.References, shared with `eval`). Coherence is measured on greedy continuations
of N_COHERENCE of the behaviour's calibration prompts, evenly spaced over the list so every
question category is seen (coherence.py), against the unsteered model's own continuations.

Files, beside the benchmark results of each condition (folder = <method>/kl-<dose>/ or <method>/):
  <folder>/eval/mmlu.{pos,neg}.rows.jsonl|csv          per question, stage-cached like any benchmark
  <folder>/eval/coherence.{pos,neg}.rows.jsonl         per prompt: continuation and signals
  <folder>/eval/cost.json                              both summaries per side, vs base (report.py reads it)
  <behaviour>/base/coherence.rows.jsonl                the unsteered continuations
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import coherence
from .atomic import read_jsonl, write_json, write_jsonl
from .delta import model_fingerprint
from .errors import WeightsteerError
from .evals import mmlu
from .matmuls import compute_key
from .methods import UNSTEERED
from .stages import is_fresh, run_stage

N_COHERENCE = coherence.N_PROMPTS


@dataclass(frozen=True)
class CostSettings:
    mmlu_n: int | None = mmlu.DEFAULT_SUBSET  # None: the full test split
    mmlu_dir: str | None = None  # local copy of MMLU (default: the hub)
    n_coherence: int = N_COHERENCE
    max_new_tokens: int = coherence.MAX_NEW_TOKENS
    mmlu_missing: str | None = None  # why MMLU is not measured: coherence only (`run` without MMLU's data)


def parse_mmlu_n(text: str) -> int | None:
    """--mmlu-n: a number of questions, or "all"."""
    if str(text).strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise WeightsteerError(f"--mmlu-n must be a number of questions or 'all', got {text!r}") from None
    if n < 1:
        raise WeightsteerError(f"--mmlu-n must be at least 1 (or 'all'), got {n}")
    return n


def spread(questions, n: int) -> list[str]:
    """n questions evenly spaced over the list (all of them when there are at most n)."""
    questions = list(questions)
    if len(questions) <= n:
        return questions
    return [questions[i * len(questions) // n] for i in range(n)]


class Cost:
    """Scores MMLU and coherence for one model and behaviour; every result is a resumable stage."""

    def __init__(self, model, tokenizer, refs, behaviour, root: Path, settings: CostSettings = CostSettings(),
                 log=print, on_timed=None):
        self.model, self.tokenizer, self.refs, self.s, self.log = model, tokenizer, refs, settings, log
        self.root = Path(root)  # out/<model>/<behaviour>
        self.on_timed = on_timed  # (method name, stage, seconds) of coherence work actually done; MMLU
        # scoring goes through refs, whose own callback times it as "eval mmlu"
        self.items = mmlu.load(settings.mmlu_dir, settings.mmlu_n) if settings.mmlu_missing is None else None
        self.questions = spread(behaviour.calibration, settings.n_coherence)
        if self.items is not None:
            mmlu.check(tokenizer)

    # ---- rows ------------------------------------------------------------------------------------
    def mmlu_rows(self, method, coef: float, stem: Path | None, inputs: dict | None = None) -> list[dict] | None:
        """MMLU rows under method at coef (the unsteered rows for stem None); None without MMLU."""
        if self.items is None:
            return None
        if stem is None:
            return self.refs.base_rows(mmlu, self.items)
        return self.refs.scored(mmlu, self.items, method, coef, stem, inputs)

    def coherence_rows(self, method, coef: float, path: Path, inputs: dict | None = None) -> list[dict]:
        key = {**(inputs or {}), "model": model_fingerprint(self.model), **compute_key(self.model), "coef": coef,
               "questions": self.questions, "system": method.system, "user_prefix": method.user_prefix,
               "max_new_tokens": self.s.max_new_tokens,
               # what the kept signals depend on; thresholds are applied when summarising (coherence.judge)
               "signals": {"ngram": coherence.NGRAM, "max_period": coherence.MAX_PERIOD}}
        if is_fresh(path, key):
            return read_jsonl(path)
        started = time.time()

        def build(out: Path) -> None:
            self.log(f"[coherence] {method.name} coef={coef:+.4g}")
            write_jsonl(out, coherence.score(self.model, self.tokenizer, self.questions, method, coef,
                                             max_new_tokens=self.s.max_new_tokens))

        if run_stage("coherence", path, key, build, self.log) and self.on_timed:
            self.on_timed(method.name, "coherence", time.time() - started)
        return read_jsonl(path)

    def base(self) -> dict:
        """The unsteered rows: {"mmlu": rows, "coherence": rows}."""
        return {"mmlu": self.mmlu_rows(UNSTEERED, 0.0, None),
                "coherence": self.coherence_rows(UNSTEERED, 0.0, self.root / "base" / "coherence.rows.jsonl")}

    # ---- one condition -----------------------------------------------------------------------------
    def measure(self, method, coef: float, stem: Path, inputs: dict | None = None, n_boot: int = 256) -> dict:
        """{"mmlu": summary vs base, "coherence": summary vs base} of method at coef; rows kept at
        stem's folder as mmlu.<label> and coherence.<label> (stem = <folder>/<label>)."""
        base = self.base()
        rows = self.mmlu_rows(method, coef, stem.with_name(f"mmlu.{stem.name}"), inputs)  # timed by refs
        coherent = self.coherence_rows(method, coef, stem.with_name(f"coherence.{stem.name}.rows.jsonl"), inputs)
        return {"mmlu": None if rows is None else mmlu.summarise(rows, base_rows=base["mmlu"], n_boot=n_boot),
                "coherence": coherence.summarise(coherent, base_rows=base["coherence"], n_boot=n_boot)}

    def base_summary(self, n_boot: int = 256) -> dict:
        base = self.base()
        return {"mmlu": None if base["mmlu"] is None else mmlu.summarise(base["mmlu"], n_boot=n_boot),
                "coherence": coherence.summarise(base["coherence"], n_boot=n_boot)}


def cost_numbers(measured: dict) -> dict:
    """The few numbers tables show: MMLU accuracy, its paired drop vs base, the normalised log P
    shift, and the coherence flag."""
    m, c = measured["mmlu"] or {}, measured["coherence"]
    return {"mmlu_acc": m.get("correct"), "mmlu_shift": mmlu.stat(m, shift=True) if "shift" in m else None,
            "mmlu_logp_shift": m["shift"]["logp_correct"] if "shift" in m else None,
            "coherence": {k: c[k] for k in ("n", "n_degenerate", "flagged")},
            "loglik_base": c["loglik_base"]}


def write_cost(cost: Cost, folder: Path, summary_head: dict, method, source: str, cal: dict, n_boot: int) -> dict:
    """Measure a sweep condition at each calibrated side (or once, for a method without a coefficient)
    and write <folder>/eval/cost.json. summary_head: method, kind, behaviour, target_kl."""
    sides = {}
    for side in (("pos", "neg") if cal else ("pos",)):
        coef = cal[side].coef if cal else 0.0
        measured = cost.measure(method, coef, Path(folder) / "eval" / side, {"source": source}, n_boot)
        sides[side] = {"coef": coef if cal else None, "kl": cal[side].kl if cal else None, **measured,
                       "numbers": cost_numbers(measured)}
    summary = {**summary_head, "sides": sides, "base": cost.base_summary(n_boot)}
    write_json(Path(folder) / "eval" / "cost.json", summary)
    return summary
