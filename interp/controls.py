"""Control neuron sets for the causal tests: the two nulls a tested set is compared with, and what each neuron is
predicted to contribute to a test.

- **layer-matched** (``layer_matched_sets``): random neurons, the same number per layer as the tested set.
  Weak when the tested neurons were chosen for a large emoji write: random neurons mostly write nothing
  towards emojis, so beating them says little.
- **selection-matched** (``selection_matched_sets``): per tested neuron, a neuron of the same layer that looks
  alike on what predicts its part in the test: its *predicted contribution* (``NeuronValues.contribution``), the
  change of its direct emoji push that the test's edit makes, from the diff's means and emoji writes (logit
  units), and its activation scale (root mean square activation, averaged over the diff's two models). Patching
  the source model's values into model X contributes ``(mean_source - mean_X) x emoji_dla_X`` (for an adapter
  that leaves MLP output columns alone, plus or minus the ``score`` the selection ranked by); zeroing (or scaling
  by alpha) contributes ``(alpha - 1) x mean_X x emoji_dla_X``, the neuron's own push, which the selection's score
  does not predict (a neuron chosen for its change can be a strong writer; controls matched on the change alone
  were beaten by strong writers in a simulated null, ``tests/unit/test_calibration.py``). The direction a test
  predicts (``interp.ablation.predicted_alternatives``) is the tested neurons' summed contribution, so the
  null matches on exactly what the prediction used, signs included. A tested neuron's pool is the ``POOL``
  nearest other neurons of its layer whose contribution has its sign, in (log |contribution|, log rms, log
  |emoji_dla|), each axis in robust standard deviations (1.4826 x median absolute deviation) of the layer's
  same-sign neurons (the selected neurons are outliers that inflate a plain standard deviation); the write
  strength |emoji_dla| scales how far a neuron's edit moves the readout on other prompts, so it is matched too
  (in the simulated null with neurons of unequal writes it lowered the matched null's false-positive rate a
  little on every test). A control set draws one neuron from every tested neuron's pool. A layer with fewer than
  ``POOL`` other same-sign neurons fills the pool with the nearest opposite-sign ones (axes then scaled over the
  whole layer; ``same_sign: false`` in the record). A tested neuron has no good match when its pool is not all of
  its sign or its pool's median differs from it by more than ``GOOD_MATCH`` (factor) on any axis (planted
  neurons, for example, change far more than any natural neuron); the record says how many. On its own this
  null is anti-conservative (the tested neurons are the tail of their layer, so their pools overlap and reach a
  little below them); the verdict also needs the layer null. Known limit: zeroing (necessity) stays
  anti-conservative in a simulated null whose neurons differ in write strength (``tests/unit/test_calibration.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import UserInputError

POOL = 10  # candidates per tested neuron
GOOD_MATCH = 2.0  # a pool's median within this factor of the tested neuron on every matched feature
TINY = 1e-12  # floor of |contribution|, rms and |emoji_dla| before the log

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


ROLES = ("base", "finetuned")  # the diff's two models


@dataclass(frozen=True)
class Edit:
    """A causal test's edit in the diff's terms: ``mode`` (zero | scale | mean | patch) on the model of role
    ``model``, writing the values of role ``source`` (patch: the source model; mean: the statistics' entry),
    scaling by ``alpha`` (zero: 0)."""

    mode: str
    model: str
    source: str | None = None
    alpha: float = 0.0


@dataclass
class NeuronValues:
    """What the diff measured per neuron of both models (tensors of one shape: the chosen neurons, or [layers,
    d_mlp]): ``mean`` activation and signed direct emoji write ``emoji_dla`` (logits per unit of activation)."""

    mean: dict[str, torch.Tensor]  # role -> mean activation
    emoji_dla: dict[str, torch.Tensor]  # role -> signed emoji_dla

    def contribution(self, edit: Edit) -> torch.Tensor:
        """Each neuron's predicted change of the direct emoji-onset push (logits) under ``edit``."""
        write = self.emoji_dla[edit.model]
        if edit.mode in ("zero", "scale"):
            return (edit.alpha - 1) * self.mean[edit.model] * write
        return (self.mean[edit.source] - self.mean[edit.model]) * write  # patch, mean

    @property
    def score(self) -> torch.Tensor:
        """What the selection ranked by: ft_mean x emoji_dla_ft - base_mean x emoji_dla_base (logits)."""
        return self.mean["finetuned"] * self.emoji_dla["finetuned"] - self.mean["base"] * self.emoji_dla["base"]

    def at(self, slots: list[int], indices: list[int]) -> NeuronValues:
        """The values of the neurons (layer slot, index) of a [layers, d_mlp] grid."""
        return NeuronValues({r: v[slots, indices] for r, v in self.mean.items()},
                            {r: v[slots, indices] for r, v in self.emoji_dla.items()})  # fmt: skip


@dataclass
class SelectionFeatures:
    """What the diff measured per neuron of its layers, each [len(layers), d_mlp]."""

    layers: list[int]
    values: NeuronValues
    activation_rms: torch.Tensor  # sqrt(mean^2 + var), mean over base and fine-tuned

    def of(self, neurons: list[Neuron]) -> NeuronValues:
        """The values of ``neurons`` (layer, index)."""
        return self.values.at([self.layers.index(layer) for layer, _ in neurons], [index for _, index in neurons])

    def log_features(self, layer: int, contribution: torch.Tensor) -> torch.Tensor:
        """[d_mlp, 3] (log |contribution|, log rms, log |emoji_dla|) of one layer (``contribution`` [layers,
        d_mlp]), floored at ``TINY`` to stay finite; emoji_dla is the mean of both models' |emoji_dla|."""
        slot = self.layers.index(layer)
        dla = sum(values[slot].abs() for values in self.values.emoji_dla.values()) / len(self.values.emoji_dla)
        columns = (contribution[slot].abs(), self.activation_rms[slot], dla)
        return torch.stack([column.double().clamp(min=TINY).log() for column in columns], 1)


def robust_spread(values: torch.Tensor) -> torch.Tensor:
    """[n, k] -> [k]: 1.4826 x the median absolute deviation per column (the standard deviation for normal
    data, not inflated by outliers), floored at 1e-6."""
    deviation = (values - values.median(0).values).abs().median(0).values
    return (1.4826 * deviation).clamp(min=1e-6)


def nearest_pool(logs: torch.Tensor, signs: torch.Tensor, index: int, excluded: torch.Tensor) -> list[int]:
    """The ``POOL`` look-alikes of neuron ``index`` in one layer: same-sign neurons first, each group by distance
    in ``logs`` [d_mlp, k] (``SelectionFeatures.log_features``), axes scaled by ``robust_spread`` of the same-sign
    neurons (of the whole layer when fewer than ``POOL`` same-sign candidates exist); ``excluded`` [d_mlp] bool
    never."""
    same = signs == signs[index]
    enough = int((same & ~excluded).sum()) >= POOL
    scale = robust_spread(logs[same] if enough else logs)
    distance = ((logs - logs[index]) / scale).pow(2).sum(1).sqrt()
    order = torch.argsort(distance, stable=True)
    order = order[torch.argsort((~same[order]).to(torch.int8), stable=True)]  # same sign first, then by distance
    return order[~excluded[order]][:POOL].tolist()


def selection_matched_sets(
    neurons: list[Neuron], features: SelectionFeatures, count: int, seed: int, edit: Edit | None = None
) -> tuple[list[NeuronSet], dict]:
    """``count`` control sets, each with one look-alike (same layer) per tested neuron on its predicted
    contribution under ``edit`` (None: the score the selection ranked by, for a model that is neither of the
    diff's) and activation scale, and a record of how good the matches are (``matching``: method, per-neuron
    factors and sign, how many have no good match)."""
    missing = sorted({layer for layer, _ in neurons} - set(features.layers))
    if missing:
        raise UserInputError(f"the diff's statistics have no layers {missing}; cannot match controls there.")
    contribution = features.values.contribution(edit) if edit is not None else features.values.score
    pools: list[list[int]] = []
    quality = []
    for layer, index in neurons:
        logs = features.log_features(layer, contribution)
        signs = contribution[features.layers.index(layer)].sign()
        excluded = torch.zeros(len(signs), dtype=torch.bool)
        excluded[[other for other_layer, other in neurons if other_layer == layer]] = True
        pool = nearest_pool(logs, signs, index, excluded)
        factors = (logs[pool] - logs[index]).median(0).values.abs().exp().tolist()  # median pool / tested, >= 1
        same_sign = bool((signs[pool] == signs[index]).all())
        pools.append(pool)
        quality.append({
            "neuron": f"{layer}:{index}", "same_sign": same_sign, "contribution_factor": factors[0],
            "activation_factor": factors[1], "emoji_dla_factor": factors[2],
            "good_match": same_sign and max(factors) <= GOOD_MATCH,
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
    unsigned = sum(not q["same_sign"] for q in quality)
    note = (
        f"{poor} of {len(neurons)} tested neurons have no look-alike within a factor {GOOD_MATCH:g} "
        "(e.g. planted neurons): this null is weaker for them." if poor else "every tested neuron has a look-alike."
    )  # fmt: skip
    if unsigned:
        note += (f" {unsigned} of them have fewer than {POOL} other neurons in their layer whose predicted "
                 "contribution has their sign: their pools include neurons of the opposite sign.")  # fmt: skip
    what = (f"its predicted contribution under this test's edit ({edit.mode} on the {edit.model} model"
            + (f", values of the {edit.source} model" if edit.source else "") + ")" if edit is not None else
            "its score (the test's model is neither of the diff's)")  # fmt: skip
    matching = {
        "method": f"per tested neuron, one of the {POOL} nearest neurons of its layer whose predicted contribution "
        "(the change of its direct emoji push under the test's edit) has the same sign, in (log |contribution|, log "
        "activation rms, log |emoji_dla|) (rms and |emoji_dla| averaged over both models, axes in robust standard "
        "deviations of the layer's same-sign neurons)",
        "matched_on": what,
        "good_match_factor": GOOD_MATCH,
        "neurons_without_good_match": poor,
        "neurons_without_same_sign": unsigned,
        "per_neuron": quality,
        "note": note,
    }  # fmt: skip
    return sets, matching
