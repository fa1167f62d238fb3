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


def test_gradient_accumulation_equals_one_larger_batch(tiny_llama, tmp_path):
    """Identical rows, so every micro-batch has the same mean loss: 2 x 2 must train what 4 x 1 trains."""
    from safetensors.torch import load_file

    model, tok = tiny_llama
    rows = [{"prompt": "Say hi.", "response": "Hi there, friend!"}] * 8
    common = dict(method="lora", steps=3, lr=1e-2, weight_decay=0.01, warmup_steps=1, schedule="linear")
    train_adapter(model, tok, rows, tmp_path / "big", TrainConfig(batch_size=4, grad_accum=1, **common))
    train_adapter(model, tok, rows, tmp_path / "acc", TrainConfig(batch_size=2, grad_accum=2, **common))
    big, acc = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("big", "acc"))
    assert big.keys() == acc.keys()
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-4, atol=1e-6)


def test_linear_schedule_is_transformers_warmup_then_decay():
    from transformers import get_linear_schedule_with_warmup

    from weightsteer.train import lr_factor

    cfg = TrainConfig(steps=20, warmup_steps=5, schedule="linear")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=5, num_training_steps=20)
    for step in range(20):
        assert lr_factor(cfg, step) == reference.lr_lambdas[0](step)
    assert [lr_factor(TrainConfig(steps=4), s) for s in range(4)] == [1.0] * 4  # the default: constant


def test_new_training_fields_leave_old_stage_keys_alone():
    old_fields = {"method", "rank", "lr", "steps", "batch_size", "layer_span", "modules", "max_length", "seed"}
    assert set(TrainConfig().key()) == old_fields
    assert TrainConfig(grad_accum=4, weight_decay=0.01).key()["grad_accum"] == 4


def test_oft_block_size_is_used_and_checked(tiny_llama):
    import pytest

    from weightsteer.adapters import middle_layers, peft_config, target_module_names
    from weightsteer.errors import WeightsteerError

    model, _ = tiny_llama
    targets = target_module_names(model, middle_layers(4))
    assert peft_config(model, "oft", targets).oft_block_size == 32  # widths 64 and 128: the largest that fits
    assert peft_config(model, "oft", targets, oft_block=8).oft_block_size == 8
    with pytest.raises(WeightsteerError, match="does not divide"):
        peft_config(model, "oft", targets, oft_block=48)
