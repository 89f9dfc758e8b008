"""The three capture backends read the same neuron activations, equal to act_fn(gate(x)) * up(x), on every
supported gated family (Phi-3 fuses gate and up into one projection; Gemma 3's multimodal checkpoint keeps its
text tower at model.language_model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interp import models
from interp.backends import BACKENDS, make_backend
from interp.hooks import neuron_hooks
from interp.prompts import load_prompts
from interp.tokens import build_sequences, make_batches, position_mask


def _batch(lm):
    prompts = load_prompts("persona-demo")[:3]
    sequences = build_sequences(lm.tokenizer, prompts, raw=False, max_length=64)
    masks = [position_mask(s, "all", []) for s in sequences]
    return make_batches(sequences, masks, batch_size=3, pad_id=lm.tokenizer.pad_token_id)[0]


def capture_all(lm, backend_name, batch):
    captured = {}
    logits = make_backend(backend_name, lm).run(
        batch, list(range(lm.n_layers)), lambda layer, acts: captured.__setitem__(layer, acts.detach().clone()),
        need_logits=True,
    )  # fmt: skip
    return captured, logits


def assert_backends_agree(lm, tolerance=1e-4):
    batch = _batch(lm)
    assert batch.attention_mask.min() == 0, "the batch should contain padding"
    reference, reference_logits = capture_all(lm, "torch", batch)
    real = batch.attention_mask.bool()
    for name in BACKENDS[1:]:
        captured, logits = capture_all(lm, name, batch)
        for layer in range(lm.n_layers):
            difference = (captured[layer] - reference[layer])[real].abs().max().item()
            assert difference <= tolerance, f"{name} layer {layer}: max |diff| {difference}"
        assert (logits - reference_logits).abs().max().item() <= 1e-3


GATED_FAMILIES = [
    "tiny_llama_dir", "tiny_mistral_dir", "tiny_gemma3_dir", "tiny_phi3_dir", "tiny_olmo2_dir",
    "tiny_gemma3_multimodal_dir",
]  # fmt: skip


@pytest.mark.parametrize("fixture", GATED_FAMILIES)
def test_backends_agree_on_tiny_models(fixture, request):
    lm = models.load(str(request.getfixturevalue(fixture)), device="cpu")
    assert_backends_agree(lm)


def assert_site_is_gated_product(lm):
    """The torch hook's value equals act_fn(gate_proj(x)) * up_proj(x) computed by hand from the MLP input."""
    batch = _batch(lm)
    mlp_inputs, neurons = {}, {}
    handles = [
        lm.spec.layers(lm.model)[layer].mlp.register_forward_pre_hook(
            lambda _m, args, layer=layer: mlp_inputs.__setitem__(layer, args[0].detach().clone())
        )
        for layer in range(lm.n_layers)
    ]
    try:
        with (
            torch.no_grad(),
            neuron_hooks(lm, list(range(lm.n_layers)), lambda layer, a: neurons.__setitem__(layer, a.clone())),
        ):
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    assert set(neurons) == set(range(lm.n_layers))
    for layer in range(lm.n_layers):
        mlp, x = lm.spec.layers(lm.model)[layer].mlp, mlp_inputs[layer]
        with torch.no_grad():
            if hasattr(mlp, "gate_up_proj"):  # Phi-3: one projection, [gate | up]
                gate, up = F.linear(x, mlp.gate_up_proj.weight).chunk(2, dim=-1)
            else:
                gate, up = F.linear(x, mlp.gate_proj.weight), F.linear(x, mlp.up_proj.weight)
            act = mlp.activation_fn if hasattr(mlp, "gate_up_proj") else mlp.act_fn
            by_hand = act(gate) * up
        torch.testing.assert_close(neurons[layer], by_hand, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fixture", GATED_FAMILIES)
def test_site_is_gated_product_on_tiny_models(fixture, request):
    lm = models.load(str(request.getfixturevalue(fixture)), device="cpu")
    assert lm.n_layers == 2 or fixture == "tiny_llama_dir"
    assert_site_is_gated_product(lm)


def test_hooks_remove_themselves_after_errors(tiny_llama_dir):
    lm = models.load(str(tiny_llama_dir), device="cpu")

    def explode(layer, acts):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), neuron_hooks(lm, [0, 1], explode):
        lm.model(input_ids=torch.tensor([[1, 2, 3]]))
    for layer in range(lm.n_layers):
        assert not lm.spec.site_module(lm.model, layer)._forward_pre_hooks


@pytest.mark.parametrize("fixture", ["tiny_gemma3_dir", "tiny_olmo2_dir", "tiny_gemma3_multimodal_dir"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_mlp_output_inv_rms_equals_the_post_norm_input(fixture, tiny_llama_dir, backend_name, request):
    """Gemma 3's and OLMo 2's neuron writes are divided by the rms of the MLP output: capture measures its mean
    per layer, here checked against the post-MLP norm's own input read with a plain hook, and DLA is scaled by it."""
    from interp.capture import capture_stats, mlp_output_norms
    from interp.dla import emoji_dla
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(str(request.getfixturevalue(fixture)), device="cpu")
    batch = _batch(lm)
    layers = list(range(lm.n_layers))
    direct: dict[int, torch.Tensor] = {}
    handles = [
        lm.spec.post_mlp_norm_module(lm.model, layer).register_forward_pre_hook(
            lambda _m, args, layer=layer: direct.__setitem__(layer, args[0].detach())
        )
        for layer in layers
    ]
    try:
        with torch.no_grad():
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    result = capture_stats(make_backend(backend_name, lm), [batch], layers, lm.d_mlp, 0.1,
                           output_norms=mlp_output_norms(lm, layers))  # fmt: skip
    for layer in layers:
        norm = lm.spec.post_mlp_norm_module(lm.model, layer)
        eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
        counted = direct[layer][batch.positions].float()
        expected = torch.rsqrt(counted.pow(2).mean(-1) + eps).mean().item()
        assert result.mlp_out_inv_rms[layer] == pytest.approx(expected, rel=1e-4)
    assert len({round(v, 3) for v in result.mlp_out_inv_rms.values()}) == len(layers)  # layers differ: it matters
    onset = emoji_onset_ids(lm.tokenizer)
    scaled, unscaled = emoji_dla(lm, layers, onset, result.mlp_out_inv_rms), emoji_dla(lm, layers, onset)
    for slot, layer in enumerate(layers):
        assert torch.allclose(scaled[slot], unscaled[slot] * result.mlp_out_inv_rms[layer])
    llama = models.load(str(tiny_llama_dir), device="cpu")
    assert mlp_output_norms(llama, list(range(llama.n_layers))) is None  # LLaMA adds its MLP output as it is


def test_transformer_lens_installs_nothing_at_run_time(tiny_gemma3_multimodal_dir, monkeypatch):
    """TransformerLens 4 runs ``pip install torchvision`` when a multimodal config's processor fails to load; that
    replaced the pinned CPU torch with a CUDA build in CI. Booting through ``boot_bridge`` starts no process, where
    TransformerLens's own boot does."""
    import copy
    import subprocess

    from transformer_lens.model_bridge import TransformerBridge

    from interp.backends import boot_bridge

    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "check_call", lambda command, *args, **kwargs: started.append(command))
    lm = models.load(str(tiny_gemma3_multimodal_dir), device="cpu")
    boot_bridge(lm)
    assert started == []
    TransformerBridge.boot_transformers(
        str(lm.source.path), hf_model=copy.deepcopy(lm.model), tokenizer=lm.tokenizer, device="cpu"
    )
    assert any("torchvision" in command for command in started), "the unguarded boot should try to install"


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_capture_onset_mass_equals_a_float64_softmax(tiny_gemma3_dir, backend_name):
    """capture_stats' emoji-onset mass per sequence (read in place from the backend's logits) equals the float64
    softmax of the model's own logits at the counted positions, summed per sequence."""
    from interp.capture import capture_stats
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(str(tiny_gemma3_dir), device="cpu")
    batch = _batch(lm)
    onset = emoji_onset_ids(lm.tokenizer)
    result = capture_stats(make_backend(backend_name, lm), [batch], [0], lm.d_mlp, 0.1, onset_ids=onset)
    with torch.no_grad():
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    mass = (torch.softmax(logits, -1)[..., onset].sum(-1) * batch.positions).sum(-1)
    assert result.onset_per_sequence == pytest.approx(mass.tolist(), rel=1e-5)
    assert result.onset_prob_sum == pytest.approx(float(mass.sum()), rel=1e-5) and float(mass.min()) > 0
