"""Parsing of layer ranges (``--layers 0-3,10``) and neuron addresses (``--neurons 12:345,12:7``)."""

from __future__ import annotations

from interp.errors import UserInputError


def parse_layers(spec: str | None, n_layers: int) -> list[int]:
    """Sorted unique layer indices from ``"0-3,10"``; all layers when ``spec`` is None or ``"all"``."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo_text, hi_text = part.split("-", 1)
                lo, hi = int(lo_text), int(hi_text)
            else:
                lo = hi = int(part)
        except ValueError:
            raise UserInputError(f"--layers {spec!r} is not a list of layer numbers or ranges like 0-3,10.") from None
        if lo > hi:
            raise UserInputError(f"--layers {part!r} is reversed: write the lower layer first ({hi}-{lo}).")
        if lo < 0 or hi >= n_layers:
            raise UserInputError(f"--layers {part!r} is out of range: the model has layers 0-{n_layers - 1}.")
        layers.update(range(lo, hi + 1))
    return sorted(layers)


def parse_neurons(spec: str, n_layers: int, d_mlp: int) -> list[tuple[int, int]]:
    """``[(layer, index), ...]`` from ``"12:345,12:7"``, in the given order, checked against the model's shape."""
    neurons = []
    for part in spec.split(","):
        part = part.strip()
        try:
            layer_text, index_text = part.split(":")
            layer, index = int(layer_text), int(index_text)
        except ValueError:
            raise UserInputError(f"neuron address {part!r} is not of the form LAYER:INDEX.") from None
        neurons.append((layer, index))
    if not neurons:
        raise UserInputError("no neurons given.")
    check_neurons(neurons, n_layers, d_mlp)
    return neurons


def check_neurons(neurons: list[tuple[int, int]], n_layers: int, d_mlp: int, origin: str | None = None) -> None:
    """UserInputError naming the first neuron outside a model of ``n_layers`` x ``d_mlp``; every command that takes
    neurons checks them here. ``origin`` names where they came from (``--neurons-from 'FILE'``)."""
    for layer, index in neurons:
        if not (0 <= layer < n_layers and 0 <= index < d_mlp):
            where = f" of {origin}" if origin else ""
            hint = " (was it written for another model?)" if origin else ""
            raise UserInputError(
                f"neuron '{layer}:{index}'{where} is out of range: the model has layers 0-{n_layers - 1} and neurons "
                f"0-{d_mlp - 1}{hint}."
            )
