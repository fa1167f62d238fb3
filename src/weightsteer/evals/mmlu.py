"""MMLU: what steering costs in general capability, read from four-way multiple choice, zero-shot.

Data. Hub dataset `cais/mmlu`, config `all`, split `test` (the file `all/test-00000-of-00001.parquet`,
read with pyarrow), or a local folder (--data-dir / --mmlu-dir) with `test.jsonl`: one JSON object a
line with the hub's columns question, subject, choices (4 strings) and answer (0-3). 14,042
questions in 57 subjects. An item's id is a hash of its subject, question, choices and answer (with
"-k" for the k-th repeat of an identical question), so the hub and a local copy in another row
order give the same ids, and paired shifts still pair.

Subset. `limit` (the sweep's --mmlu-n, default DEFAULT_SUBSET) takes a seeded sample stratified by
subject with evals.sampling.stratified_sample over the questions sorted by id (so the file's row
order does not matter): subjects in sorted order, round-robin, each subject's questions shuffled by
random.Random(f"0:{subject}"); so 114 = 2 questions from each of the 57 subjects, and a smaller
subset is contained in a larger one. limit=None is the full test split, in id order.

Probe. The user turn is one line naming the subject, the question and the four choices as "A. ...",
"B. ..."; thinking off; the assistant turn is prefilled with "Answer:" so the next token is the
letter. The letter's token set is every token that decodes, stripped and case-sensitively, to it
("A" and " A"; never "a"). Per question: the log-probability of each letter under the full-vocabulary
softmax, the predicted letter (the most probable of the four), `correct`, `letter_mass` (P(any of
the four letters): how much the model answers at all) and `logp_correct`, log P(correct letter)
renormalised over the four letters (log(1/4) = -1.386 is chance; 0 is certainty).

Summary. Accuracy and mean logp_correct with bootstrap 95% intervals (questions resampled), overall
and per subject, and letter_mass; with base rows the paired shifts of each. A 135M model sits near
chance on MMLU, so the accuracy's drop is coarse; the normalised log-probability moves smoothly
with the damage and is the finer-grained signal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .. import chat
from ..errors import WeightsteerError
from . import scoring
from .sampling import stratified_sample
from .stats import summarise_by_id

HUB_REPO = "cais/mmlu"
HUB_FILE = "all/test-00000-of-00001.parquet"
LOCAL_FILE = "test.jsonl"
COLUMNS = ("question", "subject", "choices", "answer")
LETTERS = ("A", "B", "C", "D")
ANSWER_CUE = "Answer:"
DEFAULT_SUBSET = 114  # 2 questions per subject: about a minute per scoring of the embedded model on 1 CPU thread
SUMMARY_KEYS = ("correct", "logp_correct", "letter_mass")
name = "mmlu"
HEADLINE_KEY = "correct"  # accuracy
mass_key = "letter_mass"


def with_ids(items: list[dict]) -> list[dict]:
    """Each item's id: a hash of its subject, question, choices and answer, plus "-k" for the k-th
    repeat of an identical question (the test split has 27 such repeats)."""
    seen: dict[str, int] = {}
    for item in items:
        text = "\x1f".join([item["subject"], item["question"], *item["choices"], str(item["answer"])])
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        seen[digest] = seen.get(digest, -1) + 1
        item["id"] = digest if seen[digest] == 0 else f"{digest}-{seen[digest]}"
    return items


def _read_hub() -> list[dict]:
    path = scoring.hub_file(HUB_REPO, HUB_FILE, LOCAL_FILE)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise WeightsteerError("reading cais/mmlu from the hub needs pyarrow (pip install pyarrow); or pass "
                               f"--mmlu-dir with a local {LOCAL_FILE}") from None
    table = pq.read_table(path, columns=list(COLUMNS))
    return table.to_pylist()


def check_row(row: dict, where: str) -> dict:
    choices, answer = row["choices"], row["answer"]
    if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
        raise WeightsteerError(f"{where}: 'choices' must be a list of 4 strings")
    if isinstance(answer, bool) or answer not in range(4):
        raise WeightsteerError(f"{where}: 'answer' must be an index 0-3, got {answer!r}")
    subject, question = str(row["subject"]), str(row["question"])
    return {"subject": subject, "question": question, "choices": list(choices), "answer": int(answer)}


def load(data_dir=None, limit: int | None = None, seed: int = 0) -> list[dict]:
    """The test questions (a seeded, subject-stratified sample of `limit`; all for None)."""
    if data_dir is not None:
        path = Path(data_dir) / LOCAL_FILE
        rows = scoring.read_jsonl(path, COLUMNS, any_type=("choices", "answer"))  # check_row checks these
        items = [check_row(r, f"{path} line {i}") for i, r in enumerate(rows, start=1)]
    else:
        items = [check_row(r, f"{HUB_REPO} test row {i}") for i, r in enumerate(_read_hub(), start=1)]
    # sorted by id first, so the sample does not depend on the file's row order (hub or local copy)
    items = sorted(with_ids(items), key=lambda item: item["id"])
    return stratified_sample(items, lambda item: item["subject"], limit, seed)


def question_text(item: dict) -> str:
    subject = item["subject"].replace("_", " ")
    lines = [f"The following is a multiple choice question about {subject}. Reply with the letter of the "
             "correct answer.", "", item["question"]]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, item["choices"], strict=True)]
    return "\n".join(lines)


def prompt(tokenizer, item: dict, *, system: str | None = None, user_prefix: str | None = None) -> str:
    """The rendered prompt, ending in the prefilled "Answer:" after which the letter is read."""
    turns = chat.messages(question_text(item), system=system, user_prefix=user_prefix)
    return chat.render(tokenizer, turns, assistant_prefix=ANSWER_CUE, thinking=False)


def letter_sets(tokenizer) -> list:
    return [scoring.token_set(tokenizer, [letter], case_sensitive=True) for letter in LETTERS]


def rows_from_logprobs(items: list[dict], logp: np.ndarray) -> list[dict]:
    """One row per question from its (4,) letter log-probabilities under the full softmax."""
    rows = []
    for item, letters in zip(items, logp, strict=True):
        normalised = letters - np.logaddexp.reduce(letters)
        predicted = int(np.argmax(letters))
        rows.append({"id": item["id"], "subject": item["subject"], "answer": LETTERS[item["answer"]],
                     "predicted": LETTERS[predicted], "correct": float(predicted == item["answer"]),
                     "logp_correct": float(normalised[item["answer"]]),
                     "letter_mass": float(np.exp(letters).sum()),
                     **{f"logp_{letter}": float(v) for letter, v in zip(LETTERS, letters, strict=True)}})
    return rows


def score(model, tokenizer, items: list[dict], *, system: str | None = None, user_prefix: str | None = None,
          batch_size: int = 16, progress: bool = True) -> list[dict]:
    prompts = [prompt(tokenizer, item, system=system, user_prefix=user_prefix) for item in items]
    logp = scoring.next_token_logprobs(model, tokenizer, prompts, letter_sets(tokenizer), batch_size=batch_size,
                                       progress=progress, desc="mmlu")
    return rows_from_logprobs(items, logp)


def check(tokenizer) -> None:
    """Refuse a tokenizer that has no token for one of the letters."""
    letter_sets(tokenizer)


def summarise(rows: list[dict], base_rows: list[dict] | None = None, n_boot: int = 256, seed: int = 0) -> dict:
    """Accuracy, mean normalised log P(correct) and letter mass, overall and per subject; with base_rows
    their paired shifts (same question ids)."""
    summary = summarise_by_id(rows, SUMMARY_KEYS, base_rows, n_boot=n_boot, seed=seed)
    summary["subjects"] = {}
    for subject in sorted({r["subject"] for r in rows}):
        mine = [r for r in rows if r["subject"] == subject]
        theirs = None if base_rows is None else [r for r in base_rows if r["subject"] == subject]
        summary["subjects"][subject] = summarise_by_id(mine, ("correct", "logp_correct"), theirs,
                                                       n_boot=n_boot, seed=seed)
    return summary


def stat(summary: dict, *, shift: bool = False) -> dict:
    """{"mean", "lo", "hi"} of the accuracy (or, with shift=True, of its paired shift vs base)."""
    return (summary["shift"] if shift else summary)[HEADLINE_KEY]
