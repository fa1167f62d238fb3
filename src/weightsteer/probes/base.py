"""What every probe kind shares: items defined in the behaviour file, a stratified --limit, the headline.

A probe is a benchmark object (see evals/__init__.py): load / score / summarise / stat, plus
`check(tokenizer)`, which refuses a probe that cannot work with a model's tokenizer before any work
is done, and `rows_key()`, what besides the items defines its rows (the cache key in results.py).
Every kind's headline is a log-ratio where higher means more POS, and every row carries a mass: how
much probability the scored tokens get at all, so a probe the model does not answer is visible.
"""

from __future__ import annotations

from ..evals.sampling import stratified_sample
from ..evals.si import surgical_informedness
from ..evals.stats import summarise_by_id

HEADLINE_KEY = "log_ratio"


class Probe:
    kind = ""
    HEADLINE_KEY = HEADLINE_KEY
    mass_key = ""
    summary_keys: tuple[str, ...] = ()

    def __init__(self, items: list[dict]):
        self.name: str | None = None  # the behaviour's name, set when a Behaviour takes the probe
        self.items = items

    def attach(self, behaviour: str) -> None:
        """Called by the Behaviour that owns the probe: results files are named after it."""
        self.name = behaviour

    # ---- items ---------------------------------------------------------------------------------
    def group_of(self, item: dict) -> str:
        """The stratum of an item for --limit subsets (kinds with balanced item sets override it)."""
        return ""

    def load(self, data_dir=None, limit: int | None = None) -> list[dict]:
        """The probe's items (a seeded, stratified subset of `limit` of them); data_dir is not used."""
        return stratified_sample(self.items, self.group_of, limit)

    def rows_key(self) -> dict:
        """What, besides the items, decides the rows: the kind's settings."""
        return {"kind": self.kind}

    def check(self, tokenizer) -> None:
        """Refuse, with one line, a probe this tokenizer cannot score."""

    # ---- numbers -------------------------------------------------------------------------------
    def summarise(self, rows: list[dict], base_rows: list[dict] | None = None, n_boot: int = 256,
                  seed: int = 0) -> dict:
        keys = [k for k in self.summary_keys if all(k in r for r in rows + list(base_rows or []))]
        return summarise_by_id(rows, keys, base_rows, n_boot=n_boot, seed=seed)

    def stat(self, summary: dict, *, shift: bool = False) -> dict:
        """{"mean", "lo", "hi"} of the headline (or of its paired shift vs base)."""
        return (summary["shift"] if shift else summary)[self.HEADLINE_KEY]

    def si(self, minus_rows: list[dict], base_rows: list[dict], plus_rows: list[dict], n_boot: int = 256) -> dict:
        """Bidirectional surgical informedness on the probe's own axis (evals/si.py): a row is on the
        POS side when its log-ratio is positive; the mass is the probe's."""
        return surgical_informedness(minus_rows, base_rows, plus_rows, metric=self.HEADLINE_KEY, mass=self.mass_key,
                                     n_boot=n_boot)

    def describe(self) -> str:
        return f"{self.kind}, {len(self.items)} items"
