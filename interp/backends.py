"""Capture backends: three ways to read the neuron activations of one batch.

- ``torch`` (default): plain forward pre-hooks (``interp.hooks``); skips the unembedding and stops
  after the deepest requested layer.
- ``nnsight``: ``model.layers[i].mlp.down_proj.input`` inside an nnsight trace.
- ``transformer-lens``: ``blocks.{i}.mlp.hook_post`` from a TransformerLens 4 ``TransformerBridge``
  ``run_with_cache`` (on a private copy of the model: booting switches attention to eager).
All three hand ``on_activation(layer, activations[B, T, d_mlp])`` the same tensor (tests prove it),
and with ``need_logits`` return the logits at the batch's counted positions [N, vocab].
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from interp.errors import UserInputError
from interp.hooks import StopForward, neuron_hooks
from interp.models import LoadedModel
from interp.tokens import TokenBatch

OnActivation = Callable[[int, torch.Tensor], None]
BACKENDS = ("torch", "nnsight", "transformer-lens")


class CaptureBackend(Protocol):
    name: str

    def run(
        self, batch: TokenBatch, layers: list[int], on_activation: OnActivation, need_logits: bool = False
    ) -> torch.Tensor | None: ...


class TorchBackend:
    name = "torch"

    def __init__(self, lm: LoadedModel):
        self.lm = lm

    def run(
        self, batch: TokenBatch, layers: list[int], on_activation: OnActivation, need_logits: bool = False
    ) -> torch.Tensor | None:
        device = self.lm.device
        with torch.no_grad(), neuron_hooks(self.lm, layers, on_activation, stop_after_last=not need_logits):
            try:
                out = self.lm.model.base_model(
                    input_ids=batch.input_ids.to(device),
                    attention_mask=batch.attention_mask.to(device),
                    use_cache=False,
                )
            except StopForward:
                return None
            # The unembedding runs only at the counted positions.
            return self.lm.logits_from_hidden(out.last_hidden_state[batch.positions.to(device)])


class NNsightBackend:
    name = "nnsight"

    def __init__(self, lm: LoadedModel, wrapped=None):
        """``wrapped``: an nnsight model to trace instead of wrapping ``lm.model`` (``interp.remote``'s hosted one)."""
        import nnsight

        self.lm = lm
        self.wrapped = wrapped if wrapped is not None else nnsight.TransformersModel(lm.model, tokenizer=lm.tokenizer)

    def site(self, layer: int):
        """The envoy whose ``.input`` is ``layer``'s neuron activations."""
        envoy = self.wrapped
        for part in self.lm.spec.layers_path.split("."):
            envoy = getattr(envoy, part)
        envoy = envoy[layer]
        for part in self.lm.spec.neuron_site.split("."):
            envoy = getattr(envoy, part)
        return envoy

    def run(
        self, batch: TokenBatch, layers: list[int], on_activation: OnActivation, need_logits: bool = False
    ) -> torch.Tensor | None:
        device = self.lm.device
        inputs = {"input_ids": batch.input_ids.to(device), "attention_mask": batch.attention_mask.to(device)}
        saved = {}
        with torch.no_grad(), self.wrapped.trace(inputs):
            for layer in sorted(layers):  # nnsight needs modules touched in execution order
                saved[layer] = self.site(layer).input.save()
            logits = self.wrapped.output.logits.save() if need_logits else None
        for layer in layers:
            on_activation(layer, saved[layer])
        return logits[batch.positions.to(device)] if need_logits else None


@contextlib.contextmanager
def no_runtime_installs() -> Iterator[None]:
    """Stop TransformerLens 4 from pip-installing torchvision while it boots a bridge.

    For a config it takes for multimodal (Gemma 3) whose processor fails to load, TransformerLens runs
    ``pip install torchvision``: that executes downloaded code and replaces the pinned CPU torch with a CUDA
    build, breaking every later ``import torch`` in the environment. Inside this context its check only
    asks whether torchvision is importable.
    """
    from transformer_lens.model_bridge.sources.transformers import helpers

    installer = helpers._ensure_torchvision
    helpers._ensure_torchvision = lambda: importlib.util.find_spec("torchvision") is not None
    try:
        yield
    finally:
        helpers._ensure_torchvision = installer


def boot_bridge(lm: LoadedModel) -> Any:
    """A TransformerLens ``TransformerBridge`` on a private copy of ``lm``'s model (booting switches attention to
    eager), with nothing installed at run time."""
    from transformer_lens.model_bridge import TransformerBridge

    with no_runtime_installs():
        return TransformerBridge.boot_transformers(
            str(lm.source.path), hf_model=copy.deepcopy(lm.model), tokenizer=lm.tokenizer, device=lm.device
        )


class TransformerLensBackend:
    name = "transformer-lens"

    def __init__(self, lm: LoadedModel):
        self.lm = lm
        try:
            self.bridge = boot_bridge(lm)
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise UserInputError(f"TransformerLens cannot load this {lm.spec.family} model: {exc}") from None

    def run(
        self, batch: TokenBatch, layers: list[int], on_activation: OnActivation, need_logits: bool = False
    ) -> torch.Tensor | None:
        device = self.lm.device
        names = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
        with torch.no_grad():
            logits, cache = self.bridge.run_with_cache(
                batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                names_filter=names,
                return_cache_object=False,
            )
        for layer, name in zip(layers, names):
            on_activation(layer, cache[name])
        return logits[batch.positions.to(device)] if need_logits else None


def make_backend(name: str, lm: LoadedModel) -> CaptureBackend:
    if name == "torch":
        return TorchBackend(lm)
    if name == "nnsight":
        return NNsightBackend(lm)
    if name == "transformer-lens":
        return TransformerLensBackend(lm)
    raise UserInputError(f"--backend must be one of {', '.join(BACKENDS)}, not {name!r}.")
