"""MMLU: the loader on the shared copy, the stratified subset, the letter read at the right position
(embedded template and the real Qwen3 template), scoring against an unbatched float64 computation
done by hand, and the summary on hand-made rows."""

import copy
import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from weightsteer import WeightsteerError
from weightsteer.evals import BENCHMARKS, benchmark, mmlu

MMLU_DIR = SHARED_DATA / "mmlu"
QWEN3_TEMPLATE = SHARED_DATA / "chat-templates" / "qwen3.jinja"


@pytest.fixture(scope="module")
def all_items():
    return mmlu.load(MMLU_DIR)


def test_loader_on_the_shared_copy(all_items):
    assert len(all_items) == 14042
    assert len({i["id"] for i in all_items}) == 14042  # repeats of identical questions get "-k"
    counts = Counter(i["subject"] for i in all_items)
    assert len(counts) == 57 and counts["abstract_algebra"] == 100 and counts["professional_law"] == 1534
    assert BENCHMARKS["mmlu"] is mmlu and benchmark("mmlu") is mmlu


def test_default_subset_is_stratified_nested_and_seeded(all_items):
    subset = mmlu.load(MMLU_DIR, mmlu.DEFAULT_SUBSET)
    assert len(subset) == 114 and set(Counter(i["subject"] for i in subset).values()) == {2}
    smaller = {i["id"] for i in mmlu.load(MMLU_DIR, 57)}
    assert smaller < {i["id"] for i in subset}
    assert {i["id"] for i in mmlu.load(MMLU_DIR, 57, seed=1)} != smaller


def test_subset_does_not_depend_on_row_order(tmp_path, all_items):
    rows = [json.loads(line) for line in (MMLU_DIR / "test.jsonl").read_text().splitlines()[:700]]
    random.Random(3).shuffle(rows)
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    original = tmp_path / "orig"
    original.mkdir()
    (original / "test.jsonl").write_text("".join(line + "\n" for line in
                                                 (MMLU_DIR / "test.jsonl").read_text().splitlines()[:700]))
    assert [i["id"] for i in mmlu.load(tmp_path, 40)] == [i["id"] for i in mmlu.load(original, 40)]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(choices=["a", "b", "c"]), "line 2: 'choices' must be a list of 4 strings"),
    (lambda r: r.update(answer=4), "line 2: 'answer' must be an index 0-3, got 4"),
    (lambda r: r.pop("subject"), "line 2 has no column 'subject'"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, edit, message):
    rows = [json.loads(line) for line in (MMLU_DIR / "test.jsonl").read_text().splitlines()[:3]]
    edit(rows[1])
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(WeightsteerError, match=message):
        mmlu.load(tmp_path)


def test_rows_from_hand_made_logprobs():
    item = {"id": "x", "subject": "s", "answer": 2}
    logp = np.log([[0.1, 0.2, 0.3, 0.1]])
    (row,) = mmlu.rows_from_logprobs([item], logp)
    assert row["predicted"] == "C" and row["answer"] == "C" and row["correct"] == 1.0
    assert row["logp_correct"] == pytest.approx(np.log(0.3 / 0.7))
    assert row["letter_mass"] == pytest.approx(0.7)
    (row,) = mmlu.rows_from_logprobs([{**item, "answer": 0}], logp)
    assert row["correct"] == 0.0 and row["logp_correct"] == pytest.approx(np.log(0.1 / 0.7))


def letter_ids_by_hand(tokenizer, letter):
    return [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip() == letter]


def test_score_equals_an_unbatched_float64_computation(tiny, all_items):
    model, tokenizer = tiny
    items = mmlu.load(MMLU_DIR, 6)
    rows = mmlu.score(model, tokenizer, items, batch_size=4, progress=False)
    reference = copy.deepcopy(model).double()
    letters = [letter_ids_by_hand(tokenizer, letter) for letter in "ABCD"]
    for item, row in zip(items, rows, strict=True):
        user = (f"The following is a multiple choice question about {item['subject'].replace('_', ' ')}. "
                f"Reply with the letter of the correct answer.\n\n{item['question']}\n"
                + "\n".join(f"{letter}. {c}" for letter, c in zip("ABCD", item["choices"], strict=True)))
        text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False) + "Answer:"
        ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(reference(input_ids=ids).logits[0, -1], -1)
        per_letter = np.array([torch.logsumexp(logprobs[ids_], 0).item() for ids_ in letters])
        normalised = per_letter - np.log(np.exp(per_letter).sum())
        assert row["logp_correct"] == pytest.approx(normalised[item["answer"]], abs=1e-4)
        assert row["letter_mass"] == pytest.approx(np.exp(per_letter).sum(), rel=1e-4)
        assert row["predicted"] == "ABCD"[int(np.argmax(per_letter))]
        assert row["correct"] == float(int(np.argmax(per_letter)) == item["answer"])


@pytest.mark.parametrize("template", ["embedded", "qwen3"])
def test_the_letter_is_the_next_token_after_the_prompt(base_tokenizer, all_items, template):
    tokenizer = copy.deepcopy(base_tokenizer)
    if template == "qwen3":
        tokenizer.chat_template = QWEN3_TEMPLATE.read_text()
        header = "<|im_start|>assistant\n<think>\n\n</think>\n\nAnswer:"  # thinking off, as Qwen3 renders it
    else:
        header = "<|im_start|>assistant\nAnswer:"
    item = all_items[0]
    text = mmlu.prompt(tokenizer, item)
    assert text.endswith(header)
    assert text.count(item["question"]) == 1 and text.index(item["question"]) < text.index(header)
    prompt_ids = tokenizer(text, add_special_tokens=False).input_ids
    for letter, ids in zip("ABCD", mmlu.letter_sets(tokenizer), strict=True):
        answered = tokenizer(text + " " + letter, add_special_tokens=False).input_ids
        assert answered[:len(prompt_ids)] == prompt_ids and len(answered) == len(prompt_ids) + 1
        assert answered[-1] in ids.tolist()  # the model's natural spelling " B" is in the letter's set
        assert {tokenizer.decode([i]) for i in ids.tolist()} == {letter, " " + letter}


def test_summary_accuracy_logp_per_subject_and_paired_shift():
    def row(i, subject, correct, logp):
        return {"id": str(i), "subject": subject, "correct": correct, "logp_correct": logp, "letter_mass": 0.5}

    base = [row(0, "a", 1.0, -0.5), row(1, "a", 0.0, -2.0), row(2, "b", 1.0, -1.0), row(3, "b", 1.0, -0.2)]
    steered = [row(0, "a", 0.0, -1.5), row(1, "a", 0.0, -2.5), row(2, "b", 1.0, -1.0), row(3, "b", 0.0, -1.2)]
    summary = mmlu.summarise(steered, base_rows=base, n_boot=64)
    assert mmlu.stat(summary)["mean"] == pytest.approx(0.25)
    assert mmlu.stat(summary, shift=True)["mean"] == pytest.approx(0.25 - 0.75)
    assert summary["logp_correct"]["mean"] == pytest.approx(np.mean([-1.5, -2.5, -1.0, -1.2]))
    assert summary["shift"]["logp_correct"]["mean"] == pytest.approx(np.mean([-1.0, -0.5, 0.0, -1.0]))
    assert summary["subjects"]["a"]["correct"]["mean"] == 0.0
    assert summary["subjects"]["b"]["shift"]["correct"]["mean"] == pytest.approx(-0.5)
    lo, hi = summary["shift"]["logp_correct"]["lo"], summary["shift"]["logp_correct"]["hi"]
    assert -1.0 <= lo <= hi <= 0.0


def test_eval_command_scores_mmlu(tiny_llama_dir, tmp_path, capsys):
    from weightsteer.cli import main

    assert main(["eval", "mmlu", "--model", str(tiny_llama_dir), "--data-dir", str(MMLU_DIR), "--limit", "3",
                 "--prompt", "You are a careful expert.", "--out-root", str(tmp_path / "out"),
                 "--out", str(tmp_path / "eval")]) == 0
    assert "mmlu [prompt]: correct" in capsys.readouterr().out
    summary = json.loads((tmp_path / "eval" / "mmlu.prompt.summary.json").read_text())["summary"]
    assert summary["correct"]["n"] == 3 and "shift" in summary and len(summary["subjects"]) == 3
