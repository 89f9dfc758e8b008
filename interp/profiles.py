"""Neuron profiles for the report: what the top-ranked neurons do on the prompts, in one model.

A profile of neuron ``(layer, index)``, from the same forward passes that ``diff-neurons`` counts:
- ``values``: its activations at up to ``max_values`` counted positions (an even stride through all of them,
  in sequence order, rounded to 4 significant digits), for distribution plots;
- ``contexts``: the ``top_contexts`` counted positions where it fires most, each with the surrounding tokens
  and the neuron's activation on every one of them (for highlighting);
- ``promoted_tokens``: the tokens one unit of its output raises most through the unembedding.

Which neurons are profiled is known only after both models are counted, so ``ProfileRecorder`` keeps, during
the capture itself, what any neuron's profile needs: every neuron's activations at the strided positions and
a running top-k of (activation, sequence, position) per neuron with the activation window around each. No
second pass: memory is (max_values + top_contexts x 18) values per neuron (SmolLM2-135M, 46,080 neurons, 2,000
values in float32: 0.37 GB per model) and the output weights kept for ``promoted_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.dla import Readout
from interp.errors import UserInputError
from interp.models import LoadedModel

CONTEXT_BEFORE, CONTEXT_AFTER = 12, 4
WINDOW = torch.arange(-CONTEXT_BEFORE, CONTEXT_AFTER + 1)  # offsets of a context around its position


def _round(value: float) -> float:
    return float(f"{value:.4g}")


TAG_BITS = 29  # a float32 value held in a float64 leaves the low 29 bits of the mantissa zero


def sort_keys(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Unique float64 keys of float32 ``values`` at positions ranked ``order`` (same shape, 0 <= order <
    2**TAG_BITS): the rank goes into the mantissa bits a float32 leaves empty, so a larger key is a larger value,
    and of equal values (a prompt prefix that several sequences share) the one of the lower rank. A top-k over
    keys is then exact and the same however the positions were batched."""
    wide = (values.float() + 0.0).double()  # + 0.0: -0.0 becomes 0.0
    tag = torch.where(wide >= 0, (2**TAG_BITS - 1) - order, order)  # negative: more bits, more negative
    keyed = (wide.view(torch.int64) | tag).view(torch.float64)
    return torch.where(wide.isfinite(), keyed, wide)


@dataclass
class _TopContexts:
    """One layer's running top-k over counted positions, best first: ``values``/``keys``/``sequence``/``position``
    [k, d_mlp] (``keys``: ``sort_keys`` of the values), ``windows`` [k, d_mlp, len(WINDOW)] (the neuron's
    activations around the position; clamped at the edges)."""

    values: torch.Tensor
    keys: torch.Tensor
    sequence: torch.Tensor
    position: torch.Tensor
    windows: torch.Tensor

    def fields(self) -> tuple[torch.Tensor, ...]:
        return self.values, self.keys, self.sequence, self.position, self.windows

    def merged(self, other: _TopContexts, k: int) -> _TopContexts:
        """The top ``k`` of both."""
        both = [torch.cat(pair) for pair in zip(self.fields(), other.fields())]
        pick = both[1].topk(min(k, len(both[1])), dim=0).indices  # [k, d_mlp]
        return _TopContexts(*(f.gather(0, pick) for f in both[:4]), both[4].gather(0, _along_window(pick, both[4])))

    @staticmethod
    def folded(
        top: _TopContexts | None, k: int, acts: torch.Tensor, positions: torch.Tensor, counted: torch.Tensor,
        sequences: torch.Tensor, width: int,
    ) -> _TopContexts:  # fmt: skip
        """``top`` (None before the first batch) with one batch folded in: ``acts`` [B, T, d_mlp] of the batch rows'
        ``sequences`` [B] (global numbers), ``positions`` [B, T] the counted ones, ``counted`` [N, d_mlp] ``acts``
        there; ``width`` ranks positions (the longest sequence). Only batch entries at or above a bound on each
        neuron's k-th best can enter (the current k-th best; in the first batch the least of the maxima of k
        groups of rows, k actual entries), so only those are keyed, and windows are cut for those that enter."""
        device, d_mlp = counted.device, counted.shape[1]
        held = 0 if top is None else len(top.values)
        if held == k:
            floor = top.values[-1].to(device)
        else:
            floor = torch.stack([g.amax(0) for g in counted.tensor_split(min(k, len(counted)))]).amin(0)
        neuron, row = (counted >= floor).t().nonzero(as_tuple=True)  # candidates, grouped by neuron
        if not len(neuron):  # nothing in this batch reaches any neuron's k-th best
            return top
        counts = torch.bincount(neuron, minlength=d_mlp)
        rank = torch.arange(len(neuron), device=device) - (counts.cumsum(0) - counts)[neuron]
        flat = torch.nonzero(positions.reshape(-1)).squeeze(1)[row]  # flat (batch row, position) of each candidate
        batch_row, position = flat // acts.shape[1], flat % acts.shape[1]
        sequence = sequences.to(device)[batch_row]
        value = counted[row, neuron]
        dense = torch.full((d_mlp, held + int(counts.max())), float("-inf"), dtype=torch.float64, device=device)
        candidate = torch.zeros(dense.shape, dtype=torch.long, device=device)  # dense slot -> candidate number
        dense[neuron, held + rank] = sort_keys(value, sequence * width + position)
        candidate[neuron, held + rank] = torch.arange(len(neuron), device=device)
        if held:
            dense[:, :held] = top.keys.t().to(device)
        pick = dense.topk(min(k, held + len(counted)), dim=1).indices.t()  # [k, d_mlp]: slots, best first
        keys = dense.gather(1, pick.t()).t()
        slot, neuron = (pick >= held).nonzero(as_tuple=True)  # the batch's entries that enter
        chosen = candidate[neuron, pick[slot, neuron]]
        around = (position[chosen, None] + WINDOW.to(device)).clamp(0, acts.shape[1] - 1)
        fresh = (
            value[chosen],
            sequence[chosen],
            position[chosen],
            acts[batch_row[chosen, None], around, neuron[:, None]],
        )
        if held:
            kept = pick.clamp(max=held - 1).cpu()  # where an old entry stays: its old row
            values, _, sequences, positions, windows = (
                *(f.gather(0, kept) for f in top.fields()[:4]),
                top.windows.gather(0, _along_window(kept, top.windows)),
            )
        else:
            values, sequences, positions = (torch.empty(pick.shape, dtype=f.dtype) for f in fresh[:3])
            windows = torch.empty((*pick.shape, len(WINDOW)))
        slot, neuron = slot.cpu(), neuron.cpu()
        for field, new in zip((values, sequences, positions, windows), fresh):
            field[slot, neuron] = new.cpu()
        return _TopContexts(values, keys.cpu(), sequences, positions, windows)


def _along_window(pick: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    return pick[..., None].expand(-1, -1, windows.shape[-1])


class ProfileRecorder:
    """Streaming per-neuron state of one model, fed during capture (``observe``), from which ``profiles``
    builds any neuron's profile afterwards.

    ``sequence_ids`` [S] token ids and ``masks`` [S] counted positions of every sequence, in order; they fix
    the strided positions of ``values`` the way a pass over all sequences in order would pick them."""

    def __init__(
        self, sequence_ids: list[list[int]], masks: list[list[bool]], layers: list[int], d_mlp: int,
        top_contexts: int = 5, max_values: int = 2000,
    ) -> None:  # fmt: skip
        self.sequence_ids, self.layers, self.top_contexts = sequence_ids, layers, top_contexts
        self._width = max((len(ids) for ids in sequence_ids), default=1)
        if len(sequence_ids) * self._width >= 2**TAG_BITS:
            raise UserInputError(
                f"{len(sequence_ids)} sequences of up to {self._width} tokens are too many to profile; "
                "pass --profile-top 0 or fewer prompts."
            )
        where = [(s, p) for s, mask in enumerate(masks) for p, counted in enumerate(mask) if counted]
        strided = where[:: max(1, len(where) // max_values)][:max_values]
        self._strided: dict[int, list[tuple[int, int]]] = {}  # sequence -> [(position, value slot)]
        for slot, (s, p) in enumerate(strided):
            self._strided.setdefault(s, []).append((p, slot))
        self._batch_slots: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.values = torch.zeros((len(strided), len(layers), d_mlp), dtype=torch.float32)
        self.filled = torch.zeros(len(strided), dtype=torch.bool)
        self._top: dict[int, _TopContexts] = {}
        self._readout: Readout | None = None
        self._tokenizer = None

    def observe(
        self, sequences: list[int], layer: int, acts: torch.Tensor, positions: torch.Tensor, counted: torch.Tensor
    ) -> None:
        """Fold one batch of ``layer``: ``acts`` [B, T, d_mlp] of the batch rows' ``sequences`` (global numbers),
        ``positions`` [B, T] the counted ones, ``counted`` [N, d_mlp] ``acts`` at those N positions (row-major
        order, as ``capture_stats`` passes them)."""
        acts = acts.detach().float()
        rows, where, slots = self._slots_of(tuple(sequences))
        self.values[slots, self.layers.index(layer)] = acts[rows.to(acts.device), where.to(acts.device)].cpu()
        self.filled[slots] = True
        if len(counted):  # a batch may count nothing (--positions pre-emoji: no emoji in its responses)
            self._top[layer] = _TopContexts.folded(self._top.get(layer), self.top_contexts, acts,
                                                   positions.to(acts.device), counted.float(),
                                                   torch.tensor(sequences), self._width)  # fmt: skip

    def _slots_of(self, sequences: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch rows, positions, value slots) of a batch's strided positions, worked out once per batch."""
        if sequences not in self._batch_slots:
            found = [(row, p, slot) for row, s in enumerate(sequences) for p, slot in self._strided.get(s, [])]
            self._batch_slots[sequences] = tuple(torch.tensor([f[i] for f in found], dtype=torch.long)
                                                 for i in range(3))  # fmt: skip
        return self._batch_slots[sequences]

    def keep_readout(self, lm: LoadedModel) -> None:
        """Keep what the profiles need of ``lm`` besides activations (its tokenizer, unembedding, final norm
        scale and output weights), so they can be built after the model itself is freed."""
        self._readout, self._tokenizer = Readout.of(lm, self.layers), lm.tokenizer

    def merge_ranks(self, shards) -> None:
        """Under torchrun each rank observed its share of the batches; afterwards rank 0 holds the whole state."""
        if shards.world == 1:
            return
        filled = self.filled.nonzero().squeeze(1)
        parts = shards.gather_objects([(filled, self.values[filled], self._top)])
        self._top = {}
        for slots, values, top in parts:
            self.values[slots] = values
            self.filled[slots] = True
            for layer, state in top.items():
                own = self._top.get(layer)
                self._top[layer] = state if own is None else own.merged(state, self.top_contexts)

    def profiles(self, neurons: list[tuple[int, int]], promoted: int = 8) -> dict:
        """``{"LAYER:INDEX": {"values", "contexts", "promoted_tokens"}}`` (after ``keep_readout``)."""
        tokenizer, profiles = self._tokenizer, {}
        promoted_by_neuron = self._readout.top_promoted_tokens(neurons, promoted)
        for (layer, index), promoted_tokens in zip(neurons, promoted_by_neuron):
            slot, top = self.layers.index(layer), self._top[layer]
            contexts = [
                self._context(tokenizer, int(top.sequence[j, index]), int(top.position[j, index]),
                              top.windows[j, index], float(top.values[j, index]))
                for j in range(len(top.values))
            ]  # fmt: skip
            profiles[f"{layer}:{index}"] = {
                "values": [_round(v) for v in self.values[self.filled, slot, index].tolist()],
                "contexts": contexts,
                "promoted_tokens": [
                    {"token": tokenizer.decode([token]), "logit": _round(change)} for token, change in promoted_tokens
                ],
            }
        return profiles

    def _context(self, tokenizer, sequence: int, position: int, window: torch.Tensor, activation: float) -> dict:
        ids = self.sequence_ids[sequence]
        begin, end = max(0, position - CONTEXT_BEFORE), min(len(ids), position + CONTEXT_AFTER + 1)
        offset = begin - (position - CONTEXT_BEFORE)
        return {
            "tokens": [tokenizer.decode([int(t)]) for t in ids[begin:end]],
            "activations": [_round(v) for v in window[offset : offset + end - begin].tolist()],
            "focus": position - begin,
            "activation": _round(activation),
        }
