"""Cosine similarity between a steering direction and another weight change (a fine-tune's, or a
second direction): does a fine-tune move the weights toward "evil" or "dishonest"? (the paper's
monitoring experiment).

Inner products are taken on factored forms where they exist: <B1 A1, B2 A2>_F equals
sum((B1^T B2) * (A1 A2^T)), which needs only k x k products, and <B A, D>_F = sum(B * (D A^T)).
A PEFT LoRA folder is read straight from its files (scaling lora_alpha / r, or / sqrt(r) with
rsLoRA), without the model. Every other adapter (DoRA, PiSSA, OFT, IA3, DeLoRA, LoRA with unusual
options) changes weights in ways only PEFT knows, so its change is taken with the base model:
PEFT's own merge of each module minus the original weight, dense, one module at a time.
Only weights count: bias changes and modules_to_save are not part of either side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists
from peft.utils.other import get_pattern_key
from safetensors import SafetensorError
from safetensors.torch import load_file

from .atomic import write_json
from .delta import LowRank, Part, WeightDelta, same_kind
from .errors import WeightsteerError
from .extract import adapter_method
from .models import base_fingerprint, local_model_folder, model_label

LORA_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


# ---- inner products ---------------------------------------------------------------------------

def inner(a: Part, b: Part) -> float:
    """<a, b>_F without forming B @ A."""
    if isinstance(a, LowRank) and isinstance(b, LowRank):
        return float(((a.B.T @ b.B).double() * (a.A @ b.A.T).double()).sum())
    if isinstance(b, LowRank):
        a, b = b, a
    if isinstance(a, LowRank):
        return float((a.B.double() * (b @ a.A.T).double()).sum())
    return float(torch.dot(a.flatten(), b.flatten()))


@dataclass
class Similarity:
    overall: float
    layers: list[dict]  # {"layer", "cosine"}, in layer order
    modules: list[dict]  # {"name", "cosine", "contribution", "norm_a", "norm_b"}, by |contribution|

    def to_json(self) -> dict:
        return {"overall": self.overall, "layers": self.layers, "modules": self.modules}


def cosine(ip: float, sq_a: float, sq_b: float) -> float:
    return ip / math.sqrt(sq_a * sq_b) if sq_a > 0 and sq_b > 0 else 0.0


def similarity(a: WeightDelta, b: WeightDelta) -> Similarity:
    """Overall, per-layer (all modules of a layer as one vector) and per-module cosines. A module in
    only one of the two counts toward that one's norm with an inner product of zero."""
    check_same_base(a, b)
    names = list(a.parts) + [n for n in b.parts if n not in a.parts]
    stats = {}
    for name in names:
        pa, pb = a.parts.get(name), b.parts.get(name)
        if pa is not None and pb is not None and tuple(pa.shape) != tuple(pb.shape):
            raise WeightsteerError(f"'{name}' has shape {tuple(pa.shape)} in one and {tuple(pb.shape)} in "
                                   "the other: they belong to different models")
        stats[name] = (inner(pa, pb) if pa is not None and pb is not None else 0.0,
                       inner(pa, pa) if pa is not None else 0.0, inner(pb, pb) if pb is not None else 0.0)
    total_a, total_b = sum(s[1] for s in stats.values()), sum(s[2] for s in stats.values())
    overall = cosine(sum(s[0] for s in stats.values()), total_a, total_b)
    by_layer: dict[int | None, list[float]] = {}
    for name, (ip, sq_a, sq_b) in stats.items():
        acc = by_layer.setdefault(layer_of(name), [0.0, 0.0, 0.0])
        acc[0], acc[1], acc[2] = acc[0] + ip, acc[1] + sq_a, acc[2] + sq_b
    layers = [{"layer": layer, "cosine": cosine(*acc)}
              for layer, acc in sorted(by_layer.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
    modules = [{"name": name, "cosine": cosine(ip, sq_a, sq_b),
                "contribution": cosine(ip, total_a, total_b),  # these sum to the overall cosine
                "norm_a": math.sqrt(sq_a), "norm_b": math.sqrt(sq_b)} for name, (ip, sq_a, sq_b) in stats.items()]
    modules.sort(key=lambda m: -abs(m["contribution"]))
    return Similarity(overall, layers, modules)


def layer_of(name: str) -> int | None:
    """The block index in a parameter name (model.layers.7.mlp.down_proj.weight -> 7)."""
    match = re.search(r"\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def check_same_base(a: WeightDelta, b: WeightDelta) -> None:
    fa, fb = a.meta.get("fingerprint"), b.meta.get("fingerprint")
    if same_kind(fa, fb) and fa != fb:
        raise WeightsteerError(f"these belong to different base models ('{a.meta.get('base_model')}' and "
                               f"'{b.meta.get('base_model')}'): compare changes of the same model")


def format_table(sim: Similarity, top: int = 10) -> str:
    lines = [f"overall cosine: {sim.overall:+.4f}", "", "layer  cosine"]
    lines += [f"{'-' if row['layer'] is None else row['layer']:>5}  {row['cosine']:+.4f}" for row in sim.layers]
    lines += ["", f"top {min(top, len(sim.modules))} modules by contribution to the overall cosine",
              "contribution  cosine   module"]
    lines += [f"{m['contribution']:+12.4f}  {m['cosine']:+.4f}  {m['name']}" for m in sim.modules[:top]]
    return "\n".join(lines)


# ---- the other side: an adapter's change relative to its base ---------------------------------

def model_identity(name: str) -> str:
    """One spelling per model: an embedded name and its dense folder, or two paths to one folder,
    compare equal; a hub id is itself."""
    folder = local_model_folder(name)
    return str(folder.resolve()) if folder is not None else name.rstrip("/")


def check_adapter_base(delta: WeightDelta, adapter_dir: Path, allow_other: bool = False, warn=print) -> None:
    """Refuse an adapter trained on another base model than the direction's: a PEFT adapter records
    only its base model's name, so the names are compared (a cosine between changes of two different
    models means nothing, even where the shapes agree)."""
    _, config = adapter_method(adapter_dir)
    theirs, ours = config.get("base_model_name_or_path"), delta.meta.get("base_model")
    if not theirs or not ours:
        warn(f"weightsteer: warning: {'the adapter' if not theirs else 'the direction'} does not record its base "
             "model: cannot check that both belong to the same model")
        return
    if model_identity(str(theirs)) == model_identity(str(ours)):
        return
    if not allow_other:
        raise WeightsteerError(f"the adapter in '{adapter_dir}' was trained on '{theirs}' but the direction was made "
                               f"for '{ours}': compare changes of the same base model (if both names are the same "
                               "model, pass --allow-other-base)")
    warn(f"weightsteer: warning: the adapter's base '{theirs}' and the direction's '{ours}' differ by name; "
         "comparing anyway (--allow-other-base)")


def lora_file_change(adapter_dir: Path) -> WeightDelta | None:
    """scaling * B @ A for each module of a plain LoRA folder, read from its files; None when the
    adapter is of a kind whose change needs the base model."""
    method, config = adapter_method(adapter_dir)
    weights = adapter_dir / "adapter_model.safetensors"
    plain = (method == "lora" and not rewrites_base(config) and not config.get("fan_in_fan_out")
             and not config.get("modules_to_save"))
    if not plain or not weights.is_file():
        return None
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise WeightsteerError(f"cannot read {weights} ({err}): it is damaged; copy or train the adapter again") from None
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = LORA_KEY.fullmatch(key)
        if match is None:
            return None  # embeddings, biases, magnitudes: leave them to PEFT
        factors.setdefault(match.group(1), {})[match.group(2)] = tensor.float()
    alphas = config.get("alpha_pattern") or {}
    parts = {}
    for module, f in factors.items():
        if set(f) != {"A", "B"} or f["A"].dim() != 2 or f["B"].dim() != 2 or f["B"].shape[1] != f["A"].shape[0]:
            raise WeightsteerError(f"{weights} is damaged: module '{module}' lacks a lora_A/lora_B pair of matching "
                                   "rank; copy or train the adapter again")
        r = f["A"].shape[0]
        lora_alpha = alphas.get(get_pattern_key(alphas.keys(), module), config.get("lora_alpha", r))
        scaling = lora_alpha / math.sqrt(r) if config.get("use_rslora") else lora_alpha / r
        parts[f"{module}.weight"] = LowRank(scaling * f["B"], f["A"])
    return WeightDelta(parts, {"base_model": config.get("base_model_name_or_path"), "method": method})


def rewrites_base(config: dict) -> bool:
    """LoRA inits that start from the base weights (PiSSA, OLoRA...) replace W by a residual on load."""
    init = config.get("init_lora_weights", True)
    return config.get("peft_type") == "LORA" and isinstance(init, str) and init != "gaussian"


@torch.no_grad()
def merged_change(model, adapter_dir: Path) -> WeightDelta:
    """PEFT's merge of each adapted module minus its original weight, for any supported adapter.

    The adapter is loaded with its own init, as anyone using it would load it; where that init
    rewrites the base weights, the originals are kept to subtract and are put back afterwards.
    """
    method, config = adapter_method(adapter_dir)
    originals = {}
    if rewrites_base(config):
        peft_config = PeftConfig.from_pretrained(str(adapter_dir))
        originals = {name: module.weight.detach().clone() for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) and check_target_module_exists(peft_config, name)}
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name="fine_tune")
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise WeightsteerError(f"PEFT cannot load the adapter in '{adapter_dir}' onto this model ({reason}): "
                               "is it damaged, or made for another model?") from None
    try:
        parts = {}
        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer):
                before = originals[name] if name in originals else module.get_base_layer().weight
                parts[f"{name}.weight"] = _merged_weight(module, "fine_tune") - before.float()
    finally:
        peft_model.unload()
        for name, value in originals.items():
            model.get_submodule(name).weight.copy_(value)
    if not parts:
        raise WeightsteerError(f"the adapter in '{adapter_dir}' targets no module of this model")
    return WeightDelta(parts, {"base_model": model_label(model), "fingerprint": base_fingerprint(model),
                               "method": method})


def _merged_weight(layer: BaseTunerLayer, adapter: str) -> torch.Tensor:
    """PEFT's own merge of one adapter, into a scratch copy of this layer's weight (exact for every
    adapter type, where get_delta_weight is not: DoRA, OFT and IA3 are not additive)."""
    base = layer.get_base_layer()
    original = base.weight.data
    base.weight.data = original.clone()
    try:
        layer.merge(adapter_names=[adapter])
        return base.weight.data.float()
    finally:
        base.weight.data = original
        layer.merged_adapters.clear()


def save_json(sim: Similarity, path) -> None:
    write_json(path, sim.to_json())
