"""Hooks at the neuron site and on the residual stream, that always remove themselves.

``neuron_hooks`` registers a forward pre-hook on each chosen layer's MLP output projection, whose
input is the neuron activation vector [batch, seq, d_mlp]; ``residual_hooks`` a forward hook on each chosen
decoder block, whose output is the residual stream after that block [batch, seq, d_model]. The callback reads
it; with ``edits=True`` a tensor it returns replaces it (interventions use that). ``module_output_hooks``
hooks the outputs of any modules (MEND reads the inputs and output gradients of the weights it edits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from interp.models import LoadedModel

NeuronCallback = Callable[[int, torch.Tensor], torch.Tensor | None]
ResidualCallback = NeuronCallback  # (layer, hidden states [B, T, d_model]) -> replacement or None
ModuleOutputHook = Callable[[int, tuple, torch.Tensor], torch.Tensor | None]  # (module number, inputs, output)


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

    def make_hook(layer: int):
        def hook(_module, args):
            replaced = callback(layer, args[0])
            if stop_after_last and layer == last:
                raise StopForward
            if edits and replaced is not None:
                return (replaced, *args[1:])
            return None

        return hook

    with _registered(lambda layer: lm.spec.site_module(lm.model, layer).register_forward_pre_hook(make_hook(layer)),
                     layers):  # fmt: skip
        yield


@contextmanager
def residual_hooks(
    lm: LoadedModel, layers: list[int], callback: ResidualCallback, stop_after_last: bool = False, edits: bool = False
) -> Iterator[None]:
    """Call ``callback(layer, hidden)`` on the residual stream after every chosen decoder block (its output,
    [B, T, d_model]); ``stop_after_last`` and ``edits`` as in ``neuron_hooks``."""
    last = max(layers)
    blocks = lm.spec.layers(lm.model)

    def make_hook(layer: int):
        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            replaced = callback(layer, hidden)
            if stop_after_last and layer == last:
                raise StopForward
            if edits and replaced is not None:
                return (replaced, *output[1:]) if isinstance(output, tuple) else replaced
            return None

        return hook

    with _registered(lambda layer: blocks[layer].register_forward_hook(make_hook(layer)), layers):
        yield


@contextmanager
def _registered(register: Callable[[int], torch.utils.hooks.RemovableHandle], layers: Iterable[int]) -> Iterator[None]:
    """Register one hook per layer (or module number) with ``register(layer)``; remove them all on exit, whatever
    happens."""
    handles = []
    try:
        for layer in layers:
            handles.append(register(layer))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def module_output_hooks(modules: list[torch.nn.Module], hook: ModuleOutputHook) -> Iterator[None]:
    """Call ``hook(number, inputs, output)`` after module ``modules[number]`` runs; a tensor it returns replaces
    the module's output."""
    with _registered(lambda number: modules[number].register_forward_hook(
            lambda _module, args, output: hook(number, args, output)), range(len(modules))):  # fmt: skip
        yield
