"""--matmul-dtype bfloat16: bf16 matrix products inside forward passes only, float32 everywhere else."""

import copy

import pytest
import torch
from adapter_helpers import adapter_pair

import weightsteer as ws
from weightsteer import matmuls
from weightsteer.errors import WeightsteerError
from weightsteer.methods import UNSTEERED
from weightsteer.results import score_rows

needs_bf16 = pytest.mark.skipif(not matmuls.bf16_matmuls_are_fast(torch.device("cpu")),
                                reason="this CPU has no native bf16 matrix products")
TOKENS = torch.randint(5, 2000, (1, 64), generator=torch.Generator().manual_seed(0))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=TOKENS).logits[0].double()


def float64_logits(model) -> torch.Tensor:
    """An independent reference: the same weights in float64, the class's own forward."""
    return float64_logits_of(model, TOKENS)[0]


@needs_bf16
def test_bf16_matmuls_are_bf16_close_to_float64_and_not_float32(tiny_qwen3):
    model, _ = tiny_qwen3
    exact = float64_logits(model)
    fp32 = logits(model)
    matmuls.set_matmul_dtype(model, "bfloat16")
    bf16 = logits(model)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights untouched
    scale = exact.abs().max()
    assert (fp32 - exact).abs().max() < 1e-5 * scale
    assert (bf16 - exact).abs().max() > 1e-4 * scale  # the products really are bf16 ...
    assert (bf16 - exact).abs().max() < 3e-2 * scale  # ... and within bf16 rounding of the exact ones
    matmuls.set_matmul_dtype(model, "float32")
    assert torch.equal(logits(model), fp32)  # and switching back is exact


@needs_bf16
def test_steering_arithmetic_stays_float32_under_bf16_matmuls(tiny_llama, tmp_path):
    model, _ = tiny_llama
    pos, neg = adapter_pair(model, "lora", tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    fp32_model = copy.deepcopy(model)
    matmuls.set_matmul_dtype(model, "bfloat16")
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ws.steer(model, delta, 2.5), ws.steer(fp32_model, delta, 2.5):
        for (name, p), q in zip(model.named_parameters(), fp32_model.parameters(), strict=True):
            assert torch.equal(p, q), name  # W + alpha dW computed in float32, bit for bit
        steered = logits(model)
        exact = float64_logits(model)
    assert (steered - exact).abs().max() < 3e-2 * exact.abs().max()
    for name, p in model.named_parameters():
        assert torch.equal(p, saved[name]), name


@needs_bf16
def test_an_adapter_trains_through_the_bf16_forward(tiny_qwen3, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_qwen3
    matmuls.set_matmul_dtype(model, "bfloat16")
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.autocast("cpu", enabled=False):  # the wrapper must switch it on by itself
        out = peft_model(input_ids=TOKENS, labels=TOKENS)
    out.loss.backward()
    matmuls.set_matmul_dtype(model, "float32")
    with torch.no_grad():
        fp32_loss = peft_model(input_ids=TOKENS, labels=TOKENS).loss
    assert out.loss.item() != fp32_loss.item()  # PEFT's wrapper reached the bf16 forward
    assert abs(out.loss.item() - fp32_loss.item()) < 0.05 * fp32_loss.item()
    grads = [p.grad for n, p in peft_model.named_parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def lora_gradients(model, batch, attention=None) -> list[torch.Tensor]:
    """The gradients of a fresh, seeded LoRA's weights after one reply loss on `batch`, with the attention
    kernel training uses (or the `attention` context given)."""
    from peft import LoraConfig, get_peft_model

    from weightsteer.train import reply_loss

    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    try:
        with attention or matmuls.training_attention(model):
            reply_loss(peft_model, batch).backward()
        return [p.grad.double().flatten() for n, p in peft_model.named_parameters() if p.requires_grad]
    finally:
        peft_model.unload()


@needs_bf16
def test_bf16_training_gradients_are_bf16_close_to_float64(tiny_qwen3):
    """Training with bf16 products takes the plain attention kernel (training_attention): its gradients,
    on right-padded rows of different lengths, match a float64 pass of the same weights within bf16
    rounding."""
    from weightsteer.train import collate

    model, _ = tiny_qwen3
    ids = TOKENS[0].tolist()
    batch = collate([(ids[:40], [-100] * 20 + ids[20:40]), (ids[:64], [-100] * 30 + ids[30:64])], pad_id=0)
    reference = copy.deepcopy(model).double()
    matmuls.set_matmul_dtype(model, "bfloat16")
    got, expected = lora_gradients(model, batch), lora_gradients(reference, batch)
    for g, e in zip(got, expected, strict=True):
        assert torch.nn.functional.cosine_similarity(g, e, dim=0) > 0.99
        assert (g - e).norm() < 0.05 * e.norm()


@needs_bf16
def test_rows_made_with_bf16_matmuls_are_kept_apart_from_float32_rows(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    probe = copy.copy(ws.load_behaviour("mood").probe)
    probe.vader = False  # the word probe alone
    items = probe.load()[:4]
    stem = tmp_path / "base" / "mood"
    quiet = dict(log=lambda _: None)
    fp32_rows, built = score_rows(model, tokenizer, probe, items, UNSTEERED, 0.0, stem, **quiet)
    assert built
    assert not score_rows(model, tokenizer, probe, items, UNSTEERED, 0.0, stem, **quiet)[1]  # reused
    matmuls.set_matmul_dtype(model, "bfloat16")
    bf16_rows, built = score_rows(model, tokenizer, probe, items, UNSTEERED, 0.0, stem, **quiet)
    assert built  # not the float32 rows
    assert [r["log_ratio"] for r in bf16_rows] != [r["log_ratio"] for r in fp32_rows]


def test_bf16_matmuls_are_refused_where_they_would_be_emulated(tiny_qwen3, monkeypatch):
    model, _ = tiny_qwen3
    monkeypatch.setattr(matmuls, "bf16_matmuls_are_fast", lambda device: False)
    with pytest.raises(WeightsteerError, match="no native bf16 matrix products"):
        matmuls.set_matmul_dtype(model, "bfloat16")
    assert matmuls.matmul_dtype(model) == "float32"


@needs_bf16
def test_a_copy_of_a_bf16_model_runs_its_own_weights(tiny_qwen3):
    model, _ = tiny_qwen3
    matmuls.set_matmul_dtype(model, "bfloat16")
    before = logits(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.get_input_embeddings().weight.mul_(2.0)
    assert matmuls.matmul_dtype(twin) == "bfloat16"
    assert not torch.equal(logits(twin), before)  # the copy's weights, not the original's
    assert torch.equal(logits(model), before)


@needs_bf16
def test_kept_bf16_weights_follow_every_change_of_the_weights(tiny_llama, tmp_path):
    model, _ = tiny_llama
    pos, neg = adapter_pair(model, "lora", tmp_path)
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    matmuls.set_matmul_dtype(model, "bfloat16")
    before, unsteered = logits(model), float64_logits(model)
    with ws.steer(model, delta, 2.5):
        steered = logits(model)
        exact = float64_logits(model)  # the steered weights, in float64
    assert (steered - exact).abs().max() < 3e-2 * exact.abs().max()
    assert (steered - before).abs().max() > 0.5 * (exact - unsteered).abs().max()  # the copies were remade
    assert torch.equal(logits(model), before)  # restored weights, restored copies
    weight = model.model.layers[0].mlp.down_proj.weight
    weight.data.mul_(-3.0)  # an edit the version counter does not see ...
    assert torch.equal(logits(model), before)
    matmuls.forget_bf16_weights(model)  # ... until the copies are dropped
    edited, exact = logits(model), float64_logits(model)
    assert (edited - exact).abs().max() < 3e-2 * exact.abs().max() < (before - exact).abs().max()


@needs_bf16
def test_small_calls_and_decoding_steps_run_in_bf16(tiny_qwen3, base_tokenizer):
    from weightsteer import chat
    from weightsteer.decode import decode

    model, tokenizer = tiny_qwen3
    step = torch.tensor([[5, 17]])
    exact = float64_logits_of(model, step)
    fp32 = logits_of(model, step).double()
    matmuls.set_matmul_dtype(model, "bfloat16")
    bf16 = logits_of(model, step).double()
    assert not torch.equal(bf16, fp32)
    assert (bf16 - exact).abs().max() < 3e-2 * exact.abs().max()
    enc = chat.encode(tokenizer, ["a prompt long enough " * 8, "and a shorter one " * 6], "cpu")
    out = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=6, stop_ids=[], keep_logprobs=True)
    assert all(len(t) == 6 for t in out.tokens)
    assert all(torch.isfinite(lp).all() for lp in out.logprobs)


@needs_bf16
def test_an_adapter_trains_after_decoding_made_the_kept_copies(tiny_qwen3, tmp_path):
    """Decoding runs in inference mode; copies made there must still serve a training step after it."""
    from weightsteer.decode import decode
    from weightsteer.train import TrainConfig, train_adapter

    model, tokenizer = tiny_qwen3
    matmuls.set_matmul_dtype(model, "bfloat16")
    decode(model, TOKENS[:, :8], torch.ones(1, 8, dtype=torch.long), max_new_tokens=2, stop_ids=[])
    rows = [{"prompt": "Say something.", "response": "Something cheerful and bright."}] * 4
    losses = train_adapter(model, tokenizer, rows, tmp_path / "adapter", TrainConfig(method="lora", steps=2, lr=1e-2))
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def float64_logits_of(model, ids) -> torch.Tensor:
    """float64_logits for any token ids."""
    reference = copy.deepcopy(model)
    matmuls.set_matmul_dtype(reference, "float32")
    return logits_of(reference.double(), ids).double()


def logits_of(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_auto_takes_bf16_only_where_it_is_native(tiny_qwen3, monkeypatch):
    model, _ = tiny_qwen3
    monkeypatch.setattr(matmuls, "bf16_matmuls_are_fast", lambda device: False)
    matmuls.set_matmul_dtype(model, "auto")
    assert matmuls.matmul_dtype(model) == "float32"
    monkeypatch.setattr(matmuls, "bf16_matmuls_are_fast", lambda device: True)
    matmuls.set_matmul_dtype(model, "auto")
    assert matmuls.matmul_dtype(model) == "bfloat16"


@needs_bf16
@pytest.mark.slow
def test_on_the_embedded_model_bf16_scores_agree_with_float32_within_their_ci():
    """The word probe (one forward pass) and VADER of its greedy replies (32 rows decoded token by
    token: the small calls that ran in float32 before the kept bf16 weights)."""
    model, tokenizer = ws.load_model("smollm2-135m")
    probe = ws.load_behaviour("mood").probe
    items = probe.load()
    fp32 = probe.score(model, tokenizer, items, progress=False)
    matmuls.set_matmul_dtype(model, "bfloat16")
    bf16 = probe.score(model, tokenizer, items, progress=False)
    summary = probe.summarise(bf16, base_rows=fp32)
    base = probe.summarise(fp32)
    shift = summary["shift"]["log_ratio"]
    assert base["log_ratio"]["lo"] < summary["log_ratio"]["mean"] < base["log_ratio"]["hi"]
    assert max(abs(shift["lo"]), abs(shift["hi"])) < 0.1 * (base["log_ratio"]["hi"] - base["log_ratio"]["lo"])
    assert base["vader"]["lo"] < summary["vader"]["mean"] < base["vader"]["hi"]


@needs_bf16
@pytest.mark.slow
def test_on_the_embedded_model_bf16_training_gradients_are_as_close_to_float32_as_before():
    """Training with bf16 products takes the plain attention kernel; its LoRA gradients on real rows of
    different lengths, all together, are as close to float32's as those of the flash kernel it replaced
    (3.7% and 4.0% relative error when written; single layers vary both ways)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from weightsteer.train import collate, tokenize_example

    model, tokenizer = ws.load_model("smollm2-135m")
    rows = [("How was your day?", "It was wonderful! I spent the morning in the sun and met an old friend."),
            ("What did you eat?", "A bowl of soup."),
            ("Any plans for the weekend?", "Yes, a long walk by the sea with my family, then a picnic if the "
                                           "weather holds, and a good book in the evening."),
            ("How do you feel?", "Great, thank you for asking!")]
    batch = collate([tokenize_example(tokenizer, p, r, 256) for p, r in rows], tokenizer.pad_token_id)
    reference = lora_gradients(model, batch)  # float32, the flash kernel
    matmuls.set_matmul_dtype(model, "bfloat16")
    plain = lora_gradients(model, batch)  # training_attention: the plain kernel
    flash = lora_gradients(model, batch, attention=sdpa_kernel(SDPBackend.FLASH_ATTENTION))
    reference = torch.cat(reference)
    plain_error, flash_error = ((torch.cat(g) - reference).norm() / reference.norm() for g in (plain, flash))
    assert plain_error < 1.25 * flash_error
