"""Interventions: one mechanism that edits chosen neurons at the neuron site, or steers the residual stream,
for every command.

A ``Condition`` says which neurons to edit and how:
- ``zero``: set to 0;
- ``scale``: multiply by ``alpha`` (0, 0.5, 2 ... for dose-response);
- ``mean``: set to fixed per-neuron values (a mean from a ``stats.safetensors``);
- ``patch``: set to the values a *source* model computes on the same tokens, in lockstep;
and, with ``steering``, adds ``coeff`` x a unit direction to the residual stream after one decoder block
(mode ``steer`` when it edits no neurons; both compose when it does).
Several conditions run as one batched forward: the batch is repeated once per condition along the batch
dimension (rows ``[c * B, (c + 1) * B)`` belong to condition c), and each condition's hook edits only its rows
at the positions where ``edit_mask`` [B, T] is True.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch

from interp.errors import UserInputError
from interp.hooks import neuron_hooks, residual_hooks
from interp.models import LoadedModel

MODES = ("zero", "scale", "mean", "patch")  # neuron edits
STEER = "steer"  # a condition that only steers


@dataclass(frozen=True, eq=False)
class Steering:
    """Add ``coeff`` x ``direction`` to the residual stream after decoder block ``layer`` (its output)."""

    layer: int
    direction: torch.Tensor  # [d_model], unit norm
    coeff: float


@dataclass(frozen=True)
class Condition:
    name: str
    neurons: tuple[tuple[int, int], ...] = ()  # empty: the unedited model
    mode: str = "zero"
    alpha: float = 0.0  # scale mode
    values: tuple[float, ...] = ()  # mean mode: one value per neuron
    kind: str = "tested"  # "baseline" | "tested" | "control"
    group: str = ""  # conditions compared with each other share a group (e.g. one alpha)
    steering: Steering | None = None

    def __post_init__(self):
        if self.mode not in (*MODES, STEER):
            raise UserInputError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}.")
        if self.mode == "mean" and len(self.values) != len(self.neurons):
            raise ValueError("mean mode needs one value per neuron")

    def by_layer(self) -> dict[int, tuple[list[int], list[int]]]:
        """layer -> (neuron indices, positions in ``neurons``)."""
        grouped: dict[int, tuple[list[int], list[int]]] = {}
        for position, (layer, index) in enumerate(self.neurons):
            indices, positions = grouped.setdefault(layer, ([], []))
            indices.append(index)
            positions.append(position)
        return grouped


@dataclass
class EditPlan:
    """What each layer's hook does to a batch of ``len(conditions) * rows`` sequences."""

    conditions: list[Condition]
    rows: int  # sequences per condition
    edit_mask: torch.Tensor  # [rows, T] bool: positions to edit during a full forward
    # patch: layer -> source activations, [rows, T, d_mlp] shared by all conditions (teacher forcing)
    # or [C * rows, T, d_mlp], one per condition row (generation, where conditions' tokens diverge)
    source_values: dict[int, torch.Tensor] = field(default_factory=dict)
    decoding: bool = False  # generation steps after the prompt: every new position is edited
    offset: int = 0  # the forward starts at this position of ``edit_mask`` (the rest came from a KV cache)

    @property
    def layers(self) -> list[int]:
        """The layers whose neurons some condition edits."""
        return sorted({layer for condition in self.conditions for layer, _ in condition.neurons})

    @property
    def steered_layers(self) -> list[int]:
        """The blocks after which some condition steers the residual stream."""
        return sorted({c.steering.layer for c in self.conditions if c.steering is not None})

    def first_layer(self, default: int) -> int:
        """The first decoder block whose computation differs between conditions (``default`` if none does)."""
        return min(self.layers + self.steered_layers, default=default)

    def steer(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Return ``hidden`` [C * rows, T, d_model] with the steering of ``layer`` added at the edited positions."""
        if hidden.requires_grad:
            hidden = hidden.clone()
        view = hidden.view(len(self.conditions), self.rows, hidden.shape[1], hidden.shape[2])
        mask = self._mask(hidden.shape[1], hidden.device).unsqueeze(-1).to(hidden.dtype)
        for c, condition in enumerate(self.conditions):
            steering = condition.steering
            if steering is not None and steering.layer == layer:
                push = steering.coeff * steering.direction.to(device=hidden.device, dtype=hidden.dtype)
                view[c] += mask * push
        return hidden

    def edit(self, layer: int, acts: torch.Tensor) -> torch.Tensor:
        """Return ``acts`` [C * rows, T, D] with this layer's edits applied (in place when no grad is needed)."""
        if acts.requires_grad:
            acts = acts.clone()
        c_count = len(self.conditions)
        view = acts.view(c_count, self.rows, acts.shape[1], acts.shape[2])
        mask = self._mask(acts.shape[1], acts.device)
        for c, condition in enumerate(self.conditions):
            grouped = condition.by_layer().get(layer)
            if grouped is None:
                continue
            indices = torch.tensor(grouped[0], device=acts.device)
            original = view[c][:, :, indices]
            edited = self._edited(condition, c, layer, original, grouped, acts)
            view[c][:, :, indices] = torch.where(mask.unsqueeze(-1), edited, original)
        return acts

    def _mask(self, length: int, device) -> torch.Tensor:
        if self.decoding:
            return torch.ones(self.rows, length, dtype=torch.bool, device=device)
        return self.edit_mask[:, self.offset : self.offset + length].to(device)

    def _edited(self, condition: Condition, c: int, layer: int, original, grouped, acts) -> torch.Tensor:
        if condition.mode == "zero":
            return torch.zeros_like(original)
        if condition.mode == "scale":
            return original * condition.alpha
        if condition.mode == "mean":
            values = torch.tensor([condition.values[p] for p in grouped[1]], dtype=acts.dtype, device=acts.device)
            return values.expand_as(original)
        source = self.source_values[layer]  # patch
        if source.shape[0] != self.rows:
            source = source[c * self.rows : (c + 1) * self.rows]
        indices = torch.tensor(grouped[0], device=source.device)
        return source[:, -original.shape[1] :, :][:, :, indices].to(device=acts.device, dtype=acts.dtype)


@contextmanager
def applied(lm: LoadedModel, plan: EditPlan) -> Iterator[EditPlan]:
    """Hooks that apply ``plan`` to every forward pass of ``lm`` inside the block."""
    with ExitStack() as stack:
        if plan.layers:
            stack.enter_context(neuron_hooks(lm, plan.layers, plan.edit, edits=True))
        if plan.steered_layers:
            stack.enter_context(residual_hooks(lm, plan.steered_layers, plan.steer, edits=True))
        yield plan


def repeat_rows(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """[B, ...] -> [times * B, ...], condition-major (rows of condition c are c*B .. c*B+B-1)."""
    return tensor.repeat(times, *([1] * (tensor.dim() - 1)))


@contextmanager
def reused_lower_blocks(lm: LoadedModel, below: int, memo: dict) -> Iterator[None]:
    """Blocks below ``below`` run once per batch, however many forwards of it follow.

    The first forward inside a ``memo`` records what block ``below - 1`` returns; later forwards of the same tokens
    (other conditions, which differ only from block ``below`` on) skip blocks ``0 .. below - 1``: each returns that
    record (a copy), so block ``below`` receives exactly what it would have computed. The skipped blocks leave their
    KV-cache layers untouched (later blocks read only their own)."""
    blocks = lm.spec.layers(lm.model)[:below]
    if not blocks:
        yield
        return
    if "output" not in memo:
        handle = blocks[-1].register_forward_hook(lambda module, args, output: memo.__setitem__("output", output))
        try:
            yield
        finally:
            handle.remove()
        return

    def recorded(*args, **kwargs):
        output = memo["output"]
        return (output[0].clone(), *output[1:]) if isinstance(output, tuple) else output.clone()

    for block in blocks:
        block.forward = recorded  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


@contextmanager
def shared_prefix(lm: LoadedModel, first_layer: int, copies: int) -> Iterator[None]:
    """Run the layers below ``first_layer`` once, then ``copies`` times as many rows from there on.

    Conditions only differ from their first edited layer onwards, so a batch of B sequences enters the
    model once and is repeated (condition-major, like ``repeat_rows``) when it reaches ``first_layer``:
    every tensor argument of that and later decoder blocks with 2+ dimensions whose first is B (hidden states,
    attention masks, position ids, rotary cos/sin) is repeated; with a KV cache, the caller repeats the rows of
    the cache layers from ``first_layer`` on.
    """
    if copies == 1:
        yield
        return
    blocks = lm.spec.layers(lm.model)
    state = {"rows": -1}

    def expand(value):  # batch-first tensors have 2+ dimensions (cache positions [T] are shared, never repeated)
        if isinstance(value, torch.Tensor) and value.dim() > 1 and value.shape[0] == state["rows"]:
            return repeat_rows(value, copies)
        if isinstance(value, tuple):
            return tuple(expand(item) for item in value)
        return value

    def hook(module, args, kwargs):
        if module is blocks[first_layer]:  # a new forward pass reaches the split: note its batch size
            hidden = args[0] if args else kwargs["hidden_states"]
            state["rows"] = hidden.shape[0]
        return tuple(expand(a) for a in args), {k: expand(v) for k, v in kwargs.items()}

    handles = [blocks[i].register_forward_pre_hook(hook, with_kwargs=True) for i in range(first_layer, len(blocks))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
