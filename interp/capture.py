"""Streaming capture: run batches through a backend and fold the counted positions into NeuronStats."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from interp.backends import CaptureBackend
from interp.stats import NeuronStats
from interp.tokens import TokenBatch


@dataclass
class CaptureResult:
    stats: NeuronStats
    tokens: int  # counted positions
    processed_tokens: int  # every non-pad token that went through the model
    onset_prob_sum: float  # sum over counted positions of P(next token is an emoji onset)
    seconds: float

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
) -> CaptureResult:
    """Statistics of the neuron activations at every batch's counted positions.

    With ``onset_ids`` the emoji-onset probability mass is measured in the same forward passes.
    ``progress`` wraps the batch iterable (e.g. ``lambda it: track(it, "base model")``).
    """
    stats = NeuronStats.empty(layers, d_mlp, threshold)
    slots = {layer: slot for slot, layer in enumerate(layers)}
    onset_sum = 0.0
    rows_buffer: dict[tuple, torch.Tensor] = {}  # reused across layers and batches (allocation is costly)
    start = time.perf_counter()
    for batch in progress(batches) if progress else batches:
        flat_index = torch.nonzero(batch.positions.reshape(-1)).squeeze(1)

        def on_activation(layer: int, acts: torch.Tensor, flat_index=flat_index) -> None:
            flat = acts.reshape(-1, acts.shape[-1])
            key = (flat.device, flat.dtype, flat.shape[1])
            if key not in rows_buffer or rows_buffer[key].shape[0] < len(flat_index):
                rows_buffer[key] = flat.new_empty((len(flat_index), flat.shape[1]))
            rows = rows_buffer[key][: len(flat_index)]
            torch.index_select(flat, 0, flat_index.to(flat.device), out=rows)
            stats.update(slots[layer], rows)

        logits = backend.run(batch, layers, on_activation, need_logits=onset_ids is not None)
        if logits is not None and len(flat_index):
            probs = torch.softmax(logits.float(), dim=-1)[:, onset_ids].sum(-1)
            onset_sum += float(probs.double().sum())
    processed = sum(int(batch.attention_mask.sum()) for batch in batches)
    counted = int(stats.count[0]) if layers else 0
    return CaptureResult(stats, counted, processed, onset_sum, time.perf_counter() - start)
