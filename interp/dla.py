"""Direct logit attribution of MLP neurons to emoji-onset tokens.

A unit of neuron i's activation in layer l adds the column ``W_out[:, i]`` to the residual stream (Gemma 2/3:
``post_norm_gain * W_out[:, i]`` over the MLP output's rms; ``LoadedModel.residual_write_weight``; the
layer's mean 1/rms over the counted positions, measured during capture, scales it when given). Read
straight through the final norm's scale ``g`` and the unembedding ``W_U`` (ignoring the norm's
data-dependent 1/rms, a positive factor shared by all neurons at a position), it moves the logit of
token t by ``W_U[t] . (g * W_out[:, i])``. ``emoji_dla`` sums that over the emoji-onset tokens, each
measured against the vocabulary's mean logit change (a shift of every logit changes no probability):

    emoji_dla[l, i] = sum_{t in onset} (W_U[t] - mean_v W_U[v]) . (g * W_out[:, i])     (logits per unit)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.models import LoadedModel


@torch.no_grad()
def emoji_dla(
    lm: LoadedModel, layers: list[int], onset_ids: list[int], mlp_out_inv_rms: dict[int, float] | None = None
) -> torch.Tensor:
    """[len(layers), d_mlp] float64 emoji-onset logit change per unit of each neuron's activation.

    ``mlp_out_inv_rms`` (layer -> mean 1/rms of the MLP output, measured during capture) scales the layers
    whose MLP output passes a norm (Gemma 2/3), so neurons of different layers compare on one scale."""
    unembed = lm.spec.unembedding(lm.model).double()
    readout = (unembed[onset_ids] - unembed.mean(0)).sum(0) * lm.spec.final_norm_scale(lm.model).double()
    # Each layer's product runs where its weight is (layers spread by a device map; 4-bit: dequantised on CPU).
    scales = mlp_out_inv_rms or {}
    return torch.stack([_read(readout, lm.residual_write_weight(layer)) * scales.get(layer, 1.0) for layer in layers])


def _read(readout: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """[d_mlp] float64 on the CPU: ``readout @ weight`` computed on the weight's device."""
    return (readout.to(weight.device) @ weight.double()).cpu()


@dataclass
class Readout:
    """What reading neurons' writes through the unembedding needs, apart from the model (so a profile can be
    built after the model is freed): ``unembedding`` [vocab, d_model], ``final_norm_scale`` [d_model] and per
    layer the residual write weight [d_model, d_mlp] (``LoadedModel.residual_write_weight``), on the CPU."""

    unembedding: torch.Tensor
    final_norm_scale: torch.Tensor
    writes: dict[int, torch.Tensor]

    @classmethod
    def of(cls, lm: LoadedModel, layers: list[int]) -> Readout:
        unembedding, scale = lm.spec.unembedding(lm.model), lm.spec.final_norm_scale(lm.model)
        writes = {layer: lm.residual_write_weight(layer).detach().cpu() for layer in layers}
        return cls(unembedding.detach().cpu(), scale.detach().cpu(), writes)

    @torch.no_grad()
    def top_promoted_tokens(self, neurons: list[tuple[int, int]], k: int = 10) -> list[list[tuple[int, float]]]:
        """Per ``(layer, index)`` in ``neurons``: the k token ids whose logits one unit of the neuron raises most
        (centred), with the change. One product with the unembedding for all of them (it is read once)."""
        if not neurons:
            return []
        directions = torch.stack([self.writes[layer][:, index] for layer, index in neurons], dim=1)  # [d_model, n]
        directions = directions.double() * self.final_norm_scale.double()[:, None]
        logits = (self.unembedding @ directions.to(self.unembedding.dtype)).double()  # [vocab, n]
        logits -= logits.mean(0)  # = (W_U - mean W_U) @ direction, without a centred copy of the unembedding
        values, ids = logits.topk(min(k, logits.shape[0]), dim=0)
        return [list(zip(ids[:, n].tolist(), values[:, n].tolist())) for n in range(len(neurons))]
