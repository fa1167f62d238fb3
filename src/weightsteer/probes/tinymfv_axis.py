"""`tinymfv`: a moral-foundations axis on the tiny-mfv vignettes (evals/tinymfv.py).

The axis is a weighting of the foundations' logit(wrongness): trad_care is {Sanctity = 1, Care = -1}
(more POS = Sanctity violations judged more wrong relative to Care violations). The rows are the
tiny-mfv benchmark's own, so the probe shares them (and their cache) with `--evals tinymfv`; only
the summary adds the axis, on the absolute values and on the paired shifts. The data come from the
hub or the local copy passed as --tinymfv-dir.
"""

from __future__ import annotations

from ..errors import WeightsteerError
from ..evals import tinymfv
from .base import Probe


def axis_problem(axis) -> str | None:
    """What is wrong with an axis table, or None."""
    if (not isinstance(axis, dict) or not axis
            or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in axis.values())):
        return "must be a table of foundation weights, e.g. {Sanctity = 1, Care = -1}"
    unknown = [name for name in axis if name not in tinymfv.FOUNDATIONS]
    if unknown:
        return f"unknown foundation '{unknown[0]}': use {', '.join(tinymfv.FOUNDATIONS)}"
    return None


class TinyMfvProbe(Probe):
    kind = "tinymfv"
    HEADLINE_KEY = tinymfv.HEADLINE_KEY
    mass_key = "bool_mass"

    def __init__(self, axis: dict[str, float], max_think: int = 0):
        problem = axis_problem(axis)
        if problem:
            raise WeightsteerError(f"tinymfv probe: axis {problem}")
        super().__init__([])
        self.name = tinymfv.name  # the tiny-mfv benchmark's rows, whatever the behaviour
        self.axis = {name: float(w) for name, w in axis.items()}
        self.behaviour = "axis"
        self.max_think = max_think  # > 0: a guided thought of up to this many tokens (evals/tinymfv.py)

    def thinking(self, max_think: int) -> TinyMfvProbe:
        """The same axis scored with a guided thought of up to max_think tokens (0: single pass)."""
        probe = TinyMfvProbe(self.axis, max_think)
        probe.attach(self.behaviour)
        return probe

    def attach(self, behaviour: str) -> None:
        self.behaviour = behaviour  # the axis is reported under the behaviour's name

    @classmethod
    def from_fields(cls, f) -> TinyMfvProbe:
        problem = axis_problem(f.raw("axis"))
        if problem:
            raise f.fail("axis", problem)
        return cls(f.raw("axis"))

    def describe(self) -> str:
        terms = " ".join(f"{w:+g} {name}" for name, w in self.axis.items())
        thought = f", guided thought of up to {self.max_think} tokens" if self.max_think else ""
        return f"tinymfv axis {terms} (tiny-mfv vignettes{thought})"

    def load(self, data_dir=None, limit: int | None = None) -> list[dict]:
        return tinymfv.load(data_dir, limit)

    def rows_key(self) -> dict:
        return tinymfv.rows_key(self.max_think)  # the tiny-mfv benchmark's rows exactly

    def score(self, model, tokenizer, items, **kwargs) -> list[dict]:
        return tinymfv.score(model, tokenizer, items, max_think=self.max_think, **kwargs)

    def summarise(self, rows, base_rows=None, n_boot: int = 256, seed: int = 0) -> dict:
        return tinymfv.summarise(rows, base_rows, n_boot, seed, axes={self.behaviour: self.axis})

    def si(self, minus_rows: list[dict], base_rows: list[dict], plus_rows: list[dict], n_boot: int = 256) -> dict:
        return tinymfv.axis_si(minus_rows, base_rows, plus_rows, self.axis, n_boot=n_boot)

    def stat(self, summary: dict, *, shift: bool = False) -> dict:
        return (summary["shift"] if shift else summary)["axes"][self.behaviour]
