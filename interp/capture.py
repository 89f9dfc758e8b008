"""Streaming capture: run batches through a backend and fold the counted positions into NeuronStats."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from interp.backends import CaptureBackend
from interp.distributed import Shards
from interp.stats import NeuronStats
from interp.tokens import TokenBatch


@dataclass
class CaptureResult:
    stats: NeuronStats
    tokens: int  # counted positions
    processed_tokens: int  # every non-pad token that went through the model
    onset_prob_sum: float  # sum over counted positions of P(next token is an emoji onset)
    seconds: float
    onset_per_sequence: list[float] | None = None  # that sum per sequence, in batch order (None: not measured)

    @property
    def onset_prob(self) -> float:
        """Mean probability mass on emoji-onset tokens at the counted positions."""
        return self.onset_prob_sum / self.tokens if self.tokens else float("nan")


def capture_stats(
    backend: CaptureBackend,
    batches: list[TokenBatch],
    layers: list[int],
    d_mlp: int,
    threshold: float,
    onset_ids: list[int] | None = None,
    progress=None,
    shards: Shards | None = None,
) -> CaptureResult:
    """Statistics of the neuron activations at every batch's counted positions.

    With ``onset_ids`` the emoji-onset probability mass is measured in the same forward passes.
    ``progress`` wraps the batch iterable (e.g. ``lambda it: track(it, "base model")``).
    With ``shards`` of several ranks, each rank runs batches ``rank, rank + world, ...``; after every round
    of ``world`` batches all ranks exchange the batches' moments and fold them in batch order, so every rank
    ends with statistics bitwise equal to one process's.
    """
    shards = shards or Shards()
    stats = NeuronStats.empty(layers, d_mlp, threshold)
    slots = {layer: slot for slot, layer in enumerate(layers)}
    onset_sum = 0.0
    per_batch: list[tuple[int, list[float]]] = []  # (batch number, each row's summed onset probability)
    rows_buffer: dict[tuple, torch.Tensor] = {}  # reused across layers and batches (allocation is costly)
    start = time.perf_counter()
    rounds = range(0, len(batches), shards.world)
    for first in progress(rounds) if progress else rounds:
        batch = batches[first + shards.rank] if first + shards.rank < len(batches) else None
        moments: dict[int, tuple] = {}
        if batch is not None:
            flat_index = torch.nonzero(batch.positions.reshape(-1)).squeeze(1)

            def on_activation(layer: int, acts: torch.Tensor, flat_index=flat_index, moments=moments) -> None:
                flat = acts.reshape(-1, acts.shape[-1])
                key = (flat.device, flat.dtype, flat.shape[1])
                if key not in rows_buffer or rows_buffer[key].shape[0] < len(flat_index):
                    rows_buffer[key] = flat.new_empty((len(flat_index), flat.shape[1]))
                rows = rows_buffer[key][: len(flat_index)]
                torch.index_select(flat, 0, flat_index.to(flat.device), out=rows)
                if len(rows):
                    moments[layer] = stats.moments(rows)

            logits = backend.run(batch, layers, on_activation, need_logits=onset_ids is not None)
            if logits is not None:
                probs = torch.softmax(logits.float(), dim=-1)[:, onset_ids].sum(-1).double().cpu()
                onset_sum += float(probs.sum())
                rows = flat_index // batch.positions.shape[1]
                per_row = torch.zeros(batch.positions.shape[0], dtype=torch.float64).index_add_(0, rows, probs)
                per_batch.append((first + shards.rank, per_row.tolist()))
        for slot_moments in shards.exchange_moments(moments, layers, d_mlp):
            for layer, values in slot_moments.items():
                stats.add_moments(slots[layer], *values)
    processed = sum(int(batch.attention_mask.sum()) for batch in batches)
    onset_sum = shards.sum([onset_sum])[0]
    per_sequence = None
    if onset_ids is not None:
        per_sequence = [value for _, rows in sorted(shards.gather_objects(per_batch)) for value in rows]
    stats.move_to("cpu")  # accumulated where the activations were; results live on the CPU
    counted = int(stats.count[0]) if layers else 0
    return CaptureResult(stats, counted, processed, onset_sum, time.perf_counter() - start, per_sequence)
