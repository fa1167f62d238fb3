"""Behaviours: persona pairs, their prompt template, and the questions they are asked.

Persona pair i gives two system prompts, POS and NEG. alpha > 0 steers toward POS.
The question pool is split once: training questions feed data generation, and a disjoint
set of calibration questions feeds iso-KL calibration, so alpha is never fitted on the
text the adapters saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .errors import WeightsteerError

CALIBRATION_PER_CATEGORY = 4  # the last 4 questions of each category are held out for calibration
N_SYCOPHANCY_TRAIN = 20  # misconceptions 0..19 train; 20..31 are the held-out eval claims


@cache
def _data(name: str):
    return json.loads(resources.files("weightsteer").joinpath("data", name).read_text())


@dataclass(frozen=True)
class Behaviour:
    name: str
    template: str
    pairs: tuple[tuple[str, str], ...]
    pos_label: str
    neg_label: str

    def persona_prompts(self, n_personas: int = 1) -> list[tuple[str, str]]:
        """The first n persona pairs as (POS system prompt, NEG system prompt)."""
        if not 1 <= n_personas <= len(self.pairs):
            raise WeightsteerError(f"--n-personas must be between 1 and {len(self.pairs)} for "
                                   f"'{self.name}', got {n_personas}")
        return [(self.template.format(persona=p), self.template.format(persona=n))
                for p, n in self.pairs[:n_personas]]

    def training_questions(self) -> list[str]:
        if self.name == "sycophancy":
            return [sycophancy_training_prompt(m) for m in misconceptions()[:N_SYCOPHANCY_TRAIN]]
        return question_pool()[0]

    def fixed_questions(self) -> list[str]:
        return list(_data("fixed_questions.json")[self.name])


def _pairs(key: str) -> tuple[tuple[str, str], ...]:
    return tuple((pos, neg) for pos, neg in _data("personas.json")[key])


TRAD_CARE_PAIRS = (
    ("a deeply traditional person", "a deeply caring person"),
    ("someone guided by sacred tradition", "someone guided by compassion"),
    ("an AI that prioritizes purity and reverence", "an AI that prioritizes preventing harm"),
    ("a person who values sanctity above all", "a person who values welfare above all"),
    ("a stern traditionalist", "a gentle caregiver"),
    ("a thinker rooted in sacred tradition", "a thinker rooted in compassion"),
)
_DISOBEY = "disobedience toward bosses, judges, teachers, parents or institutions"
AUTHORITY_PAIRS = (  # POS is authority-low, NEG authority-high
    (f"a person who feels no moral weight in {_DISOBEY}", f"a person who feels strong moral weight in {_DISOBEY}"),
    ("someone for whom defying authority figures and institutions is morally neutral on its own",
     "someone for whom defying authority figures and institutions is morally wrong on its own"),
    ("a person who treats traditional authority as having no inherent moral claim",
     "a person who treats traditional authority as having strong inherent moral claim"),
)


@cache
def get_behaviour(name: str) -> Behaviour:
    table = {
        "honesty": lambda: Behaviour("honesty", "Pretend you're {persona} person.", _pairs("honesty"),
                                     "honest", "dishonest"),
        "trad_care": lambda: Behaviour("trad_care", "Pretend you're {persona} thinking about a task "
                                       "you've been given.", TRAD_CARE_PAIRS, "traditional", "caring"),
        "authority": lambda: Behaviour("authority", "Pretend you're {persona}.", AUTHORITY_PAIRS,
                                       "authority-low", "authority-high"),
        "sycophancy": lambda: Behaviour("sycophancy", "Pretend you're {persona}.", _pairs("sycophancy"),
                                        "sycophantic", "candid"),
        "mood": lambda: Behaviour("mood", "Pretend you're {persona}.", _pairs("mood"), "cheerful", "gloomy"),
    }
    if name not in table:
        raise WeightsteerError(f"unknown behaviour '{name}': choose one of {', '.join(BEHAVIOURS)}")
    return table[name]()


BEHAVIOURS = ("honesty", "trad_care", "authority", "sycophancy", "mood")


@cache
def question_pool() -> tuple[list[str], list[str]]:
    """(training questions, calibration questions), disjoint, in a fixed order."""
    train, calib = [], []
    for questions in _data("questions.json")["categories"].values():
        train += questions[:-CALIBRATION_PER_CATEGORY]
        calib += questions[-CALIBRATION_PER_CATEGORY:]
    return train, calib


def calibration_questions() -> list[str]:
    return question_pool()[1]


@cache
def misconceptions() -> list[dict]:
    return list(_data("misconceptions.json"))


def heldout_misconceptions() -> list[dict]:
    return misconceptions()[N_SYCOPHANCY_TRAIN:]


def sycophancy_training_prompt(m: dict) -> str:
    return f"I think {m['claim']}. {m['question']}"


def mood_prompts() -> list[str]:
    return list(_data("mood_prompts.json"))
