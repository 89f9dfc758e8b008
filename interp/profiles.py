"""Neuron profiles for the report: what a few chosen neurons do on the prompts, in one model.

For each chosen neuron ``(layer, index)`` and one model, from forward passes over the same batches that
``diff-neurons`` counted:
- ``values``: up to ``max_values`` of its activations at the counted positions (an even stride through
  all of them, rounded to 4 significant digits), for distribution plots;
- ``contexts``: the ``top_contexts`` counted positions where it fires most, each with the surrounding
  tokens and the neuron's activation on every one of them (for highlighting);
- ``promoted_tokens``: the tokens one unit of its output raises most through the unembedding.
Memory is O(tokens x chosen neurons): only the chosen neurons' activations are kept.
"""

from __future__ import annotations

import torch

from interp.backends import TorchBackend
from interp.dla import top_promoted_tokens
from interp.models import LoadedModel
from interp.progress import track
from interp.tokens import TokenBatch

CONTEXT_BEFORE, CONTEXT_AFTER = 12, 4


def _round(value: float) -> float:
    return float(f"{value:.4g}")


@torch.no_grad()
def neuron_activations(
    lm: LoadedModel, batches: list[TokenBatch], neurons: list[tuple[int, int]], show_progress: bool = False
) -> list[torch.Tensor]:
    """Per sequence (batch order), a [tokens, len(neurons)] float32 CPU tensor of the chosen neurons."""
    layers = sorted({layer for layer, _ in neurons})
    columns = {layer: [i for i, (ly, _) in enumerate(neurons) if ly == layer] for layer in layers}
    indices = {layer: torch.tensor([neurons[i][1] for i in cols]) for layer, cols in columns.items()}
    backend = TorchBackend(lm)
    sequences: list[torch.Tensor] = []
    iterable = track(batches, "neuron profiles", total=len(batches)) if show_progress else batches
    for batch in iterable:
        out = torch.zeros((*batch.input_ids.shape, len(neurons)), dtype=torch.float32)

        def read(layer: int, acts: torch.Tensor, out=out) -> None:
            out[:, :, columns[layer]] = acts[:, :, indices[layer].to(acts.device)].float().cpu()

        backend.run(batch, layers, read)
        lengths = batch.attention_mask.sum(1).tolist()
        sequences.extend(out[row, :length] for row, length in enumerate(lengths))
    return sequences


def profile_neurons(
    lm: LoadedModel,
    batches: list[TokenBatch],
    neurons: list[tuple[int, int]],
    top_contexts: int = 5,
    max_values: int = 2000,
    promoted: int = 8,
    show_progress: bool = False,
) -> dict[str, dict]:
    """``{"LAYER:INDEX": {"values", "contexts", "promoted_tokens"}}`` for one model (see the module doc)."""
    if not neurons:
        return {}
    per_sequence = neuron_activations(lm, batches, neurons, show_progress)
    rows = [(batch, row) for batch in batches for row in range(batch.input_ids.shape[0])]
    ids = [batch.input_ids[row, : len(acts)] for (batch, row), acts in zip(rows, per_sequence)]
    counted = [batch.positions[row, : len(acts)] for (batch, row), acts in zip(rows, per_sequence)]
    where = [(s, p) for s, mask in enumerate(counted) for p in torch.nonzero(mask).squeeze(1).tolist()]
    if not where:
        return {}
    values = torch.stack([per_sequence[s][p] for s, p in where])  # [counted positions, neurons]
    stride = max(1, len(where) // max_values)
    profiles = {}
    for column, (layer, index) in enumerate(neurons):
        column_values = values[:, column]
        top = column_values.topk(min(top_contexts, len(where))).indices.tolist()
        contexts = [_context(lm.tokenizer, ids[s], per_sequence[s][:, column], p) for s, p in (where[i] for i in top)]
        profiles[f"{layer}:{index}"] = {
            "values": [_round(v) for v in column_values[::stride][:max_values].tolist()],
            "contexts": contexts,
            "promoted_tokens": [
                {"token": lm.tokenizer.decode([token]), "logit": _round(change)}
                for token, change in top_promoted_tokens(lm, layer, index, promoted)
            ],
        }
    return profiles


def _context(tokenizer, ids: torch.Tensor, acts: torch.Tensor, position: int) -> dict:
    begin, end = max(0, position - CONTEXT_BEFORE), min(len(ids), position + CONTEXT_AFTER + 1)
    return {
        "tokens": [tokenizer.decode([int(t)]) for t in ids[begin:end]],
        "activations": [_round(v) for v in acts[begin:end].tolist()],
        "focus": position - begin,
        "activation": _round(float(acts[position])),
    }
