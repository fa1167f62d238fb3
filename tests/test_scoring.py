"""next_token_logprobs against an independent computation: each prompt alone, unpadded, in float64."""

import copy

import numpy as np
import pytest
import torch

from weightsteer import chat
from weightsteer.evals import scoring

SETS = [torch.tensor([11, 500, 2000]), torch.tensor([7]), torch.tensor([42, 43])]


def one_at_a_time_float64(model, tokenizer, prompts) -> np.ndarray:
    reference = copy.deepcopy(model).double()
    out = []
    for text in prompts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(reference(input_ids=ids).logits[0, -1], -1)
        out.append([torch.logsumexp(logprobs[s], 0).item() for s in SETS])
    return np.array(out)


@pytest.mark.parametrize("shared", [True, False])
def test_next_token_logprobs_equal_each_prompt_scored_alone(tiny, shared):
    model, tokenizer = tiny
    questions = ["Hi.", "What is the capital of France, and why?", "Name a colour.", "2 + 2 =",
                 "Tell me something about owls, in one long sentence please.", "Why?", "Is it raining today?"]
    if shared:  # a chat template and a system prompt in common: the cached-prefix path
        prompts = [chat.render(tokenizer, chat.messages(q, system="You are a terse assistant.")) for q in questions]
        assert scoring.shared_prefix_length(tokenizer(prompts, add_special_tokens=False).input_ids) >= \
            scoring.MIN_SHARED_PREFIX
    else:  # nothing in common
        prompts = [f"{i} {q}" for i, q in enumerate(questions)]
        assert scoring.shared_prefix_length(tokenizer(prompts, add_special_tokens=False).input_ids) == 0
    got = scoring.next_token_logprobs(model, tokenizer, prompts, SETS, batch_size=3, progress=False)
    np.testing.assert_allclose(got, one_at_a_time_float64(model, tokenizer, prompts), atol=2e-5)


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert scoring.shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert scoring.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert scoring.shared_prefix_length([[1, 2, 3], [1, 5, 3]]) == 1
    assert scoring.shared_prefix_length([[9], [9, 1]]) == 0
