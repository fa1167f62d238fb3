"""The dtype of a model's matrix products: float32 (the default), or bfloat16.

On a CPU with bf16 matrix units (AMX, AVX512-BF16) a bf16 matrix product is about 6x a float32
one, but a model whose weights are cast to bf16 is hardly faster: its norms, rotary embeddings,
softmax and attention run in bf16 on kernels much slower than their float32 ones. So only the
products are bf16: the model's forward pass runs under autocast (each product casts its inputs to
bf16, everything else stays float32), and each linear layer multiplies by a bf16 copy of its weight
made once and kept until the weight changes. Autocast alone would cast every weight again at every
call, which made a decoding step of a small batch slower than float32 (SmolLM2-135M, one thread, 4
rows: 169 ms against 101 ms in float32; with the kept copies 64 ms; docs/performance.md).

Only the forward pass is changed, so the weights stay float32 and so does every piece of arithmetic
done on them outside a forward pass: adding alpha * dW and restoring the weights bit for bit, dW
extraction, PEFT's merges, exports. A kept copy is remade when its weight's storage or version
counter changes, which every in-place edit of the weight itself does (steering's `copy_`, an
optimizer step); an edit through `weight.data` does not count as one, so code that edits weights that
way must call `forget_bf16_weights(model)`. Weights that are being trained (requires_grad) are cast
at each call, inside the autograd graph. What changes is the precision of the activations: a bf16
product carries about 3 significant digits, so scores move by bf16 rounding (measured against
float32 on the embedded model in docs/performance.md). Results made in bf16 are kept apart from
float32 ones: every stage key holds `compute_key(model)`, which is empty for float32, so runs made
before this option existed are still found.
"""

from __future__ import annotations

import contextlib
import types

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .errors import WeightsteerError

MATMUL_DTYPES = ("float32", "bfloat16")
CHOICES = (*MATMUL_DTYPES, "auto")  # auto: bfloat16 where the device has native bf16 products, else float32
# 2: every product in bf16, with kept weight copies (1: calls on fewer than 48 tokens ran in float32, because
# autocast's re-cast of every weight made them slower); results of 1 are not reused
KEY_VERSION = 2
_ATTRIBUTE = "weightsteer_matmul_dtype"
_KEPT = "weightsteer_bf16_weight"  # on each linear layer: (the weight it was made from, its version, bf16 copy)


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
    # plain linear layers only: a subclass (a quantized layer, say) has its own forward and weight format
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    if dtype == "float32":
        del model.forward  # back to the class's own forwards
        for linear in linears:
            linear.__dict__.pop("forward", None)
            linear.__dict__.pop(_KEPT, None)
    else:
        device = next(model.parameters()).device
        if not bf16_matmuls_are_fast(device):
            raise WeightsteerError(f"this {device.type.upper()} has no native bf16 matrix products, so bfloat16 "
                                   "matmuls would be slower than float32: use --matmul-dtype float32")
        # methods bound to each module (not closures over its forward), so a deepcopy of the model is
        # rebound to the copy and runs the copy's weights
        model.forward = types.MethodType(_forward_in_bf16, model)
        for linear in linears:
            linear.forward = types.MethodType(_linear_with_kept_bf16_weight, linear)
    setattr(model, _ATTRIBUTE, dtype)


def forget_bf16_weights(model: torch.nn.Module) -> None:
    """Drop every kept bf16 weight copy (after editing weights through `.data`, which the copies cannot see)."""
    for module in model.modules():
        module.__dict__.pop(_KEPT, None)


def _forward_in_bf16(self, *args, **kwargs):
    with torch.autocast(next(self.parameters()).device.type, dtype=torch.bfloat16):
        return type(self).forward(self, *args, **kwargs)


def _linear_with_kept_bf16_weight(self, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    if weight.requires_grad or not torch.is_autocast_enabled(x.device.type):
        return torch.nn.functional.linear(x, weight, self.bias)  # trained, or called outside the model's forward
    kept = self.__dict__.get(_KEPT)
    # the kept source tensor holds its storage alive, so an equal data pointer is the same storage
    if kept is None or kept[0].data_ptr() != weight.data_ptr() or kept[1] != weight._version:
        # made outside inference mode (decoding runs in it), so that training can use the copy later
        with torch.inference_mode(False), torch.no_grad():
            kept = (weight.detach(), weight._version, weight.detach().to(torch.bfloat16))
        self.__dict__[_KEPT] = kept
    return torch.nn.functional.linear(x, kept[2], self.bias)


def training_attention(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The attention kernel to train with: on a CPU with bf16 products, PyTorch's plain ("math") one.

    The CPU flash kernel's backward pass is slow on bf16 inputs: a LoRA step of the embedded model on
    one thread spends a fifth of its time there, and training with the plain kernel is about 12%
    faster, with losses as close to a float32 run's as the flash kernel's (docs/performance.md). In
    float32, and for decoding, the flash kernel is as fast or faster, and on a GPU much faster."""
    device = next(model.parameters()).device
    if device.type == "cpu" and matmul_dtype(model) == "bfloat16":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def matmul_dtype(model: torch.nn.Module) -> str:
    return getattr(model, _ATTRIBUTE, "float32")


def compute_key(model: torch.nn.Module) -> dict:
    """What a stage key adds for the model's compute precision: nothing for float32 (so keys made before
    the option existed still match), {"matmuls": "bfloat16", "version": KEY_VERSION} otherwise."""
    dtype = matmul_dtype(model)
    return {} if dtype == "float32" else {"matmuls": dtype, "matmuls_version": KEY_VERSION}
