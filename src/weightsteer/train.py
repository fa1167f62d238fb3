"""Fine-tune one PEFT adapter on one side's responses (persona stripped, prompt tokens masked)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from peft import get_peft_model
from tqdm.auto import tqdm

from . import chat
from .adapters import (
    DEFAULT_LR,
    LINEAR_MODULES,
    check_method,
    decoder_layers,
    middle_layers,
    peft_config,
    target_module_names,
)
from .atomic import atomic_path, json_text
from .matmuls import training_attention

IGNORE = -100


@dataclass
class TrainConfig:
    method: str = "lora"
    rank: int = 8
    lr: float | None = None  # None: the method's default in adapters.DEFAULT_LR
    steps: int = 30
    batch_size: int = 4
    layer_span: tuple[float, float] = (0.25, 0.75)
    modules: tuple[str, ...] = field(default=LINEAR_MODULES)
    max_length: int = 256
    seed: int = 0
    # Added for the seed preset (presets.py); at these defaults training is exactly as before.
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step
    weight_decay: float = 0.0  # AdamW's
    warmup_steps: int = 0
    schedule: str = "constant"  # or "linear": warmup, then linear decay to 0 (transformers' Trainer default)
    oft_block: int = 0  # OFT block size; 0: the largest usual size that fits (adapters.oft_block_size)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def key(self) -> dict:
        """The stage key: every field, except the later ones while they keep their defaults (so adapters
        trained before those fields existed are not trained again)."""
        later = {"grad_accum": 1, "weight_decay": 0.0, "warmup_steps": 0, "schedule": "constant", "oft_block": 0}
        return {k: v for k, v in asdict(self).items() if k not in later or v != later[k]}


def tokenize_example(tokenizer, prompt: str | list[dict], response: str, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels): the prompt (a user turn without any persona, or a list of chat messages)
    rendered as the model's chat; labels only on the reply."""
    turns = chat.messages(prompt) if isinstance(prompt, str) else prompt
    prompt = tokenizer(chat.render(tokenizer, turns), add_special_tokens=False).input_ids
    reply = tokenizer(response + chat.end_of_turn(tokenizer), add_special_tokens=False).input_ids
    ids = (prompt + reply)[:max_length]
    labels = ([IGNORE] * len(prompt) + reply)[:max_length]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding: training positions must start at 0 for every row."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), IGNORE)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, : len(x)], labels[row, : len(y)], mask[row, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def reply_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean next-token cross-entropy over the reply tokens (what `labels=` would give), with the
    output head run only at the positions that predict a reply token in some row: the prompt's
    positions need no logits, and the head over a 49k-token vocabulary is a fifth of a small model."""
    targets = batch["labels"][:, 1:]
    keep = (targets != IGNORE).any(0).nonzero()[:, 0]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                   logits_to_keep=keep).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets[:, keep].flatten(),
                                             ignore_index=IGNORE)


def batch_order(n_rows: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Seeded epochs of shuffled indices, so both sides see their rows in the same order."""
    gen = torch.Generator().manual_seed(seed)
    flat: list[int] = []
    while len(flat) < steps * batch_size:
        flat += torch.randperm(n_rows, generator=gen).tolist()
    return [flat[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning-rate multiplier at optimizer step `step` (0-based): linear warmup over warmup_steps,
    then constant, or for the "linear" schedule a linear decay to 0 at the last step."""
    if step < cfg.warmup_steps:
        return step / cfg.warmup_steps
    if cfg.schedule == "linear":
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))
    return 1.0


def train_adapter(model, tokenizer, rows: list[dict], out_dir, cfg: TrainConfig, desc: str = "train") -> list[float]:
    """Train one adapter on `rows` (prompt, response) and save it with save_pretrained at `out_dir`.

    The base model is left exactly as it was (PiSSA rewrites base weights at init, so they are
    restored). Returns the loss per step.
    """
    check_method(cfg.method)
    layers = middle_layers(len(decoder_layers(model)), cfg.layer_span)
    targets = target_module_names(model, layers, cfg.modules)
    saved = {name: model.get_submodule(name).weight.detach().clone() for name in targets}
    examples = [tokenize_example(tokenizer, r["prompt"], r["response"], cfg.max_length) for r in rows]
    device = next(model.parameters()).device

    torch.manual_seed(cfg.seed)  # the same initialisation for the pos and the neg adapter
    peft_model = get_peft_model(model, peft_config(model, cfg.method, targets, cfg.rank, cfg.oft_block))
    losses = []
    try:
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))
        batches = batch_order(len(examples), cfg.steps * cfg.grad_accum, cfg.batch_size, cfg.seed)
        bar = tqdm(range(cfg.steps), desc=desc, unit="step")
        with training_attention(model):
            for step in bar:
                step_loss = 0.0
                for indices in batches[step * cfg.grad_accum:(step + 1) * cfg.grad_accum]:
                    batch = collate([examples[i] for i in indices], tokenizer.pad_token_id)
                    loss = reply_loss(peft_model, {k: v.to(device) for k, v in batch.items()}) / cfg.grad_accum
                    loss.backward()
                    step_loss += loss.item()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(step_loss)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        peft_model.eval()
        with atomic_path(out_dir) as tmp:
            peft_model.save_pretrained(tmp)
            (tmp / "train_log.json").write_text(json_text({"config": asdict(cfg), "loss": losses}, indent=2))
    finally:
        peft_model.unload()
        with torch.no_grad():
            for name, weight in saved.items():
                model.get_submodule(name).weight.copy_(weight)
        model.eval()
    return losses
