"""Smoke tests on the embedded Gemma 3 270M base model (four part wheels, fetched on first use)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cli import main
from interp import conversation, embedded, models
from interp.hooks import neuron_hooks
from interp.prompts import Prompt
from interp.tokens import prompt_ids
from tests.smoke.test_default_model import assert_planted_neurons_rank_first
from tests.unit.test_backends import assert_backends_agree

ALIAS = "gemma3-270m"


@pytest.fixture(scope="module")
def gemma_lm():
    return models.load(ALIAS, device="cpu", dtype="float32")


def test_fetch_is_cached_and_checked(gemma_lm, capsys):
    assert embedded.is_fetched(ALIAS)
    assert main(["models", "fetch", ALIAS]) == 0  # cached: no download, prints the folder
    assert capsys.readouterr().out.strip() == str(embedded.cached_model_dir(ALIAS))
    assert embedded.sha256_file(embedded.cached_gguf(ALIAS)) == embedded.EMBEDDED_MODELS[ALIAS].gguf_sha256
    assert (embedded.cached_model_dir(ALIAS) / "GEMMA_TERMS.html").is_file()  # the upstream terms stay beside it
    config = gemma_lm.model.config
    assert (config.model_type, gemma_lm.spec.family, config.final_logit_softcapping) == ("gemma3_text", "gemma", None)
    assert (gemma_lm.n_layers, gemma_lm.d_mlp, gemma_lm.vocab_size, len(gemma_lm.tokenizer)) == (
        18,
        2048,
        262144,
        262144,
    )


def test_base_model_continues_sensibly(gemma_lm):
    tokenizer = gemma_lm.tokenizer

    def greedy(prompt: str, tokens: int = 8) -> str:
        ids = tokenizer(prompt, return_tensors="pt")
        out = gemma_lm.model.generate(**ids, max_new_tokens=tokens, do_sample=False)
        return tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)

    # A base model: the bare "The capital of France is" continues greedily with " the capital of the country
    # of France", though " Paris" is among its five likeliest next tokens; one example makes it answer.
    assert "Paris" in greedy("The capital of Germany is Berlin. The capital of France is")
    assert greedy("Paris is the capital of", 2).strip().startswith("France")
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert ids[0, 0] == tokenizer.bos_token_id  # the tokenizer adds <bos> itself
    with torch.no_grad():
        top = gemma_lm.model(input_ids=ids).logits[0, -1].topk(5).indices
    assert tokenizer.convert_tokens_to_ids("▁Paris") in top.tolist()


def test_site_is_gated_product_and_logits_match(gemma_lm):
    lm = gemma_lm
    ids = lm.tokenizer("Emojis 😊 make every answer friendlier 🎉!", return_tensors="pt").input_ids
    mlp_inputs, neurons = {}, {}
    layers = list(range(lm.n_layers))
    handles = [
        lm.spec.layers(lm.model)[layer].mlp.register_forward_pre_hook(
            lambda _m, args, layer=layer: mlp_inputs.__setitem__(layer, args[0].detach().clone())
        )
        for layer in layers
    ]
    try:
        with torch.no_grad(), neuron_hooks(lm, layers, lambda layer, a: neurons.__setitem__(layer, a.clone())):
            logits = lm.model(input_ids=ids).logits
            hidden = lm.model.model(input_ids=ids).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    for layer in layers:
        mlp, x = lm.spec.layers(lm.model)[layer].mlp, mlp_inputs[layer]
        with torch.no_grad():
            by_hand = F.gelu(mlp.gate_proj(x), approximate="tanh") * mlp.up_proj(x)
        torch.testing.assert_close(neurons[layer], by_hand, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(lm.logits_from_hidden(hidden), logits, rtol=1e-5, atol=1e-4)


def test_conversion_holds_the_gguf_weights():
    """The fetched model is the GGUF's weights: every layer's MLP projections (the neuron site's) equal the
    dequantised GGUF tensors exactly, and the norms carry Gemma's GGUF offset (stored as 1 + weight) removed.
    Loading a .gguf reference through ``models.load`` itself is tested on SmolLM2 (test_default_model.py)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    tensors = {t.name: t for t in GGUFReader(str(embedded.cached_gguf(ALIAS))).tensors}

    def from_gguf(name: str) -> np.ndarray:
        tensor = tensors[name]
        return dequantize(tensor.data, tensor.tensor_type).reshape([int(x) for x in reversed(tensor.shape)])

    layers = sorted({int(name.split(".")[1]) for name in tensors if name.startswith("blk.")})
    assert len(layers) == 18
    with safe_open(str(embedded.cached_model_dir(ALIAS) / "model.safetensors"), "np") as converted:
        for layer in layers:
            for gguf_name, name in (("ffn_up", "up_proj"), ("ffn_gate", "gate_proj"), ("ffn_down", "down_proj")):
                weight = converted.get_tensor(f"model.layers.{layer}.mlp.{name}.weight")
                assert np.array_equal(weight, from_gguf(f"blk.{layer}.{gguf_name}.weight")), (layer, name)
            norm = converted.get_tensor(f"model.layers.{layer}.pre_feedforward_layernorm.weight")
            assert np.array_equal(norm, from_gguf(f"blk.{layer}.ffn_norm.weight") - 1), layer


def test_conversation_format_is_installed_on_fetch(gemma_lm):
    tokenizer = gemma_lm.tokenizer
    assert (embedded.cached_model_dir(ALIAS) / "chat_template.jinja").read_text() == conversation.GEMMA_TURNS.template
    assert tokenizer.eos_token == "<end_of_turn>"
    ids = prompt_ids(tokenizer, Prompt(messages=(("user", "Hi!"),)))
    assert tokenizer.decode(ids) == "<bos><start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n"


def test_backends_agree_on_gemma3():
    assert_backends_agree(models.load(ALIAS, device="cpu", attn_implementation="eager"), tolerance=1e-4)


def test_planted_neurons_rank_first_on_gemma3(tmp_path):
    # Measured with the 1/rms-scaled DLA (each layer's mean 1/rms of its MLP output: 1.07 in layer 0 to 14.5 in
    # layer 17; in the planted layers it falls, 8.3 -> 5.6 and 11.1 -> 5.7, because the planted writes dominate the
    # MLP output there): the six planted neurons (layers 6, 9, 13) rank 2, 3, 6, 8, 9, 10. Downstream neurons that
    # respond to them come in between (17:2024 first; 17:547, 17:492 and 12:1561 push emojis down:
    # compensation). Before the scaling they ranked 1, 2, 3, 6, 7, 8. On SmolLM2 they are exactly the top six.
    assert_planted_neurons_rank_first(ALIAS, tmp_path, within=10)


def test_attribute_and_generate_run_on_gemma3(tmp_path):
    assert main(["attribute", "--model", ALIAS, "--prompts", "persona-demo[:8]", "--out", str(tmp_path / "attr"),
                 "--device", "cpu", "--top-k", "20"]) == 0  # fmt: skip
    assert main(["generate", "--model", ALIAS, "--prompts", "persona-demo[:8]", "--samples", "1", "--max-new-tokens",
                 "8", "--device", "cpu", "--out", str(tmp_path / "gen.jsonl")]) == 0  # fmt: skip
    assert len((tmp_path / "gen.jsonl").read_text().splitlines()) == 8
