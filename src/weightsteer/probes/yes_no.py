"""`yes_no`: does the model answer Yes/No questions the POS way?

Each item is a question and the answer a POS persona would give (`pos_answer`, "yes" or "no"). It is
asked as "{question}{suffix}" (suffix " Answer Yes or No." by default), thinking off, and the next
token is read. Yes-like tokens are every token that decodes (stripped, lower-cased) to "yes", and
no-like to "no". log_ratio = log P(POS answer) - log P(the other); yes_no_mass = P(yes) + P(no).

A model that likes saying "Yes" moves every item's log P(yes) - log P(no) the same way; in a set
balanced between POS-yes and POS-no items that bias cancels in the mean log_ratio. p_yes, the yes
share P(yes) / (P(yes) + P(no)), is reported beside it so a reader can see the bias itself, and the
--limit subsets are stratified by pos_answer so they stay balanced.
"""

from __future__ import annotations

import numpy as np

from .. import chat
from ..errors import WeightsteerError
from ..evals import scoring
from .base import HEADLINE_KEY, Probe
from .items import python_items, read_items

ANSWERS = ("yes", "no")
COLUMNS = ("question", "pos_answer")
DEFAULT_SUFFIX = " Answer Yes or No."


def check_item(item: dict, where: str) -> dict:
    question, answer = item.get("question"), item.get("pos_answer")
    if not isinstance(question, str) or not question.strip():
        raise WeightsteerError(f"{where}: 'question' must be a non-empty string")
    if not isinstance(answer, str) or answer.strip().lower() not in ANSWERS:
        raise WeightsteerError(f"{where}: 'pos_answer' must be \"yes\" or \"no\", got {answer!r}")
    return {"question": question, "pos_answer": answer.strip().lower()}


class YesNoProbe(Probe):
    kind = "yes_no"
    mass_key = "yes_no_mass"
    summary_keys = (HEADLINE_KEY, "yes_no_mass", "p_yes")

    def __init__(self, items: list[dict], suffix: str = DEFAULT_SUFFIX):
        super().__init__(python_items(self.kind, items, check_item, COLUMNS))
        self.suffix = suffix

    @classmethod
    def from_fields(cls, f) -> YesNoProbe:
        items = read_items(f, "items", check_item, COLUMNS)
        return cls(items, f.text("suffix", DEFAULT_SUFFIX, allow_empty=True))

    def group_of(self, item: dict) -> str:
        return item["pos_answer"]

    def rows_key(self) -> dict:
        return {"kind": self.kind, "suffix": self.suffix}

    def describe(self) -> str:
        n_yes = sum(i["pos_answer"] == "yes" for i in self.items)
        return f"yes_no, {len(self.items)} questions ({n_yes} with POS answer yes)"

    def prompt(self, tokenizer, question: str, *, system: str | None = None, user_prefix: str | None = None) -> str:
        return chat.render(tokenizer, chat.messages(question + self.suffix, system=system, user_prefix=user_prefix))

    def score(self, model, tokenizer, items: list[dict], *, system: str | None = None,
              user_prefix: str | None = None, batch_size: int = 16, progress: bool = True) -> list[dict]:
        prompts = [self.prompt(tokenizer, item["question"], system=system, user_prefix=user_prefix) for item in items]
        token_sets = [scoring.token_set(tokenizer, [answer]) for answer in ANSWERS]
        logp = scoring.next_token_logprobs(model, tokenizer, prompts, token_sets, batch_size=batch_size,
                                           progress=progress, desc=f"{self.name} probe")
        rows = []
        for item, (log_yes, log_no) in zip(items, logp, strict=True):
            sign = 1.0 if item["pos_answer"] == "yes" else -1.0
            rows.append({"id": item["id"], HEADLINE_KEY: float(sign * (log_yes - log_no)),
                         "yes_no_mass": float(np.exp(log_yes) + np.exp(log_no)),
                         "p_yes": float(np.exp(log_yes - np.logaddexp(log_yes, log_no)))})
        return rows
