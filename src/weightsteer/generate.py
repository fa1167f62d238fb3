"""Contrastive data: responses sampled from the base model under each persona's system prompt.

Both sides answer the same questions with the same persona-pair index, so the only systematic
difference between the POS and NEG data is the persona. The persona is kept in each row for
inspection but is not part of the training text.
"""

from __future__ import annotations

import random

from tqdm.auto import tqdm

from . import chat
from .behaviours import Behaviour
from .decode import decode, stop_token_ids


def sampling_plan(behaviour: Behaviour, n_personas: int, n_samples: int, n_questions: int,
                  seed: int) -> list[tuple[str, int]]:
    """(question, persona-pair index) for each of the n_samples rows of one side."""
    questions = list(behaviour.questions)
    random.Random(seed).shuffle(questions)
    questions = questions[: max(1, min(n_questions, len(questions)))]
    return [(questions[k % len(questions)], (k // len(questions) + k) % n_personas) for k in range(n_samples)]


def sample_responses(model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float,
                     seed: int, batch_size: int, desc: str = "generate") -> list[str]:
    """One response per rendered prompt, in batches; prompt k is sampled with seed + k, so its
    response does not depend on the batch size or on the other prompts."""
    device = next(model.parameters()).device
    stops = stop_token_ids(model, tokenizer)
    out = []
    n_batches = -(-len(prompts) // batch_size)
    bar = tqdm(total=n_batches * max_new_tokens, desc=desc, unit="step")  # decoding steps, batch after batch
    for number, start in enumerate(range(0, len(prompts), batch_size)):
        batch = chat.encode(tokenizer, prompts[start:start + batch_size], device)
        seeds = [seed + start + j for j in range(len(batch["input_ids"]))]
        new = decode(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                     stop_ids=stops, temperature=temperature, seeds=seeds,
                     on_step=lambda: bar.update(1)).tokens
        out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        bar.update((number + 1) * max_new_tokens - bar.n)  # a batch whose rows all stopped early
    bar.close()
    return out


def generate_contrastive(model, tokenizer, behaviour: Behaviour, *, n_personas: int = 1, n_samples: int = 80,
                         n_questions: int = 40, max_new_tokens: int = 96, temperature: float = 0.8,
                         seed: int = 0, batch_size: int = 80) -> list[dict]:
    """Rows {side, pair, persona, prompt, response}: n_samples for POS, then the same plan for NEG."""
    personas = behaviour.persona_prompts(n_personas)
    plan = sampling_plan(behaviour, n_personas, n_samples, n_questions, seed)
    rows = []
    for side_index, side in enumerate(("pos", "neg")):
        prompts = [chat.render(tokenizer, chat.messages(q, system=personas[i][side_index])) for q, i in plan]
        responses = sample_responses(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed + 100_003 * side_index,
                                     batch_size=batch_size, desc=f"generate {side}")
        rows += [{"side": side, "pair": i, "persona": personas[i][side_index], "prompt": q, "response": r}
                 for (q, i), r in zip(plan, responses, strict=True)]
    return rows
