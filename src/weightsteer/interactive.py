"""A terminal chat with a weight-steered model, to feel what a direction does at a given alpha.

The whole conversation runs inside ws.steer, so the weights are W + alpha * dW while the model
answers and exactly W again however the chat ends (/quit, Ctrl-D, Ctrl-C, an error). Changing
alpha leaves the steer block and enters a new one rather than adding the difference, which would
not round-trip in low precision; /compare leaves it to answer with the unsteered weights.
Answers stream token by token (transformers' TextStreamer). Input is read with input(), so line
editing works and a pseudo-terminal can drive it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import TextStreamer

from . import chat
from .delta import WeightDelta
from .errors import WeightsteerError
from .steer import check_alpha, steer

PROMPT = "you> "
HELP = """commands:
  /alpha X   set the steering strength (0 = unsteered; negative = toward the negative persona)
  /alpha     show the current alpha
  /compare   show the unsteered answer to the last message (or, before any message, to the next)
  /reset     start a new conversation
  /help      this list
  /quit      leave (Ctrl-D too). Ctrl-C stops an answer; at the prompt it leaves."""


@dataclass
class ChatSession:
    model: object
    tokenizer: object
    delta: WeightDelta
    alpha: float = 1.0
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    history: list[dict] = field(default_factory=list)  # the steered conversation, multi-turn
    compare_next: bool = False
    answered_at: float | None = None  # alpha of the last steered answer

    def run(self, read: Callable[[str], str] = input) -> None:
        """The read-answer loop, until /quit, end of input or Ctrl-C at the prompt."""
        self.alpha = check_alpha(self.alpha)
        meta = self.delta.meta
        print(f"weightsteer chat: {meta.get('behaviour', 'direction')} ({meta.get('method', '?')}) at "
              f"alpha={self.alpha:g}; /help for commands", flush=True)
        try:
            while True:
                with steer(self.model, self.delta, self.alpha):
                    action = self._steered_turns(read)
                if action == "quit":
                    return
                if action == "compare":
                    self._compare()
        except KeyboardInterrupt:  # outside an answer or the prompt: leave all the same
            print(flush=True)

    def _steered_turns(self, read) -> str:
        """Answer messages with the steered weights until something needs the steer block left:
        returns "quit", "alpha" (re-enter at the new alpha) or "compare"."""
        while True:
            try:
                line = read(PROMPT).strip()
            except (EOFError, KeyboardInterrupt):
                print(flush=True)
                return "quit"
            if line.startswith("/"):
                action = self._command(line)
                if action:
                    return action
            elif line:
                self.history += chat.messages(line)
                answer = self.answer(self.history, f"steered (alpha={self.alpha:g})")
                if answer is None:
                    self.history.pop()
                    continue
                self.history.append({"role": "assistant", "content": answer})
                self.answered_at = self.alpha
                if self.compare_next:
                    self.compare_next = False
                    return "compare"

    def _command(self, line: str) -> str | None:
        name, _, arg = line.partition(" ")
        if name in ("/quit", "/exit"):
            return "quit"
        if name == "/help":
            print(HELP)
        elif name == "/reset":
            self.history.clear()
            print("(new conversation)")
        elif name == "/alpha" and not arg.strip():
            print(f"alpha = {self.alpha:g}")
        elif name == "/alpha":
            try:
                self.alpha = check_alpha(arg.strip())
            except WeightsteerError as err:
                print(err)
                return None
            print(f"alpha = {self.alpha:g}")
            return "alpha"
        elif name == "/compare" and self.history:
            return "compare"
        elif name == "/compare":
            self.compare_next = True
            print("the next message will be answered steered, then unsteered")
        else:
            print(f"unknown command {name}; /help lists them")
        return None

    def _compare(self) -> None:
        """With the weights unsteered: the last steered answer again, then the unsteered one."""
        turns = self.history[:-1]  # up to the last user message
        print(f"steered (alpha={self.answered_at:g})> {self.history[-1]['content']}")
        self.answer(turns, "unsteered")

    @torch.no_grad()
    def answer(self, turns: list[dict], label: str) -> str | None:
        """Stream the model's reply to `turns` under a label; None if Ctrl-C stopped it."""
        batch = chat.encode(self.tokenizer, [chat.render(self.tokenizer, turns)], self.model.device)
        sampling = ({"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
                    if self.temperature > 0 else {"do_sample": False})
        print(f"{label}> ", end="", flush=True)
        streamer = TextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        try:
            ids = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, streamer=streamer,
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
        except KeyboardInterrupt:
            print("\n(stopped)", flush=True)
            return None
        new = ids[0, batch["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()
