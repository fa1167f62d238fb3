"""Fine-tune one PEFT adapter on one side's responses (persona stripped, prompt tokens masked)."""

from __future__ import annotations

import json
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
from .atomic import atomic_path

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

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


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


def batch_order(n_rows: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Seeded epochs of shuffled indices, so both sides see their rows in the same order."""
    gen = torch.Generator().manual_seed(seed)
    flat: list[int] = []
    while len(flat) < steps * batch_size:
        flat += torch.randperm(n_rows, generator=gen).tolist()
    return [flat[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


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
    peft_model = get_peft_model(model, peft_config(model, cfg.method, targets, cfg.rank))
    losses = []
    try:
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
        bar = tqdm(batch_order(len(examples), cfg.steps, cfg.batch_size, cfg.seed), desc=desc, unit="step")
        for indices in bar:
            batch = collate([examples[i] for i in indices], tokenizer.pad_token_id)
            loss = peft_model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        peft_model.eval()
        with atomic_path(out_dir) as tmp:
            peft_model.save_pretrained(tmp)
            (tmp / "train_log.json").write_text(json.dumps({"config": asdict(cfg), "loss": losses}, indent=2))
    finally:
        peft_model.unload()
        with torch.no_grad():
            for name, weight in saved.items():
                model.get_submodule(name).weight.copy_(weight)
        model.eval()
    return losses
