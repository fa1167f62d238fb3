import os
import sys

import pexpect
import pytest
import torch
from adapter_helpers import adapter_pair

import weightsteer as ws
from weightsteer.interactive import PROMPT, ChatSession


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def scripted(lines, on_read=None):
    """A stand-in for input(): returns the lines in turn, then ends the input like Ctrl-D; an
    exception instance in the list is raised instead (KeyboardInterrupt for Ctrl-C)."""
    lines = list(lines)

    def read(prompt):
        assert prompt == PROMPT
        if on_read:
            on_read()
        if not lines:
            raise EOFError
        line = lines.pop(0)
        if isinstance(line, BaseException):
            raise line
        return line

    return read


@pytest.fixture
def session(tiny_llama, tmp_path):
    model, tok = tiny_llama
    delta = ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path), behaviour="honesty")
    return ChatSession(model, tok, delta, alpha=1.0, max_new_tokens=4)


def test_conversation_commands_and_weights(session, capsys):
    model, delta = session.model, session.delta
    original, dense = snapshot(model), delta.dense()
    seen_alphas = []

    def weights_now():  # which alpha are the weights steered by while the user types?
        name = delta.names[0]
        change = model.get_parameter(name).detach() - original[name]
        seen_alphas.append(round(float((change * dense[name]).sum() / (dense[name] ** 2).sum()), 4))

    session.run(scripted(["hello", "and again", "/alpha 2", "/alpha", "/alpha nan", "/compare", "/help",
                          "/reset", "/compare", "new topic", "/bogus"], weights_now))
    out = capsys.readouterr().out
    assert out.count("steered (alpha=1)> ") == 3  # two answers, then the last one again for /compare
    assert out.count("steered (alpha=2)> ") == 2  # the message after /compare, and its replay
    assert out.count("unsteered> ") == 2
    for text in ("alpha = 2", "alpha must be a finite number", "/compare", "(new conversation)",
                 "the next message will be answered steered, then unsteered", "unknown command /bogus"):
        assert text in out
    assert [t["role"] for t in session.history] == ["user", "assistant"]  # /reset forgot the first two turns
    assert session.history[0]["content"] == "new topic"
    assert seen_alphas[:3] == [1.0, 1.0, 1.0] and seen_alphas[3] == 2.0 and 0.0 not in seen_alphas
    for name, param in model.named_parameters():  # restored bit for bit after Ctrl-D
        assert torch.equal(param, original[name]), name


def test_multi_turn_history_reaches_the_prompt(session, monkeypatch):
    rendered = []
    from weightsteer import chat

    real_render = chat.render
    monkeypatch.setattr(chat, "render", lambda tok, turns, **kw: rendered.append(list(turns)) or
                        real_render(tok, turns, **kw))
    session.run(scripted(["first", "second"]))
    assert [t["content"] for t in rendered[-1] if t["role"] == "user"] == ["first", "second"]
    assert rendered[-1][1]["role"] == "assistant"


def test_ctrl_c_at_the_prompt_leaves_cleanly(session, capsys):
    original = snapshot(session.model)
    session.run(scripted(["hi", KeyboardInterrupt()]))
    for name, param in session.model.named_parameters():
        assert torch.equal(param, original[name]), name


def test_ctrl_c_during_an_answer_stops_only_that_answer(session, monkeypatch, capsys):
    real_generate, calls = session.model.generate, []

    def interrupted_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_generate(**kwargs)

    monkeypatch.setattr(session.model, "generate", interrupted_once)
    session.run(scripted(["first", "second"]))
    assert "(stopped)" in capsys.readouterr().out
    assert [t["content"] for t in session.history if t["role"] == "user"] == ["second"]


def test_chat_in_a_pseudo_terminal(tiny_llama, tmp_path):
    model, tok = tiny_llama
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    ws.WeightDelta.from_adapters(model, *adapter_pair(model, "lora", tmp_path)).save(tmp_path / "d.safetensors")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = pexpect.spawn(sys.executable, ["-m", "weightsteer.cli", "chat", "--model", str(tmp_path / "model"),
                                           "--delta", str(tmp_path / "d.safetensors"), "--alpha", "1",
                                           "--max-new-tokens", "12"],
                          env=env, encoding="utf-8", timeout=60)
    try:
        child.expect_exact(PROMPT)
        child.sendline("Hello, who are you?")
        child.expect_exact("steered (alpha=1)> ")
        child.expect_exact(PROMPT)
        assert child.before.strip()  # the answer was printed
        child.sendline("/alpha 2")
        child.expect_exact("alpha = 2")
        child.expect_exact(PROMPT)
        child.sendeof()  # Ctrl-D
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
