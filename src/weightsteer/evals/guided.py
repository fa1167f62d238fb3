"""Guided chain of thought: a short greedy thought, closed by the model or by force, then an answer cue.

The benchmarks that think (AIRiskDilemmas always, tiny-mfv with --max-think) follow the rollout of the
reference evals (the tinymfv package's guided rollout and the seed's AIRisk eval):

1. The prompt is rendered with thinking on and the reply opened with "<think>\\n".
2. Up to `max_think` tokens are generated greedily, batched, stopping at "</think>".
3. A thought the model closed itself is followed by the answer cue directly. An unfinished one gets
   `pre_close` (the references' "I should answer now." anchor), then "</think>", then the cue.
4. The next token after the cue is scored.

Templates without a thinking switch have no "</think>" to aim at: the reply opens with PLAIN_OPEN,
the thought runs its full length, and a newline separates it from the cue.
"""

from __future__ import annotations

from .. import chat
from . import scoring

THINK_OPEN, THINK_CLOSE = "<think>\n", "</think>"
PLAIN_OPEN = "Let me think briefly."


def starts(tokenizer, users: list[str], *, system: str | None = None, user_prefix: str | None = None) -> list[str]:
    """The rendered prompts up to the start of the model's thought, one per user message."""
    thinking = chat.supports_thinking(tokenizer)
    return [chat.render(tokenizer, chat.messages(user, system=system, user_prefix=user_prefix),
                        assistant_prefix=THINK_OPEN if thinking else PLAIN_OPEN, thinking=thinking)
            for user in users]


def thoughts(model, tokenizer, prompts: list[str], max_think: int, *, batch_size: int = 16,
             progress: bool = True, desc: str = "thinking") -> list[str]:
    """Each prompt's greedy thought; for thinking templates it ends in "</think>" when the model closed it."""
    thinking = chat.supports_thinking(tokenizer)
    return scoring.greedy_continuations(model, tokenizer, prompts, max_new_tokens=max_think,
                                        stop=THINK_CLOSE if thinking else None, keep_stop=True,
                                        batch_size=batch_size, progress=progress, desc=desc)


def closed_by_model(thought: str) -> bool:
    return thought.endswith(THINK_CLOSE)


def answer_prompt(tokenizer, start: str, thought: str, cue: str, pre_close: str) -> str:
    """start + thought, closed as in step 3 of the module docstring, + the answer cue."""
    if not chat.supports_thinking(tokenizer):
        return start + thought.rstrip() + "\n" + cue.lstrip("\n")
    if closed_by_model(thought):
        return start + thought + cue
    return start + thought + pre_close + THINK_CLOSE + cue
