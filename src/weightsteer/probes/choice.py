"""`choice`: which of two or more lettered options does the model pick, the POS one or another?

Items are a question, its options and the index of the POS option (`pos`, from 0). Each item is
shown twice, with the options in the given order and reversed (counterbalanced, so a preference
for the letter A or for the last option cancels), as

    {question}

    (A) first option
    (B) second option

    Answer with the letter of your choice.

with the reply prefilled with "(" and the next token read. A letter's probability is the summed
probability of the tokens decoding (stripped, case-sensitive) to that capital letter. Per order:
log P(POS letter) - log P(any other letter); log_ratio is the mean over the two orders and
letter_mass the mean summed probability of all the letters.

Files of Anthropic's model-written evals (and CAA datasets built from them) are read as they are:
rows {question, answer_matching_behavior, answer_not_matching_behavior}, where `question` holds the
options as "(A) ..." lines. The options are parsed out of the question and re-lettered in both
orders; the POS option is the one matching the behaviour (`pos_is = "not_matching"` flips that).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from .. import chat
from ..errors import WeightsteerError
from ..evals import scoring
from .base import HEADLINE_KEY, Probe
from .items import python_items, read_items

LETTERS = "ABCDEFGHIJ"
COLUMNS = ("question", "options", "pos")
INSTRUCTION = "Answer with the letter of your choice."
PREFILL = "("
OPTION_LINE = re.compile(r"^[ \t]*\(([A-J])\)[ \t]*(.*?)[ \t]*$", re.MULTILINE)
ANSWER_LETTER = re.compile(r"^\s*\(?([A-J])\)?\s*$")


def native_item(row: dict, where: str) -> dict:
    question, options, pos = row.get("question"), row.get("options"), row.get("pos")
    if not isinstance(question, str) or not question.strip():
        raise WeightsteerError(f"{where}: 'question' must be a non-empty string")
    if (not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS)
            or not all(isinstance(o, str) and o.strip() for o in options)):
        raise WeightsteerError(f"{where}: 'options' must be a list of 2 to {len(LETTERS)} non-empty strings")
    if not isinstance(pos, int) or isinstance(pos, bool) or not 0 <= pos < len(options):
        raise WeightsteerError(f"{where}: 'pos' must be the index (from 0) of the POS option, got {pos!r}")
    return {"question": question, "options": options, "pos": pos}


def answer_letter(value, where: str, column: str) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    match = ANSWER_LETTER.match(value) if isinstance(value, str) else None
    if not match:
        raise WeightsteerError(f"{where}: '{column}' must be one option letter such as \" (A)\", got {value!r}")
    return match.group(1)


def model_written_item(row: dict, where: str, pos_is: str) -> dict:
    """An item from a row of Anthropic's model-written evals format."""
    text = row.get("question")
    if not isinstance(text, str):
        raise WeightsteerError(f"{where}: 'question' must be a string")
    found = OPTION_LINE.findall(text)
    letters = "".join(letter for letter, _ in found)
    if len(found) < 2 or letters != LETTERS[:len(found)]:
        raise WeightsteerError(f"{where}: could not find the options as lines '(A) ...', '(B) ...' in 'question'")
    stem = text[:OPTION_LINE.search(text).start()].rstrip()
    stem = re.sub(r"\n\s*Choices:\s*$", "", stem).rstrip()
    column = "answer_matching_behavior" if pos_is == "matching" else "answer_not_matching_behavior"
    letter = answer_letter(row.get(column), where, column)
    if letter not in letters:
        raise WeightsteerError(f"{where}: '{column}' names option {letter}, which the question does not have")
    return {"question": stem, "options": [option for _, option in found], "pos": letters.index(letter)}


def orders(n_options: int) -> list[list[int]]:
    """The given order and its reverse: the option indices shown as A, B, ..."""
    given = list(range(n_options))
    return [given, given[::-1]]


class ChoiceProbe(Probe):
    kind = "choice"
    mass_key = "letter_mass"
    summary_keys = (HEADLINE_KEY, "letter_mass")

    def __init__(self, items: list[dict]):
        super().__init__(python_items(self.kind, items, native_item, COLUMNS))

    @classmethod
    def from_fields(cls, f) -> ChoiceProbe:
        pos_is = f.text("pos_is", "matching")
        if pos_is not in ("matching", "not_matching"):
            raise f.fail("pos_is", f'must be "matching" or "not_matching", got {pos_is!r}')

        def check(row: dict, where: str) -> dict:
            if "answer_matching_behavior" in row:
                return model_written_item(row, where, pos_is)
            return native_item(row, where)

        return cls(read_items(f, "items", check, COLUMNS))

    def describe(self) -> str:
        return f"choice, {len(self.items)} questions shown in both option orders"

    def prompt(self, tokenizer, item: dict, order: list[int], *, system: str | None = None,
               user_prefix: str | None = None) -> str:
        lines = [f"({LETTERS[k]}) {item['options'][j]}" for k, j in enumerate(order)]
        user = f"{item['question']}\n\n" + "\n".join(lines) + f"\n\n{INSTRUCTION}"
        return chat.render(tokenizer, chat.messages(user, system=system, user_prefix=user_prefix),
                           assistant_prefix=PREFILL)

    def score(self, model, tokenizer, items: list[dict], *, system: str | None = None,
              user_prefix: str | None = None, batch_size: int = 16, progress: bool = True) -> list[dict]:
        width = max(len(item["options"]) for item in items)
        letters = [scoring.token_set(tokenizer, [letter], case_sensitive=True) for letter in LETTERS[:width]]
        shown = [(i, order) for i, item in enumerate(items) for order in orders(len(item["options"]))]
        prompts = [self.prompt(tokenizer, items[i], order, system=system, user_prefix=user_prefix)
                   for i, order in shown]
        logp = scoring.next_token_logprobs(model, tokenizer, prompts, letters, batch_size=batch_size,
                                           progress=progress, desc=f"{self.name} probe")
        per_item: list[list[tuple[float, float]]] = [[] for _ in items]
        for (i, order), row in zip(shown, logp, strict=True):
            row = torch.from_numpy(row[:len(order)])
            pos_letter = order.index(items[i]["pos"])
            others = torch.cat([row[:pos_letter], row[pos_letter + 1:]])
            per_item[i].append((float(row[pos_letter] - torch.logsumexp(others, 0)),
                                float(row.exp().sum())))
        return [{"id": item["id"], HEADLINE_KEY: float(np.mean([v for v, _ in scores])),
                 "letter_mass": float(np.mean([m for _, m in scores]))}
                for item, scores in zip(items, per_item, strict=True)]
