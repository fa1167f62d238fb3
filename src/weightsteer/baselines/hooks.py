"""Forward hooks on decoder layers that rewrite the residual stream, and are always removed.

In transformers 5.x a decoder layer returns its output hidden states as a plain tensor; older
versions and some remote-code models return a tuple whose first item is the hidden states. The
hook handles both, so the same edit works on every architecture `decoder_layers` finds.

The hooks are prepended, so they run before any hook already on the layer: transformers records
`output_hidden_states` with its own forward hooks, and those then report the edited residual stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from ..adapters import decoder_layers

Edit = Callable[[torch.Tensor], torch.Tensor]  # (batch, seq, d) hidden states -> the same shape


def _output_hook(edit: Edit):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    return hook


@contextlib.contextmanager
def layer_hooks(model: torch.nn.Module, edits: dict[int, Edit]) -> Iterator[torch.nn.Module]:
    """Within the block, the output hidden states of decoder layer i pass through edits[i].

    The hooks are removed on a normal exit, an exception or Ctrl-C, so a failed sweep step
    cannot leave a steered model behind.
    """
    layers = decoder_layers(model)
    handles = []
    try:
        for index, edit in edits.items():
            handles.append(layers[index].register_forward_hook(_output_hook(edit), prepend=True))
        yield model
    finally:
        for handle in handles:
            handle.remove()
