"""The dtype of a model's matrix products: float32 (the default), or bfloat16 via autocast.

On a CPU with bf16 matrix units (AMX, AVX512-BF16) a bf16 matrix product is about 6x a float32
one, but a model whose weights are cast to bf16 is hardly faster: its norms, rotary embeddings,
softmax and attention run in bf16 on kernels much slower than their float32 ones. Autocast takes
the fast part only: inside the model's forward pass each linear layer and matrix product casts its
inputs to bf16, everything else stays float32 (and so do calls on fewer than MIN_BF16_TOKENS
tokens, where re-casting the weights costs more than it saves). On SmolLM2-135M, one thread, a
16 x 128 forward pass took 1.7 s against 5.6 s in float32 and 4.8 s with bf16 weights
(docs/performance.md).

Only the forward pass is wrapped, so the weights stay float32 and so does every piece of
arithmetic done on them outside a forward pass: adding alpha * dW and restoring the weights bit for
bit, dW extraction, PEFT's merges, exports. What changes is the precision of the activations: a
bf16 product carries about 3 significant digits, so scores move by bf16 rounding (measured against
float32 on the embedded model in docs/performance.md). Results made in bf16 are kept apart from
float32 ones: every stage key holds `compute_key(model)`, which is empty for float32, so runs made
before this option existed are still found.
"""

from __future__ import annotations

import types

import torch

from .errors import WeightsteerError

MATMUL_DTYPES = ("float32", "bfloat16")
CHOICES = (*MATMUL_DTYPES, "auto")  # auto: bfloat16 where the device has native bf16 products, else float32
# Autocast casts every weight to bf16 again at every call, which costs about as much as a float32 pass
# over a few dozen tokens: a decoding step of SmolLM2-135M (one thread) took 190 / 252 / 391 / 546 ms in
# float32 and 272 / 289 / 301 / 383 ms with bf16 products at 16 / 32 / 64 / 96 rows. So a call on fewer
# tokens than this (a decoding step of a small batch) runs in float32; a KV cache filled in bf16 is
# promoted to float32 as such a step appends to it.
MIN_BF16_TOKENS = 48
_ATTRIBUTE = "weightsteer_matmul_dtype"


def bf16_matmuls_are_fast(device: torch.device) -> bool:
    """Whether this device has native bf16 matrix products (without them autocast emulates bf16, slowly)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def set_matmul_dtype(model: torch.nn.Module, dtype: str) -> None:
    """Run every later forward pass of `model` with its matrix products in `dtype` (one of CHOICES)."""
    if dtype not in CHOICES:
        raise WeightsteerError(f"unknown matmul dtype '{dtype}': choose {', '.join(CHOICES)}")
    if dtype == "auto":
        dtype = "bfloat16" if bf16_matmuls_are_fast(next(model.parameters()).device) else "float32"
    if dtype == matmul_dtype(model):
        return
    if dtype == "float32":
        del model.forward  # back to the class's own forward
    else:
        device = next(model.parameters()).device
        if not bf16_matmuls_are_fast(device):
            raise WeightsteerError(f"this {device.type.upper()} has no native bf16 matrix products, so bfloat16 "
                                   "matmuls would be slower than float32: use --matmul-dtype float32")
        model.forward = types.MethodType(_forward_in_bf16, model)
    setattr(model, _ATTRIBUTE, dtype)


def _forward_in_bf16(self, *args, **kwargs):
    # a method bound to the model (not a closure over its forward), so a deepcopy of the model is
    # rebound to the copy and runs the copy's weights
    forward = type(self).forward
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is not None and ids.numel() < MIN_BF16_TOKENS:
        return forward(self, *args, **kwargs)
    with torch.autocast(next(self.parameters()).device.type, dtype=torch.bfloat16):
        return forward(self, *args, **kwargs)


def matmul_dtype(model: torch.nn.Module) -> str:
    return getattr(model, _ATTRIBUTE, "float32")


def compute_key(model: torch.nn.Module) -> dict:
    """What a stage key adds for the model's compute precision: nothing for float32 (so keys made before
    the option existed still match), {"matmuls": "bfloat16"} otherwise."""
    dtype = matmul_dtype(model)
    return {} if dtype == "float32" else {"matmuls": dtype}
