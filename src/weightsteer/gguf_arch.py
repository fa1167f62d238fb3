"""What llama.cpp calls a Hugging Face model's architecture and tensors, for the GGUF writers.

Facts taken from llama.cpp's converter (convert_hf_to_gguf.py), not its code:
- Llama (and SmolLM2, which is a Llama) is GGUF architecture `llama`, and its q_proj and k_proj
  rows are reordered per head: Hugging Face keeps the two rotary halves of a head as blocks
  [x_0..x_{d/2-1}, y_0..y_{d/2-1}], llama.cpp's `llama` rope reads them interleaved
  [x_0, y_0, x_1, y_1, ...]. k_proj is reordered per key-value head.
- Qwen3 is `qwen3` and keeps Hugging Face's row order (llama.cpp ropes it in NeoX mode).
Tensor names (blk.N.attn_q.weight, ...) come from the gguf package's own name map.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import numpy as np

from .errors import WeightsteerError


@dataclass(frozen=True)
class GGUFArch:
    arch: gguf.MODEL_ARCH
    interleave_rope: bool  # q/k rows reordered to llama.cpp's interleaved rope layout
    n_layers: int
    n_head: int
    n_kv_head: int

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


WRITTEN_BY_KEY = "weightsteer.written_by"  # marks a GGUF weightsteer wrote: only such a file is ever replaced


def written_by_weightsteer(path) -> bool:
    try:
        return WRITTEN_BY_KEY in gguf.GGUFReader(str(path)).fields
    except Exception:  # not a GGUF at all (any parse error): certainly not ours
        return False


# Hugging Face model_type -> (GGUF architecture, q/k rows interleaved)
SUPPORTED = {
    "llama": (gguf.MODEL_ARCH.LLAMA, True),
    "qwen3": (gguf.MODEL_ARCH.QWEN3, False),
}


def gguf_arch(config) -> GGUFArch:
    """The GGUF architecture of a transformers config, or one line saying it is not supported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        raise WeightsteerError(f"cannot write GGUF for a '{model_type}' model: weightsteer names only "
                               f"{', '.join(sorted(SUPPORTED))} for llama.cpp; use --format lora and llama.cpp's "
                               "convert_lora_to_gguf.py --base MODEL_FOLDER instead")
    arch, interleave = SUPPORTED[model_type]
    n_head = config.num_attention_heads
    return GGUFArch(arch, interleave, config.num_hidden_layers, n_head,
                    getattr(config, "num_key_value_heads", None) or n_head)


def tensor_name(arch: GGUFArch, hf_name: str) -> str:
    """blk.N.attn_q.weight for model.layers.N.self_attn.q_proj.weight, and so on."""
    mapping = gguf.get_tensor_name_map(arch.arch, arch.n_layers)
    name = mapping.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise WeightsteerError(f"'{hf_name}' has no llama.cpp name in architecture '{arch.name}': "
                               "it cannot be written to GGUF")
    return name


def rope_heads(arch: GGUFArch, hf_name: str) -> int | None:
    """How many heads' rows to interleave for this tensor (None: keep the order)."""
    if not arch.interleave_rope:
        return None
    if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        return arch.n_head
    if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        return arch.n_kv_head
    return None


def interleave_rows(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """Within each head of d rows, [x_0..x_{d/2-1}, y_0..y_{d/2-1}] -> [x_0, y_0, x_1, y_1, ...]."""
    out_dim = rows.shape[0]
    half = out_dim // n_heads // 2
    return rows.reshape(n_heads, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
