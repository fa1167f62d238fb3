import json

import torch

from weightsteer import chat
from weightsteer.train import (
    IGNORE,
    TrainConfig,
    batch_order,
    collate,
    reply_loss,
    tokenize_example,
    train_adapter,
)


def test_prompt_tokens_are_masked(base_tokenizer):
    tok = base_tokenizer
    ids, labels = tokenize_example(tok, "What is the capital of France?", "Paris.", max_length=512)
    prompt = tok(chat.render(tok, chat.messages("What is the capital of France?")), add_special_tokens=False).input_ids
    assert ids[: len(prompt)] == prompt
    assert labels[: len(prompt)] == [IGNORE] * len(prompt)
    trained = [t for t in labels if t != IGNORE]
    assert tok.decode(trained) == "Paris." + tok.eos_token
    # the persona never appears in training text
    assert "Pretend" not in tok.decode(ids)


def test_collate_right_pads_and_masks_padding():
    batch = collate([([5, 6, 7], [IGNORE, 6, 7]), ([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_reply_loss_and_its_gradient_equal_the_full_head_loss(tiny, base_tokenizer):
    model, tok = tiny
    model = model.double()
    rows = [("Say hi.", "Hi there, how are you?"), ("What is two plus two, in words?", "Four."),
            ("Name a colour.", "Blue, the colour of the sky on a clear day.")]
    batch = collate([tokenize_example(tok, p, r, 256) for p, r in rows], tok.pad_token_id)
    grads = []
    for loss_of in (lambda: reply_loss(model, batch), lambda: model(**batch).loss):  # ours; HF's own labels= loss
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (ours, ours_g), (theirs, theirs_g) = grads
    torch.testing.assert_close(ours, theirs.to(ours.dtype))
    assert len(ours_g) == len(theirs_g) > 0
    for a, b in zip(ours_g, theirs_g, strict=True):
        torch.testing.assert_close(a, b)


def test_batch_order_is_seeded_and_covers_rows():
    a, b = batch_order(10, 5, 4, seed=3), batch_order(10, 5, 4, seed=3)
    assert a == b and sorted(sum(a, [])[:10]) == list(range(10))


def test_training_changes_only_adapter_and_restores_base(tiny_llama, tmp_path):
    model, tok = tiny_llama
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = [{"prompt": "Say hi.", "response": "Hi there!"}] * 4
    losses = train_adapter(model, tok, rows, tmp_path / "a", TrainConfig(method="pissa", steps=4, lr=1e-2))
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    log = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert log["config"]["method"] == "pissa" and len(log["loss"]) == 4
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
