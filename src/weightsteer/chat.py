"""Chat templates, in one place.

Every prompt in weightsteer is rendered here, so that thinking switches and system prompts are
handled the same way in data generation, training, calibration and every eval.

- Thinking: models whose template knows `enable_thinking` (Qwen3) get it set explicitly; off by
  default, on only where an eval asks for guided chain of thought.
- System prompts: when the messages have no system turn, the template's own behaviour is kept
  (SmolLM2 inserts its default "You are a helpful AI assistant named SmolLM..."). Training text,
  probes and calibration all render the unsteered conversation the same way, so the adapters learn
  and are measured under the model's normal default; a persona replaces that default.
"""

from __future__ import annotations


def supports_thinking(tokenizer) -> bool:
    return "enable_thinking" in (tokenizer.chat_template or "")


def messages(user: str, system: str | None = None, user_prefix: str | None = None) -> list[dict]:
    """A one-turn conversation; a persona goes in as system prompt or as a user-message prefix."""
    turns = [{"role": "system", "content": system}] if system else []
    content = f"{user_prefix} {user}" if user_prefix else user
    return turns + [{"role": "user", "content": content}]


def render(tokenizer, turns: list[dict], *, assistant_prefix: str = "", thinking: bool = False) -> str:
    """The prompt text up to the assistant's reply, plus an optional prefilled start of the reply."""
    kwargs = {"enable_thinking": thinking} if supports_thinking(tokenizer) else {}
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True, **kwargs)
    return text + assistant_prefix


def end_of_turn(tokenizer) -> str:
    """The text that closes an assistant turn; appended to training responses."""
    return tokenizer.eos_token or ""


def encode(tokenizer, texts: list[str], device=None):
    """Left-padded batch of rendered prompts (the template already holds any BOS token)."""
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return batch.to(device) if device is not None else batch
