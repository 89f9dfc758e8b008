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
from interp.models import LoadedModel

CONTEXT_BEFORE, CONTEXT_AFTER = 12, 4
WINDOW = torch.arange(-CONTEXT_BEFORE, CONTEXT_AFTER + 1)  # offsets of a context around its position


def _round(value: float) -> float:
    return float(f"{value:.4g}")


@dataclass
class _TopContexts:
    """One layer's running top-k over counted positions: ``values``/``sequence``/``position`` [k, d_mlp],
    ``windows`` [k, d_mlp, len(WINDOW)] (the neuron's activations around the position; clamped at the edges)."""

    values: torch.Tensor
    sequence: torch.Tensor
    position: torch.Tensor
    windows: torch.Tensor

    def merged(self, other: _TopContexts, k: int) -> _TopContexts:
        """The top ``k`` of both; equal activations (a prompt prefix that several sequences share) in sequence and
        position order, so the result does not depend on how the batches were grouped or split over ranks."""
        values, sequence, position = (torch.cat([a, b]) for a, b in zip(self.key(), other.key()))
        order = position.argsort(dim=0, stable=True)
        for key in (sequence, -values):  # stable sorts: the last key decides, the earlier ones break its ties
            order = order.gather(0, key.gather(0, order).argsort(dim=0, stable=True))
        pick = order[:k]
        windows = torch.cat([self.windows, other.windows])
        return _TopContexts(values.gather(0, pick), sequence.gather(0, pick), position.gather(0, pick),
                            windows.gather(0, pick[..., None].expand(-1, -1, windows.shape[-1])))  # fmt: skip

    def key(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.values, self.sequence, self.position


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
        batch_top = self._batch_top(torch.tensor(sequences), acts, positions.to(acts.device), counted.float())
        top = self._top.get(layer)
        self._top[layer] = batch_top if top is None else top.merged(batch_top, self.top_contexts)

    def _slots_of(self, sequences: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch rows, positions, value slots) of a batch's strided positions, worked out once per batch."""
        if sequences not in self._batch_slots:
            found = [(row, p, slot) for row, s in enumerate(sequences) for p, slot in self._strided.get(s, [])]
            self._batch_slots[sequences] = tuple(torch.tensor([f[i] for f in found], dtype=torch.long)
                                                 for i in range(3))  # fmt: skip
        return self._batch_slots[sequences]

    def _batch_top(
        self, sequences: torch.Tensor, acts: torch.Tensor, positions: torch.Tensor, counted: torch.Tensor
    ) -> _TopContexts:
        rows, width, d_mlp = acts.shape
        flat = torch.nonzero(positions.reshape(-1)).squeeze(1)  # flat (row, position) index of each counted row
        values, index = counted.topk(min(self.top_contexts, len(flat)), dim=0)  # [k, d_mlp]
        index = flat[index]
        row, position = index // width, index % width
        around = (position[..., None] + WINDOW.to(acts.device)).clamp(0, width - 1)  # [k, d_mlp, window]
        neuron = torch.arange(d_mlp, device=acts.device)[None, :, None].expand_as(around)
        windows = acts[row[..., None].expand_as(around), around, neuron]
        return _TopContexts(values.cpu(), sequences[row.cpu()], position.cpu(), windows.cpu())

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
