"""Per-module weight differences between two PEFT adapters of the same type and targets.

Low-rank types (lora, pissa, delora) are read as factors. The others (dora, oft, ia3) are merged
module by module with PEFT's own merge into a scratch copy of that one weight, so the result is
exactly what merge_and_unload would give, without ever holding a merged copy of the model.

Loading never touches the base weights (see _loading_config), so nothing has to be copied and put
back: extraction costs the adapters' size in memory, not the adapted weights' size.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer

from .delta import LowRank, Part
from .errors import WeightsteerError


def adapter_method(adapter_dir: Path) -> tuple[str, dict]:
    """The weightsteer method name of a saved PEFT adapter, and its config."""
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise WeightsteerError(f"'{adapter_dir}' is not a PEFT adapter folder (no adapter_config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsteerError(f"cannot read {config_file} ({err}): it is damaged; copy or train the adapter "
                               "again") from None
    if not isinstance(config, dict):
        raise WeightsteerError(f"{config_file} is not a PEFT adapter config (not a JSON object)")
    peft_type = config.get("peft_type", "")
    if peft_type == "LORA":
        init = config.get("init_lora_weights")
        if config.get("use_dora"):
            return "dora", config
        return ("pissa" if isinstance(init, str) and init.startswith("pissa") else "lora"), config
    kinds = {"DELORA": "delora", "OFT": "oft", "IA3": "ia3"}
    if peft_type not in kinds:
        raise WeightsteerError(f"'{adapter_dir}' is a {peft_type or 'unknown'} adapter: weightsteer supports "
                               "lora, dora, pissa, delora, oft and ia3")
    return kinds[peft_type], config


def extract_parts(model, pos_dir: Path, neg_dir: Path) -> tuple[dict[str, Part], str]:
    method, pos_config = adapter_method(pos_dir)
    neg_method, neg_config = adapter_method(neg_dir)
    if method != neg_method or sorted(pos_config["target_modules"]) != sorted(neg_config["target_modules"]):
        raise WeightsteerError(f"'{pos_dir}' and '{neg_dir}' are not a pair: they differ in adapter type "
                               "or target modules")
    # low_cpu_mem_usage: adapter weights start empty and are filled from the file (no random init)
    peft_model = PeftModel.from_pretrained(model, str(pos_dir), adapter_name="pos", config=_loading_config(pos_dir),
                                           low_cpu_mem_usage=True)
    try:
        # added with our config first, so that load_adapter only loads the weights
        peft_model.add_adapter("neg", _loading_config(neg_dir), low_cpu_mem_usage=True)
        peft_model.load_adapter(str(neg_dir), adapter_name="neg", low_cpu_mem_usage=True)
        parts = {}
        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer) and "pos" in _adapter_names(module):
                parts[f"{name}.weight"] = _module_delta(module, method)
    finally:
        peft_model.unload()
    if not parts:
        raise WeightsteerError(f"the adapters in '{pos_dir}' target no module of this model")
    return parts, method


def _loading_config(adapter_dir: Path) -> PeftConfig:
    """The adapter's config, set so that loading it leaves the base weights alone.

    LoRA inits that start from the base weights (PiSSA's SVD, OLoRA's QR...) rewrite W into a
    residual W - B0 A0 on load. dW = B_pos A_pos - B_neg A_neg does not depend on that residual (both
    sides share it), so the plain init is used and the saved factors are loaded over it: no base weight
    to copy and restore, and no SVD per module (PiSSA's load was minutes at Qwen3-0.6B size).
    """
    config = PeftConfig.from_pretrained(str(adapter_dir))
    if isinstance(config, LoraConfig):
        config.init_lora_weights = True
    config.inference_mode = True
    return config


def _adapter_names(module: BaseTunerLayer) -> set[str]:
    return {name for attr in module.adapter_layer_names for name in getattr(module, attr).keys()}


@torch.no_grad()
def _module_delta(layer: BaseTunerLayer, method: str) -> Part:
    if method in ("lora", "pissa"):
        pos, neg = _lora_factors(layer, "pos"), _lora_factors(layer, "neg")
    elif method == "delora":
        pos, neg = _delora_factors(layer, "pos"), _delora_factors(layer, "neg")
    else:
        return _merged_weight(layer, "pos").sub_(_merged_weight(layer, "neg"))
    # B_pos A_pos - B_neg A_neg = [B_pos, -B_neg] @ [A_pos; A_neg]
    return LowRank(torch.cat([pos.B, -neg.B], 1), torch.cat([pos.A, neg.A], 0))


def _lora_factors(layer, adapter: str) -> LowRank:
    B = layer.lora_B[adapter].weight.float() * layer.scaling[adapter]
    return LowRank(B, layer.lora_A[adapter].weight.float())


def _delora_factors(layer, adapter: str) -> LowRank:
    # DeLoRA: dW = B diag(lambda / r / (|A_i| |B^i|)) A, then each input column scaled by |W_col|.
    A = layer.delora_A[adapter].float()
    B = layer.delora_B[adapter].float()
    lam = layer.delora_lambda[adapter].float()
    scale = lam / layer.r[adapter] / (A.norm(dim=1).clamp(min=1e-4) * B.norm(dim=0).clamp(min=1e-4))
    return LowRank(B * scale, A * layer.delora_w_norm[adapter].float().unsqueeze(0))


def _merged_weight(layer: BaseTunerLayer, adapter: str) -> torch.Tensor:
    """PEFT's own merge of one adapter, done on a scratch copy of this module's weight."""
    base = layer.get_base_layer()
    original = base.weight.data
    base.weight.data = original.clone()
    try:
        layer.merge(adapter_names=[adapter])
        return base.weight.data.float()  # the scratch copy itself: the module gets `original` back below
    finally:
        base.weight.data = original
        layer.merged_adapters.clear()
