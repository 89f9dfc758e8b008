"""Hooks at the neuron site that always remove themselves.

``neuron_hooks`` registers a forward pre-hook on each chosen layer's MLP output projection, whose
input is the neuron activation vector [batch, seq, d_mlp]. The callback reads it; with ``edits=True``
a tensor it returns replaces the activations (interventions use that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from interp.models import LoadedModel

NeuronCallback = Callable[[int, torch.Tensor], torch.Tensor | None]


class StopForward(Exception):
    """Raised by a hook to end a forward pass early once the last needed layer has been seen."""


@contextmanager
def neuron_hooks(
    lm: LoadedModel, layers: list[int], callback: NeuronCallback, stop_after_last: bool = False, edits: bool = False
) -> Iterator[None]:
    """Call ``callback(layer, activations)`` at every chosen layer's neuron site during forward passes.

    With ``stop_after_last`` the hook of the deepest chosen layer raises ``StopForward`` after its
    callback, so callers that only need activations skip the rest of the network.
    """
    last = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(_module, args):
            replaced = callback(layer, args[0])
            if stop_after_last and layer == last:
                raise StopForward
            if edits and replaced is not None:
                return (replaced, *args[1:])
            return None

        return hook

    try:
        for layer in layers:
            handles.append(lm.spec.site_module(lm.model, layer).register_forward_pre_hook(make_hook(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()
