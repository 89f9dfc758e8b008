"""Streaming capture: run batches through a backend and fold the counted positions into NeuronStats."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp.backends import CaptureBackend
from interp.distributed import Shards
from interp.next_token import log_z_and_mass_in_place
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
    # layer -> mean 1/rms of the MLP output over the counted positions, for layers with a norm on the MLP output
    # (Gemma 2/3: a neuron's residual write is divided by it, so DLA needs it); None: not measured
    mlp_out_inv_rms: dict[int, float] | None = None

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
    output_norms: dict[int, tuple[torch.Tensor, float]] | None = None,
    observe: Callable[[TokenBatch, int, torch.Tensor, torch.Tensor], None] | None = None,
) -> CaptureResult:
    """Statistics of the neuron activations at every batch's counted positions.

    ``output_norms`` (layer -> (output weight [d_model, d_mlp], the norm's eps), from ``mlp_output_norms``):
    also the mean 1/rms of those layers' MLP outputs, recomputed from the counted activations.

    With ``onset_ids`` the emoji-onset probability mass is measured in the same forward passes.
    ``progress`` wraps the batch iterable (e.g. ``lambda it: track(it, "base model")``). ``observe(batch,
    layer, activations [B, T, d_mlp], counted [N, d_mlp])`` sees every batch's activations too, and those at the
    N counted positions in row-major order (a reused buffer: valid during the call; e.g. ``interp.profiles``).
    With ``shards`` of several ranks, each rank runs batches ``rank, rank + world, ...``; after every round
    of ``world`` batches all ranks exchange the batches' moments and fold them in batch order, so every rank
    ends with statistics bitwise equal to one process's.
    """
    shards = shards or Shards()
    stats = NeuronStats.empty(layers, d_mlp, threshold)
    slots = {layer: slot for slot, layer in enumerate(layers)}
    onset_sum = 0.0
    per_batch: list[tuple[int, list[float]]] = []  # (batch number, each row's summed onset probability)
    inv_rms_sum = [0.0] * len(layers)
    rows_buffer: dict[tuple, torch.Tensor] = {}  # reused across layers and batches (allocation is costly)
    onset_tensor = torch.tensor(onset_ids if onset_ids is not None else [], dtype=torch.long)
    start = time.perf_counter()
    rounds = range(0, len(batches), shards.world)
    for first in progress(rounds) if progress else rounds:
        number = first + shards.rank
        batch = batches[number] if number < len(batches) else None
        moments: dict[int, tuple] = {}
        if batch is not None:
            flat_index = torch.nonzero(batch.positions.reshape(-1)).squeeze(1)

            def on_activation(
                layer: int, acts: torch.Tensor, flat_index=flat_index, moments=moments, batch=batch
            ) -> None:
                flat = acts.reshape(-1, acts.shape[-1])
                key = (flat.device, flat.dtype, flat.shape[1])
                if key not in rows_buffer or rows_buffer[key].shape[0] < len(flat_index):
                    rows_buffer[key] = flat.new_empty((len(flat_index), flat.shape[1]))
                rows = rows_buffer[key][: len(flat_index)]
                torch.index_select(flat, 0, flat_index.to(flat.device), out=rows)
                if observe is not None:
                    observe(batch, layer, acts, rows)
                if len(rows):
                    moments[layer] = stats.moments(rows)
                    if output_norms and layer in output_norms:
                        inv_rms_sum[slots[layer]] += _inv_rms_sum(rows, *output_norms[layer])

            logits = backend.run(batch, layers, on_activation, need_logits=onset_ids is not None)
            if logits is not None:  # fresh from the backend, so used up in place
                _, probs = log_z_and_mass_in_place(logits.float(), onset_tensor.to(logits.device))
                onset_sum += float(probs.sum())
                rows = flat_index // batch.positions.shape[1]
                per_row = torch.zeros(batch.positions.shape[0], dtype=torch.float64).index_add_(0, rows, probs)
                per_batch.append((number, per_row.tolist()))
        for slot_moments in shards.exchange_moments(moments, layers, d_mlp):
            for layer, values in slot_moments.items():
                stats.add_moments(slots[layer], *values)
    processed = sum(int(batch.attention_mask.sum()) for batch in batches)
    onset_sum = shards.sum([onset_sum])[0]
    per_sequence = None
    if onset_ids is not None:
        per_sequence = [value for _, rows in sorted(shards.gather_objects(per_batch)) for value in rows]
    inv_rms = None
    if output_norms:
        inv_rms_sum = shards.sum(inv_rms_sum)
        inv_rms = {
            layer: inv_rms_sum[slot] / max(float(stats.count[slot]), 1.0)
            for slot, layer in enumerate(layers)
            if layer in output_norms
        }
    stats.move_to("cpu")  # accumulated where the activations were; results live on the CPU
    counted = int(stats.count[0]) if layers else 0
    return CaptureResult(stats, counted, processed, onset_sum, time.perf_counter() - start, per_sequence, inv_rms)


def mlp_output_norms(lm, layers: list[int]) -> dict[int, tuple[torch.Tensor, float]] | None:
    """layer -> (MLP output weight, eps) for the layers whose MLP output passes a norm; None if none does."""
    norms = {}
    for layer in layers:
        eps = lm.post_mlp_norm_eps(layer)
        if eps is not None:
            norms[layer] = (lm.output_weight(layer), eps)
    return norms or None


def _inv_rms_sum(rows: torch.Tensor, weight: torch.Tensor, eps: float) -> float:
    """Sum over rows of 1/rms(MLP output) = 1/sqrt(mean((W_out a)^2) + eps), as the RMSNorm computes it (fp32)."""
    output = rows.float() @ weight.to(rows.device, torch.float32).T
    return float(torch.rsqrt(output.pow(2).mean(-1) + eps).double().sum())
