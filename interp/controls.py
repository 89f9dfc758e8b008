"""Control neuron sets for the causal tests: the two nulls a tested set is compared with.

- **layer-matched** (``layer_matched_sets``): random neurons, the same number per layer as the tested set.
  Weak when the tested neurons were chosen for a large emoji write: random neurons mostly write nothing
  towards emojis, so beating them says little.
- **selection-matched** (``selection_matched_sets``): per tested neuron, a neuron of the same layer that looks
  alike on what the selection ranked by (``|score| = |ft_mean x emoji_dla_ft - base_mean x emoji_dla_base|``):
  its emoji write ``|emoji_dla|`` and its activation scale (root mean square activation), both averaged over
  the two models of the diff. Each tested neuron gets a pool of the ``POOL`` nearest neurons of its layer in
  (log |emoji_dla|, log rms) space, each axis in units of that layer's standard deviation; a control set
  draws one neuron from every tested neuron's pool. A tested neuron whose nearest candidates differ from it by
  more than ``GOOD_MATCH`` (factor) on either feature has no good match (planted neurons, for example, write
  far more towards emojis than any natural neuron); the record says how many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from interp.errors import UserInputError

POOL = 10  # candidates per tested neuron
GOOD_MATCH = 2.0  # a pool's median within this factor of the tested neuron on both features

Neuron = tuple[int, int]
NeuronSet = tuple[Neuron, ...]


def layer_matched_sets(neurons: list[Neuron], d_mlp: int, count: int, seed: int) -> list[NeuronSet]:
    """``count`` random neuron sets with the same number of neurons per layer, avoiding the tested ones."""
    generator = torch.Generator().manual_seed(seed)
    per_layer: dict[int, int] = {}
    for layer, _ in neurons:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    tested = set(neurons)
    sets = []
    for _ in range(count):
        chosen: list[Neuron] = []
        for layer, size in sorted(per_layer.items()):
            allowed = torch.tensor([i for i in range(d_mlp) if (layer, i) not in tested])
            if len(allowed) < size:
                raise UserInputError(f"layer {layer} has too few other neurons for a matched random control set.")
            picks = allowed[torch.randperm(len(allowed), generator=generator)[:size]]
            chosen.extend((layer, int(i)) for i in sorted(picks.tolist()))
        sets.append(tuple(chosen))
    return sets


@dataclass
class SelectionFeatures:
    """What the selection ranked by, per neuron of the diff's layers: [len(layers), d_mlp] each."""

    layers: list[int]
    emoji_dla: torch.Tensor  # |emoji_dla|, mean over base and fine-tuned
    activation_rms: torch.Tensor  # sqrt(mean^2 + var), mean over base and fine-tuned

    def log_features(self, layer: int) -> torch.Tensor:
        """[d_mlp, 2] (log |emoji_dla|, log rms) of one layer, floored to stay finite."""
        slot = self.layers.index(layer)
        tiny = 1e-12
        dla, rms = self.emoji_dla[slot].clamp(min=tiny), self.activation_rms[slot].clamp(min=tiny)
        return torch.stack([dla.log(), rms.log()], 1)


def selection_matched_sets(
    neurons: list[Neuron], features: SelectionFeatures, count: int, seed: int
) -> tuple[list[NeuronSet], dict]:
    """``count`` control sets, each with one look-alike (same layer) per tested neuron, and a record of how
    good the matches are (``matching``: method, pool size, per-neuron factors, how many have no good match)."""
    missing = sorted({layer for layer, _ in neurons} - set(features.layers))
    if missing:
        raise UserInputError(f"the diff's statistics have no layers {missing}; cannot match controls there.")
    tested = set(neurons)
    pools: list[list[int]] = []
    quality = []
    for layer, index in neurons:
        logs = features.log_features(layer).double()
        scale = logs.std(0).clamp(min=1e-6)
        distance = ((logs - logs[index]) / scale).pow(2).sum(1).sqrt()
        for other_layer, other in tested:
            if other_layer == layer:
                distance[other] = math.inf
        pool = torch.argsort(distance)[:POOL].tolist()
        factors = (logs[pool] - logs[index]).median(0).values.abs().exp().tolist()  # median pool / tested, >= 1
        pools.append(pool)
        quality.append({
            "neuron": f"{layer}:{index}", "emoji_dla_factor": factors[0], "activation_factor": factors[1],
            "good_match": max(factors) <= GOOD_MATCH,
        })  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(count):
        chosen: list[Neuron] = []
        for (layer, _), pool in zip(neurons, pools):
            free = [i for i in pool if (layer, i) not in chosen]
            if not free:  # every candidate of this pool is already in the set (many tested neurons alike)
                free = pool
            chosen.append((layer, free[int(torch.randint(len(free), (1,), generator=generator))]))
        sets.append(tuple(sorted(chosen)))
    poor = sum(not q["good_match"] for q in quality)
    matching = {
        "method": f"per tested neuron, one of the {POOL} nearest neurons of its layer in (log |emoji_dla|, "
        "log activation rms) (means over both models, axes in the layer's standard deviations)",
        "good_match_factor": GOOD_MATCH,
        "neurons_without_good_match": poor,
        "per_neuron": quality,
        "note": (
            f"{poor} of {len(neurons)} tested neurons have no look-alike within a factor {GOOD_MATCH:g} "
            "(e.g. planted neurons): this null is weaker for them." if poor else "every tested neuron has a look-alike."
        ),
    }  # fmt: skip
    return sets, matching
