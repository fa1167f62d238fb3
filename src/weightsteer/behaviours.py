"""Behaviours are data: a TOML file says what to steer, and the loaded object is what flows through
data generation, training, calibration, the probes, sweeps and reports.

A behaviour has persona pairs (POS, NEG) and a template that turns a persona into a system prompt;
alpha > 0 steers toward POS. Its questions feed data generation (or its own contrastive data file
replaces generation), a disjoint set of calibration prompts feeds iso-KL calibration (so alpha is
never fitted on text the adapters saw), showcase questions get greedy answers in `weightsteer run`,
and its probe measures it. The five built-ins are files in data/behaviours/, read by the same code
as a user's; docs/behaviours.md documents every key.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

from .errors import WeightsteerError
from .fields import Fields
from .probes import Probe, probe_from_fields

CALIBRATION_PER_CATEGORY = 4  # the last 4 questions of each pool category are held out for calibration
N_SHOWCASE_DEFAULT = 3
NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _pool_train() -> tuple[str, ...]:
    return question_pool()[0]


def _pool_calibration() -> tuple[str, ...]:
    return question_pool()[1]


@dataclass(frozen=True)
class Behaviour:
    """What to steer. Built by load_behaviour from a file, or in Python from arguments:

        ws.Behaviour("tea", "tea drinker", "coffee drinker", pairs=[("someone who loves tea", "someone who
                     loves coffee")], probe=NextWordProbe(prompts, [" tea"], [" coffee"], prefill="I'd have"))
    """

    name: str
    pos_label: str
    neg_label: str
    pairs: tuple[tuple[str, str], ...] = ()
    template: str = "Pretend you're {persona}."
    description: str = ""
    questions: tuple[str, ...] = field(default_factory=_pool_train)  # data generation, activation fits
    calibration: tuple[str, ...] = field(default_factory=_pool_calibration)  # held-out iso-KL prompts
    showcase: tuple[str, ...] = ()  # greedy answers in `weightsteer run`; default: 3 calibration prompts
    probe: Probe | None = field(default=None, compare=False)
    data: str | None = None  # contrastive data that replaces generation: a JSONL file or a hub dataset id
    data_split: str | None = None  # the split of a hub dataset
    source: str = "python"

    def __post_init__(self):
        template = template_problem(self.template)
        problem = name_problem(self.name) or (template and f"template {template}") or pairs_problem(self.pairs)
        if problem:
            raise WeightsteerError(f"behaviour '{self.name}': {problem}")
        if not self.pairs and self.data is None:
            raise WeightsteerError(f"behaviour '{self.name}' needs persona pairs or contrastive data")
        for key in ("questions", "calibration", "showcase"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        object.__setattr__(self, "pairs", tuple((pos, neg) for pos, neg in self.pairs))
        if not self.showcase:
            object.__setattr__(self, "showcase", self.calibration[:N_SHOWCASE_DEFAULT])
        if self.probe is not None:
            self.probe.attach(self.name)

    def persona_prompts(self, n_personas: int = 1) -> list[tuple[str, str]]:
        """The first n persona pairs as (POS system prompt, NEG system prompt)."""
        if not self.pairs:
            raise WeightsteerError(f"behaviour '{self.name}' has no persona pairs: add `pairs` to {self.source}")
        if not 1 <= n_personas <= len(self.pairs):
            raise WeightsteerError(f"--n-personas must be between 1 and {len(self.pairs)} for "
                                   f"'{self.name}', got {n_personas}")
        return [(self.template.format(persona=p), self.template.format(persona=n))
                for p, n in self.pairs[:n_personas]]

    @property
    def personas(self) -> tuple[str, str] | None:
        """The first pair's (POS, NEG) system prompts: the headroom and the prompt baselines use them."""
        return self.persona_prompts(1)[0] if self.pairs else None

    def generation_key(self) -> dict:
        """What decides generated data: a changed persona or question regenerates it."""
        return {"template": self.template, "pairs": self.pairs, "questions": self.questions}

    def with_data(self, data: str, split: str | None = None) -> Behaviour:
        return replace(self, data=str(data), data_split=split)

    def with_probe(self, probe: Probe | None) -> Behaviour:
        return replace(self, probe=probe)


def name_problem(name) -> str | None:
    if not isinstance(name, str) or not NAME.match(name):
        return f"{name!r} may hold only letters, digits, _ and - (it names the run folder)"
    return None


def template_problem(template) -> str | None:
    try:
        ok = isinstance(template, str) and "{persona}" in template and template.format(persona="x") is not None
    except (KeyError, IndexError, ValueError):
        ok = False
    if not ok:
        return (f"{template!r} must contain {{persona}} and no other {{...}} field "
                "(write literal braces as {{ and }})")
    return None


def pairs_problem(pairs) -> str | None:
    if isinstance(pairs, list | tuple) and all(
            isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(t, str) and t.strip() for t in p)
            for p in pairs):
        return None
    return 'pairs must be a list of [POS, NEG] persona pairs of non-empty strings, e.g. [["a tea lover", "a coffee lover"]]'


# ---- the question pool ----------------------------------------------------------------------------

@cache
def _pool_file() -> dict:
    return json.loads(resources.files("weightsteer").joinpath("data", "questions.json").read_text())


@cache
def question_pool() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training questions, calibration questions): 240 general user messages in 10 categories we
    wrote; the last 4 of each category are held out for calibration. Disjoint, in a fixed order."""
    train, calib = [], []
    for questions in _pool_file()["categories"].values():
        train += questions[:-CALIBRATION_PER_CATEGORY]
        calib += questions[-CALIBRATION_PER_CATEGORY:]
    return tuple(train), tuple(calib)


def calibration_questions() -> tuple[str, ...]:
    """The pool's held-out questions: the default calibration prompts of every behaviour."""
    return question_pool()[1]


# ---- loading --------------------------------------------------------------------------------------

def builtin_dir() -> Path:
    return Path(str(resources.files("weightsteer").joinpath("data", "behaviours")))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def load_behaviour(spec: str | Path) -> Behaviour:
    """A built-in behaviour by name, or a behaviour file by path."""
    spec = str(spec)
    if spec in builtin_names():
        return _builtin(spec)
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        return read_behaviour_file(path)
    raise WeightsteerError(f"unknown behaviour '{spec}': choose one of {', '.join(builtin_names())}, or pass "
                           "the path of a behaviour file (weightsteer behaviours new NAME writes one)")


@cache
def _builtin(name: str) -> Behaviour:
    return read_behaviour_file(builtin_dir() / f"{name}.toml", source="built-in")


def read_behaviour_file(path: Path, *, source: str | None = None) -> Behaviour:
    path = Path(path)
    if not path.is_file():
        raise WeightsteerError(f"behaviour file '{path}' does not exist: check the path "
                               "(weightsteer behaviours new NAME writes a starter file)")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise WeightsteerError(f"cannot read behaviour file '{path}' ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise WeightsteerError(f"{path} is not valid TOML ({err}): fix the syntax") from None
    return _from_fields(Fields(table, path), source or str(path))


def _from_fields(f: Fields, source: str) -> Behaviour:
    name = f.text("name")
    if problem := name_problem(name):
        raise f.fail("name", problem)
    data = f.raw("data", None)
    if data is not None:
        if not isinstance(data, str) or not data.strip():
            raise f.fail("data", "must be the path of a JSONL file of contrastive responses, relative to this file")
        data = str(f.path("data", {"file": data}))
    pairs = _pairs(f, required=data is None)
    template = f.text("template", Behaviour.template)
    if problem := template_problem(template):
        raise f.fail("template", problem)
    probe_fields = f.sub("probe")
    behaviour = Behaviour(
        name=name, pos_label=f.text("pos_label"), neg_label=f.text("neg_label"), pairs=pairs, template=template,
        description=f.text("description", "", allow_empty=True), questions=_questions(f, "questions", _pool_train()),
        calibration=_questions(f, "calibration", _pool_calibration()), showcase=f.texts("showcase") if f.has("showcase") else (),
        probe=probe_from_fields(probe_fields) if probe_fields else None, data=data, source=source)
    f.done()
    return behaviour


def _pairs(f: Fields, *, required: bool) -> tuple[tuple[str, str], ...]:
    if not f.has("pairs"):
        f.raw("pairs", None)
        if required:
            raise f.fail("pairs", 'missing: add persona pairs, e.g. pairs = [["a tea lover", "a coffee lover"]] '
                                  "(or a `data` file of contrastive responses)")
        return ()
    value = f.raw("pairs")
    if not value or pairs_problem(value):
        raise f.fail("pairs", "must be a non-empty list of [POS, NEG] persona pairs of non-empty strings, e.g. "
                              '[["a tea lover", "a coffee lover"]]')
    return tuple((pos, neg) for pos, neg in value)


def _questions(f: Fields, key: str, pool: tuple[str, ...]) -> tuple[str, ...]:
    """`key` as "pool" (the built-in question pool's share), a list of strings or {file = "x.txt"}."""
    value = f.raw(key, "pool")
    if value == "pool":
        return pool
    if isinstance(value, str):
        raise f.fail(key, f'must be "pool", a list of strings or {{file = "name.txt"}}, got {value!r}')
    return f.texts(key)
