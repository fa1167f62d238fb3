"""PEFT configurations for the six supported adapter types, targeted at the middle layers."""

from __future__ import annotations

import torch
from peft import DeloraConfig, IA3Config, LoraConfig, OFTConfig, PeftConfig

from .errors import WeightsteerError

METHODS = ("lora", "dora", "pissa", "delora", "oft", "ia3")
LOW_RANK = ("lora", "pissa", "delora")  # dW is exactly low rank: kept factored
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FEEDFORWARD_MODULES = ("down_proj",)  # IA3 scales these on the input side

# Learning rates that move the embedded model in 30 steps without breaking it (see README);
# the adapter types differ by orders of magnitude in how far one Adam step moves the weights.
DEFAULT_LR = {"lora": 2e-4, "dora": 2e-4, "pissa": 5e-5, "delora": 2e-3, "oft": 5e-4, "ia3": 1e-2}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise WeightsteerError(f"unknown adapter '{method}': choose one of {', '.join(METHODS)}")
    return method


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks, found by its length rather than by architecture name."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and name.endswith("layers"):
            return module
    raise WeightsteerError(f"could not find the {n} decoder layers of {type(model).__name__}")


def middle_layers(n_layers: int, span: tuple[float, float] = (0.25, 0.75)) -> list[int]:
    lo, hi = span
    if not 0 <= lo < hi <= 1:
        raise WeightsteerError(f"layer span must satisfy 0 <= start < end <= 1, got {lo}-{hi}")
    return list(range(int(round(lo * n_layers)), max(int(round(hi * n_layers)), int(round(lo * n_layers)) + 1)))


def target_module_names(model: torch.nn.Module, layers: list[int], modules=LINEAR_MODULES) -> list[str]:
    """Full names of the Linear modules to adapt, e.g. model.layers.7.self_attn.q_proj."""
    stack = decoder_layers(model)
    prefix = next(name for name, m in model.named_modules() if m is stack)
    names = [f"{prefix}.{i}.{sub}" for i in layers for sub, m in stack[i].named_modules()
             if isinstance(m, torch.nn.Linear) and sub.split(".")[-1] in modules]
    if not names:
        raise WeightsteerError(f"none of the modules {list(modules)} are Linear layers in "
                               f"{type(model).__name__}: pass --modules with its layer names")
    return names


def oft_block_size(in_features: list[int]) -> int:
    """The largest usual OFT block size that divides every targeted layer's input width."""
    return next((b for b in (32, 16, 8, 4, 2) if all(n % b == 0 for n in in_features)), 1)


def peft_config(model: torch.nn.Module, method: str, targets: list[str], rank: int = 8,
                oft_block: int = 0) -> PeftConfig:
    """oft_block: OFT's block size (0: the largest usual size that fits, oft_block_size)."""
    check_method(method)
    in_features = [model.get_submodule(t).in_features for t in targets]
    if method in ("lora", "dora", "pissa"):
        return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets,
                          use_dora=method == "dora",
                          # exact SVD so that loading the adapter rebuilds the same residual base
                          init_lora_weights="pissa" if method == "pissa" else True)
    if method == "delora":
        return DeloraConfig(r=rank, target_modules=targets)
    if method == "oft":
        if oft_block and any(n % oft_block for n in in_features):
            raise WeightsteerError(f"--oft-block-size {oft_block} does not divide every adapted layer's input width "
                                   f"({sorted(set(in_features))}): choose a divisor of all of them")
        return OFTConfig(r=0, oft_block_size=oft_block or oft_block_size(in_features), target_modules=targets)
    feedforward = [t for t in targets if t.split(".")[-1] in FEEDFORWARD_MODULES]
    return IA3Config(target_modules=targets, feedforward_modules=feedforward)
