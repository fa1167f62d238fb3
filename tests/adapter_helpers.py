"""Make pairs of saved adapters with random (non-zero) weights, fast, for dW tests."""

from __future__ import annotations

import torch
from peft import get_peft_model

from weightsteer.adapters import decoder_layers, middle_layers, peft_config, target_module_names


def random_adapter(model, method: str, out_dir, seed: int, rank: int = 4) -> None:
    """Save an adapter of `method` whose trainable weights are its init plus seeded noise."""
    layers = middle_layers(len(decoder_layers(model)))
    targets = target_module_names(model, layers)
    saved = {n: model.get_submodule(n).weight.detach().clone() for n in targets}
    torch.manual_seed(0)  # the same init for every side, as in training
    peft_model = get_peft_model(model, peft_config(model, method, targets, rank))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(str(out_dir))
    peft_model.unload()
    with torch.no_grad():
        for n, w in saved.items():
            model.get_submodule(n).weight.copy_(w)


def adapter_pair(model, method: str, root, rank: int = 4):
    pos, neg = root / f"{method}-pos", root / f"{method}-neg"
    random_adapter(model, method, pos, seed=1, rank=rank)
    random_adapter(model, method, neg, seed=2, rank=rank)
    return pos, neg
