"""Your own contrastive data: both row shapes, chat-message prompts, and one line per bad row."""

import json

import pytest

from weightsteer.contrast_data import read_contrast_data
from weightsteer.errors import WeightsteerError
from weightsteer.train import IGNORE, tokenize_example


def write(tmp_path, rows) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tea or coffee?"}]


def test_pairs_and_single_sides_mix(tmp_path):
    path = write(tmp_path, [{"prompt": "Drink?", "pos": "Tea.", "neg": "Coffee.", "note": "kept out"},
                            {"side": "neg", "prompt": CHAT, "response": "Coffee, always."}])
    assert read_contrast_data(path) == [
        {"side": "pos", "prompt": "Drink?", "response": "Tea."},
        {"side": "neg", "prompt": "Drink?", "response": "Coffee."},
        {"side": "neg", "prompt": CHAT, "response": "Coffee, always."}]


def test_line_separators_inside_a_row_stay_in_the_row(tmp_path):
    # U+2028 and U+0085 may stand unescaped in a JSON string; str.splitlines would cut the row there
    text = "First line\u2028second line\u0085third."
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"prompt": "Q?", "pos": text, "neg": "No."}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_contrast_data(str(path))[0]["response"] == text


@pytest.mark.parametrize("row, message", [
    ({"side": "positive", "prompt": "q", "response": "r"}, "line 2: 'side' must be \"pos\" or \"neg\", got 'positive'"),
    ({"prompt": "q", "pos": "r"}, "line 2: 'neg' must be a non-empty string"),
    ({"prompt": "", "pos": "r", "neg": "s"}, "line 2: 'prompt' must be a non-empty string or a list"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "pos": "r", "neg": "s"},
     "line 2: 'prompt' must end with a user message"),
    ({"prompt": [{"role": "robot", "content": "q"}], "pos": "r", "neg": "s"}, "line 2: each message"),
    ({"prompt": "q", "response": "r"}, "line 2: a row needs 'pos' and 'neg'"),
    ("{not json", "line 2 is not valid JSON"),
    ([1, 2], "line 2: a row must be a JSON object"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    path = write(tmp_path, [{"prompt": "Drink?", "pos": "Tea.", "neg": "Coffee."}, row])
    with pytest.raises(WeightsteerError) as err:
        read_contrast_data(path)
    assert str(err.value).startswith(path) and message in str(err.value)


def test_each_side_needs_a_row_and_the_file_must_exist(tmp_path):
    with pytest.raises(WeightsteerError, match="has no NEG responses"):
        read_contrast_data(write(tmp_path, [{"side": "pos", "prompt": "q", "response": "r"}]))
    with pytest.raises(WeightsteerError, match="contrastive data file 'missing.jsonl' does not exist"):
        read_contrast_data("missing.jsonl")


def test_a_hub_id_without_the_datasets_package_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(WeightsteerError, match="needs the datasets package: pip install datasets"):
        read_contrast_data("someone/contrast-pairs", "train")


def test_a_chat_prompt_trains_only_on_the_reply(base_tokenizer):
    ids, labels = tokenize_example(base_tokenizer, CHAT, "Tea.", 512)
    text = base_tokenizer.decode(ids)
    assert "Be brief." in text and "Hello." in text and text.rstrip().endswith("Tea.<|im_end|>")
    trained = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert base_tokenizer.decode(trained) == "Tea.<|im_end|>"
