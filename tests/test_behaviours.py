"""Behaviour files: the built-ins give what the code gave before they became files, and bad files
get one line naming the file, the key and the fix."""

import hashlib
import json
from pathlib import Path

import pytest
from conftest import make_tiny

from weightsteer.behaviours import builtin_names, calibration_questions, load_behaviour, read_behaviour_file
from weightsteer.errors import WeightsteerError

BEFORE = json.loads((Path(__file__).parent / "fixtures" / "behaviours_before.json").read_text())


def sha(values) -> str:
    return hashlib.sha256(json.dumps(list(values)).encode()).hexdigest()


# ---- the built-ins, as before ------------------------------------------------------------------

def test_every_builtin_is_a_file_with_the_old_personas_questions_and_showcase():
    assert builtin_names() == sorted(BEFORE["behaviours"])
    assert sha(calibration_questions()) == BEFORE["calibration_questions_sha256"]
    for name, old in BEFORE["behaviours"].items():
        b = load_behaviour(name)
        assert b.source == "built-in" and b.name == name
        assert [list(p) for p in b.persona_prompts(len(b.pairs))] == old["persona_prompts"]
        assert (len(b.questions), sha(b.questions)) == (old["n_questions"], old["questions_sha256"])
        assert list(b.showcase) == old["showcase"]
        assert (b.pos_label, b.neg_label) == (old["pos_label"], old["neg_label"])
        assert list(b.calibration) == list(calibration_questions())


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("name", ["honesty", "sycophancy", "mood"])
def test_builtin_probes_give_the_old_rows(base_tokenizer, arch, name):
    model, tokenizer = make_tiny(arch, base_tokenizer)
    probe = load_behaviour(name).probe
    rows = probe.score(model, tokenizer, probe.load(), progress=False)
    old = BEFORE["probe_rows"][arch][name]
    assert [r["id"] for r in rows] == [r["id"] for r in old]
    for new, was in zip(rows, old, strict=True):
        for key, value in was.items():
            assert new[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_builtin_probe_under_a_persona_prompt_as_before(base_tokenizer, arch):
    model, tokenizer = make_tiny(arch, base_tokenizer)
    old = BEFORE["probe_rows_with_persona"][arch]
    probe = load_behaviour("honesty").probe
    rows = probe.score(model, tokenizer, probe.load(), system=old["system"], progress=False)
    assert [r["log_ratio"] for r in rows] == pytest.approx([r["log_ratio"] for r in old["honesty"]], abs=1e-6)


@pytest.mark.parametrize("name, axis", [("trad_care", "trad_care"), ("authority", "authority")])
def test_tinymfv_axis_probes_summarise_as_the_old_axes(name, axis):
    old = BEFORE["tinymfv_axes"]
    probe = load_behaviour(name).probe
    summary = probe.summarise(old["steered"], base_rows=old["base"], n_boot=64)
    assert probe.stat(summary, shift=True) == pytest.approx(old["axes"][axis])


# ---- user files ---------------------------------------------------------------------------------

TEA = '''
name = "tea"
description = "Prefers tea to coffee."
template = "Pretend you're {persona}."
pos_label = "tea drinker"
neg_label = "coffee drinker"
pairs = [["someone who loves tea", "someone who loves coffee"], ["a devoted tea drinker", "a devoted coffee drinker"]]
questions = { file = "questions.txt" }
showcase = ["What should I drink this morning?"]

[probe]
kind = "next_word"
prompts = ["What do you drink in the morning?", "What should I order at the cafe?"]
prefill = "I would have a cup of"
pos_words = [" tea", " green"]
neg_words = [" coffee", " espresso"]
'''


def write_tea(folder: Path, text: str = TEA) -> Path:
    (folder / "questions.txt").write_text("What is your morning routine?\n\nHow do you relax?\n")
    path = folder / "tea.toml"
    path.write_text(text)
    return path


def test_a_user_file_loads_with_its_questions_file_and_defaults(tmp_path, base_tokenizer):
    b = load_behaviour(str(write_tea(tmp_path)))
    assert b.persona_prompts(2)[1] == ("Pretend you're a devoted tea drinker.", "Pretend you're a devoted coffee drinker.")
    assert b.questions == ("What is your morning routine?", "How do you relax?")
    assert b.calibration == calibration_questions()  # not given: the pool's held-out questions
    assert b.probe.kind == "next_word" and len(b.probe.load()) == 2
    b.probe.check(base_tokenizer)


@pytest.mark.parametrize("edit, message", [
    (("prefill", "prefil"), "probe.prefil: unknown key"),
    (('name = "tea"\n', ""), "name: missing"),
    (('name = "tea"', 'name = "tea time"'), "may hold only letters, digits"),
    (("Pretend you're {persona}.", "Pretend you're nice."), "must contain {persona}"),
    (("Pretend you're {persona}.", "Pretend {you} are {persona}."), "no other {...} field"),
    (('pairs = [["someone who loves tea", "someone who loves coffee"], ["a devoted tea drinker", '
      '"a devoted coffee drinker"]]', "pairs = []"), "pairs: must be a non-empty list"),
    (('pairs = [["someone who loves tea", "someone who loves coffee"], ', 'pairs = [["only one"], '),
     "pairs: must be a non-empty list of [POS, NEG]"),
    (('{ file = "questions.txt" }', '{ file = "missing.txt" }'), "questions: file 'missing.txt' does not exist"),
    (('{ file = "questions.txt" }', '"the pool"'), 'questions: must be "pool", a list of strings'),
    (('kind = "next_word"', 'kind = "vibes"'), "probe.kind: unknown probe kind 'vibes'"),
    (('neg_words = [" coffee", " espresso"]', "neg_words = []"), "probe.neg_words: needs at least 1 item"),
    (("description", "descripton"), "descripton: unknown key"),
    (('showcase = ["What should I drink this morning?"]', 'showcase = "What should I drink?"'),
     "showcase: must be a list of non-empty strings"),
])
def test_bad_files_name_the_file_the_key_and_the_fix(tmp_path, edit, message):
    path = write_tea(tmp_path, TEA.replace(*edit))
    with pytest.raises(WeightsteerError) as err:
        read_behaviour_file(path)
    assert str(err.value).startswith(f"{path}: ") or "not valid TOML" in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_not_toml_and_missing_file(tmp_path):
    path = write_tea(tmp_path, TEA.replace('name = "tea"', 'name = "tea'))
    with pytest.raises(WeightsteerError, match="is not valid TOML"):
        load_behaviour(str(path))
    with pytest.raises(WeightsteerError, match="behaviour file '.*nope.toml' does not exist"):
        load_behaviour(str(tmp_path / "nope.toml"))
    with pytest.raises(WeightsteerError, match="unknown behaviour 'kindness': choose one of authority"):
        load_behaviour("kindness")


@pytest.mark.parametrize("pos, neg, message", [
    ('[" teapot", " green"]', '[" coffee", " tease"]', "start with the same token"),  # both " te"...
    ('[" tea", ""]', '[" coffee"]', "probe.pos_words: must be a list of non-empty strings"),
    ('[" tea", "🫖"]', '[" coffee"]', "does not start with a token of its own"),
])
def test_probe_words_are_checked_against_the_tokenizer(tmp_path, base_tokenizer, pos, neg, message):
    text = TEA.replace('pos_words = [" tea", " green"]', f"pos_words = {pos}").replace(
        'neg_words = [" coffee", " espresso"]', f"neg_words = {neg}")
    with pytest.raises(WeightsteerError, match=message):
        load_behaviour(str(write_tea(tmp_path, text))).probe.check(base_tokenizer)


def test_a_file_without_a_probe_or_pairs_but_with_data(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"prompt": "Hi", "pos": "Hello!", "neg": "What."}\n')
    path = tmp_path / "own.toml"
    path.write_text('name = "own"\npos_label = "kind"\nneg_label = "curt"\ndata = "rows.jsonl"\n')
    b = load_behaviour(str(path))
    assert b.probe is None and b.pairs == () and b.personas is None
    assert b.data == str(tmp_path / "rows.jsonl")
    with pytest.raises(WeightsteerError, match="has no persona pairs"):
        b.persona_prompts(1)
    path.write_text('name = "own"\npos_label = "kind"\nneg_label = "curt"\n')
    with pytest.raises(WeightsteerError, match="pairs: missing"):
        load_behaviour(str(path))


def test_a_behaviour_built_in_python_equals_the_same_file(tmp_path):
    import weightsteer as ws

    prompts = ["What do you drink in the morning?", "What should I order at the cafe?"]
    made = ws.Behaviour("tea", "tea drinker", "coffee drinker",
                        pairs=[["someone who loves tea", "someone who loves coffee"],
                               ["a devoted tea drinker", "a devoted coffee drinker"]],
                        description="Prefers tea to coffee.",
                        questions=["What is your morning routine?", "How do you relax?"],
                        showcase=["What should I drink this morning?"],
                        probe=ws.probes.NextWordProbe(prompts, [" tea", " green"], [" coffee", " espresso"],
                                                      prefill="I would have a cup of"))
    loaded = load_behaviour(str(write_tea(tmp_path)))
    assert made == ws.Behaviour(**{**loaded.__dict__, "source": "python"})
    assert made.probe.rows_key() == loaded.probe.rows_key() and made.probe.items == loaded.probe.items
    assert made.probe.name == "tea"
    with pytest.raises(WeightsteerError, match="template .* must contain {persona}"):
        ws.Behaviour("tea", "a", "b", pairs=[("x", "y")], template="Pretend.")
    with pytest.raises(WeightsteerError, match="needs persona pairs or contrastive data"):
        ws.Behaviour("tea", "a", "b")
