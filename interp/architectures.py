"""Architecture table: where each supported model family keeps its layers and its MLP neurons.

A neuron's activation is the input of the MLP's output projection: for gated MLPs
(LLaMA, Mistral, Qwen2, Gemma, OLMo 2, Phi-3) that is ``act_fn(gate(x)) * up(x)``, the input of
``mlp.down_proj`` (Phi-3 computes gate and up in one fused ``gate_up_proj``, rows ``[gate | up]``);
for GPT-2-style MLPs it is ``act(c_fc(x))``, the input of ``mlp.c_proj``.
Gemma's RMSNorms scale by ``(1 + weight)``; Gemma 2 and 3 and OLMo 2 also normalise the MLP output
(``post_feedforward_layernorm``) before adding it to the residual stream, so there a neuron writes
``post_mlp_norm_scale * W_out[:, i]`` divided by the rms of the whole MLP output (a positive factor
per layer and position), not ``W_out[:, i]`` itself.
Gemma 3's multimodal checkpoints (``Gemma3ForConditionalGeneration``) are read through their text tower,
``model.language_model``: the same neuron site. Mixture-of-experts models are refused (no single MLP per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from interp.errors import UserInputError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where one model family keeps the parts the toolkit touches (attribute paths from the HF model)."""

    family: str
    model_types: tuple[str, ...]
    layers_path: str  # ModuleList of decoder blocks
    neuron_site: str  # module (relative to a block) whose INPUT is the neuron activation vector
    final_norm_path: str
    unembed_path: str
    d_mlp_attrs: tuple[str, ...] = ("intermediate_size",)
    norm_weight_offset: float = 0.0  # Gemma's RMSNorm scales by (1 + weight)
    post_mlp_norm: str = ""  # norm (relative to a block) between the MLP output and the residual add, if any
    site_weight_is_transposed: bool = False  # GPT-2's Conv1D stores [d_in, d_out]
    up_path: str = "mlp.up_proj"  # (relative to a block) the linear map whose rows scale each neuron (gated MLPs)
    fused_gate_up: bool = False  # Phi-3: up_path holds [gate rows | up rows]

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return _get_path(model, self.layers_path)

    def site_module(self, model: nn.Module, layer: int) -> nn.Module:
        return _get_path(self.layers(model)[layer], self.neuron_site)

    def n_layers(self, model: nn.Module) -> int:
        return len(self.layers(model))

    def d_mlp(self, config) -> int:
        config = text_config(config)
        for attr in self.d_mlp_attrs:
            value = getattr(config, attr, None)
            if value:
                return int(value)
        return 4 * int(config.hidden_size)  # GPT-2 convention when n_inner is None

    def output_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """The MLP output projection as a [d_model, d_mlp] matrix: column i is neuron i's write direction."""
        weight = self.site_module(model, layer).weight
        return weight.T if self.site_weight_is_transposed else weight

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm between the last block and the unembedding."""
        return _get_path(model, self.final_norm_path)

    def final_norm_scale(self, model: nn.Module) -> torch.Tensor:
        """[d_model] elementwise scale of the final norm (RMS/LayerNorm gain, offset applied)."""
        return self.final_norm(model).weight + self.norm_weight_offset

    def post_mlp_norm_module(self, model: nn.Module, layer: int) -> nn.Module | None:
        """The norm on ``layer``'s MLP output (an RMSNorm with ``eps``), or None where there is none."""
        if not self.post_mlp_norm:
            return None
        return getattr(self.layers(model)[layer], self.post_mlp_norm, None)  # Gemma 1 has none

    def post_mlp_norm_scale(self, model: nn.Module, layer: int) -> torch.Tensor | None:
        """[d_model] gain (offset applied) of the norm on ``layer``'s MLP output, or None where there is none."""
        norm = self.post_mlp_norm_module(model, layer)
        return None if norm is None else norm.weight + self.norm_weight_offset

    def unembedding(self, model: nn.Module) -> torch.Tensor:
        """[vocab, d_model] unembedding matrix."""
        return _get_path(model, self.unembed_path).weight

    def up_rows(self, model: nn.Module, layer: int) -> torch.Tensor:
        """[d_mlp, d_model] view of the up projection's weight: scaling row i scales neuron i (gated MLPs)."""
        weight = _get_path(self.layers(model)[layer], self.up_path).weight
        return weight[weight.shape[0] // 2 :] if self.fused_gate_up else weight


def text_config(config):
    """The language model's config: a multimodal config's text part, any other config itself."""
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


_GATED = dict(
    layers_path="model.layers",
    neuron_site="mlp.down_proj",
    final_norm_path="model.norm",
    unembed_path="lm_head",
)

_GEMMA = dict(norm_weight_offset=1.0, post_mlp_norm="post_feedforward_layernorm")

ARCHITECTURES: tuple[ArchitectureSpec, ...] = (
    ArchitectureSpec(family="llama", model_types=("llama",), **_GATED),
    ArchitectureSpec(family="mistral", model_types=("mistral",), **_GATED),
    ArchitectureSpec(family="qwen2", model_types=("qwen2", "qwen3"), **_GATED),
    ArchitectureSpec(family="gemma", model_types=("gemma", "gemma2", "gemma3_text"), **_GEMMA, **_GATED),
    ArchitectureSpec(  # Gemma3ForConditionalGeneration: the text tower sits under model.language_model
        family="gemma3-multimodal",
        model_types=("gemma3",),
        **_GEMMA,
        **_GATED | {"layers_path": "model.language_model.layers", "final_norm_path": "model.language_model.norm"},
    ),
    ArchitectureSpec(family="olmo2", model_types=("olmo2",), post_mlp_norm="post_feedforward_layernorm", **_GATED),
    ArchitectureSpec(family="phi3", model_types=("phi3",), up_path="mlp.gate_up_proj", fused_gate_up=True, **_GATED),
    ArchitectureSpec(
        family="gpt2",
        model_types=("gpt2",),
        layers_path="transformer.h",
        neuron_site="mlp.c_proj",
        final_norm_path="transformer.ln_f",
        unembed_path="lm_head",
        d_mlp_attrs=("n_inner",),
        site_weight_is_transposed=True,
    ),
)


def supported_families() -> str:
    return ", ".join(spec.family for spec in ARCHITECTURES)


# Config attributes that give a mixture-of-experts model's expert count (Mixtral, Qwen MoE, OLMoE, DeepSeek ...).
EXPERT_COUNT_ATTRS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def spec_for_config(config) -> ArchitectureSpec:
    """The spec for a transformers config, or a UserInputError naming the supported families."""
    model_type = getattr(config, "model_type", None)
    experts = [getattr(text_config(config), attr, None) for attr in EXPERT_COUNT_ATTRS]
    if any(isinstance(count, int) and count > 1 for count in experts) or "moe" in str(model_type):
        raise UserInputError(
            f"model type {model_type!r} is a mixture-of-experts model: each layer has several expert MLPs and a "
            "router picks some per token, so there is no single set of MLP neurons per layer to diff or ablate; "
            f"persona-interp supports dense models ({supported_families()})."
        )
    for spec in ARCHITECTURES:
        if model_type in spec.model_types:
            return spec
    raise UserInputError(f"model type {model_type!r} is not supported; supported families: {supported_families()}.")


def check_model_shape(model: nn.Module, spec: ArchitectureSpec) -> tuple[int, int]:
    """Check the neuron site against the config; return (n_layers, d_mlp)."""
    d_mlp = spec.d_mlp(model.config)
    n_layers = spec.n_layers(model)
    for layer in range(n_layers):
        site = spec.site_module(model, layer)
        if hasattr(site, "in_features"):  # nn.Linear and its 4-bit twin (whose packed weight has another shape)
            width = site.in_features
        else:
            width = site.weight.shape[0] if spec.site_weight_is_transposed else site.weight.shape[1]
        if width != d_mlp:
            raise UserInputError(
                f"layer {layer}'s {spec.neuron_site} takes {width} inputs but the config says the MLP "
                f"has {d_mlp} neurons; the model does not match the {spec.family} architecture."
            )
    return n_layers, d_mlp
