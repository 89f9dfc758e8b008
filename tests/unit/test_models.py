"""Model references: HF dirs, PEFT adapters merged in fp32, architecture table, clear refusals."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config

from interp import models
from interp.architectures import ARCHITECTURES, spec_for_config
from interp.errors import UserInputError
from tests.conftest import save_tiny_model


def make_adapter(base_dir, out_dir, targets=("q_proj", "v_proj", "down_proj")):
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(out_dir)  # safetensors by default; records base_model_name_or_path
    return out_dir


def test_adapter_is_merged_onto_its_base(tiny_llama_dir, tmp_path):
    adapter = make_adapter(tiny_llama_dir, tmp_path / "adapter")
    source = models.resolve(str(adapter), base_ref=str(tiny_llama_dir))
    assert source.kind == "adapter"
    merged = models.load(source, device="cpu")
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter).eval()
    ids = torch.tensor([[1, 520, 4000, 17, 2]])
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        got = merged.model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)(input_ids=ids).logits
    assert (got - expected).abs().max() < 1e-4
    assert (got - plain).abs().max() > 1e-3  # the adapter really changed something


def test_adapter_for_another_base_is_refused(tiny_llama_dir, tmp_path):
    other = save_tiny_model(tmp_path / "wide", "llama", layers=1)
    adapter = make_adapter(other, tmp_path / "adapter")
    with pytest.raises(UserInputError, match="does not fit base"):
        models.load(str(adapter), base_ref=str(tiny_llama_dir), device="cpu")


def test_adapter_without_safetensors_is_refused(tiny_llama_dir, tmp_path):
    adapter = make_adapter(tiny_llama_dir, tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(UserInputError, match="safetensors"):
        models.resolve(str(adapter))


def test_gguf_reference_checks_magic_bytes(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"NOPE" + b"\0" * 16)
    with pytest.raises(UserInputError, match="magic"):
        models.resolve(str(fake))


def test_unsupported_architecture_lists_families():
    with pytest.raises(UserInputError, match="supported families: llama, mistral"):
        spec_for_config(type("Config", (), {"model_type": "mamba"})())


def test_gpt2_site_is_c_proj_input():
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32)).eval()
    spec = spec_for_config(model.config)
    assert spec.family == "gpt2"
    captured = {}
    handle = spec.site_module(model, 1).register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    hidden = {}
    handle2 = model.transformer.h[1].mlp.register_forward_pre_hook(lambda m, a: hidden.setdefault("x", a[0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    handle.remove()
    handle2.remove()
    mlp = model.transformer.h[1].mlp
    torch.testing.assert_close(captured["x"], mlp.act(mlp.c_fc(hidden["x"])))
    assert spec.output_weight(model, 1).shape == (32, 128)
    assert {spec.family for spec in ARCHITECTURES} >= {"llama", "mistral", "qwen2", "gemma", "gpt2"}


def test_model_shape_check_catches_wrong_width(tiny_llama_dir):
    lm = models.load(str(tiny_llama_dir), device="cpu")
    lm.model.config.intermediate_size = 99
    from interp.architectures import check_model_shape

    with pytest.raises(UserInputError, match="128 inputs but the config says"):
        check_model_shape(lm.model, lm.spec)
