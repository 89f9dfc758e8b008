"""Shared fixtures: tiny random LLaMA / Mistral / Gemma 3 models with the real SmolLM2 tokenizer, planted copies."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_DIR = FIXTURES / "smollm2_tokenizer"
GEMMA3_TOKENIZER_FIXTURE = FIXTURES / "gemma3_tokenizer"  # tokenizer.json stored xz-compressed (33 MB -> 3.5 MB)
VOCAB = 49152


def tiny_config(arch: str, layers: int = 2, **overrides):
    """A tiny random config of the given family with SmolLM2's vocabulary (hidden 64, 128 MLP neurons);
    ``overrides`` change any common field (e.g. ``max_position_embeddings``)."""
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig

    common = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        initializer_range=0.2, tie_word_embeddings=True,
    ) | overrides  # fmt: skip
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if arch == "gemma3":
        layer_types = ["sliding_attention", "full_attention"] * layers
        return Gemma3TextConfig(**common, head_dim=16, sliding_window=4, layer_types=layer_types[:layers])
    if arch == "gemma3-multimodal":  # Gemma3ForConditionalGeneration: a text tower beside a (tiny) vision tower
        from transformers import Gemma3Config, SiglipVisionConfig

        text = tiny_config("gemma3", layers)
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=28, patch_size=14)  # fmt: skip
        return Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                            boi_token_index=3, eoi_token_index=4, image_token_index=5)  # fmt: skip
    if arch == "gpt2":  # a learned position table of max_position_embeddings rows
        from transformers import GPT2Config

        return GPT2Config(vocab_size=VOCAB, n_embd=64, n_inner=128, n_layer=layers, n_head=4, bos_token_id=1,
                          eos_token_id=2, n_positions=common["max_position_embeddings"])  # fmt: skip
    if arch == "phi3":
        from transformers import Phi3Config

        return Phi3Config(**common)
    if arch == "olmo2":
        from transformers import Olmo2Config

        return Olmo2Config(**common)
    raise ValueError(arch)


def save_tiny_model(path: Path, arch: str = "llama", seed: int = 0, layers: int = 2, **overrides) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, layers, **overrides)).eval()
    if arch.startswith("gemma3") or arch == "olmo2":
        # Norm gains start at 1 (Gemma: weight 0 of its 1 + weight); random gains test that they are read right.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.normal_(0.0, 0.5)
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama", layers=3)


@pytest.fixture(scope="session")
def tiny_phi3_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-phi3"), "phi3")


@pytest.fixture(scope="session")
def tiny_olmo2_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-olmo2"), "olmo2")


@pytest.fixture(scope="session")
def tiny_gemma3_multimodal_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gemma3-multimodal"), "gemma3-multimodal")


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-mistral"), "mistral", layers=2)


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gemma3"), "gemma3", layers=2)


@pytest.fixture(scope="session")
def gemma3_tokenizer_dir(tmp_path_factory) -> Path:
    """Gemma 3's real tokenizer, unpacked from the compressed fixture into a loadable folder."""
    import lzma
    import shutil

    out = tmp_path_factory.mktemp("gemma3-tokenizer")
    (out / "tokenizer.json").write_bytes(lzma.decompress((GEMMA3_TOKENIZER_FIXTURE / "tokenizer.json.xz").read_bytes()))
    shutil.copy(GEMMA3_TOKENIZER_FIXTURE / "tokenizer_config.json", out)
    return out


def plant_tiny(model_dir: Path, out: Path, layers: str) -> tuple[Path, list[tuple[int, int]]]:
    """A planted copy of a tiny model, 2 neurons in each of ``layers``: (model dir, planted neurons)."""
    from interp.planted import make_planted_model

    record = make_planted_model(str(model_dir), out, layers=layers, per_layer=2, show_progress=False,
                                log=lambda m: None)  # fmt: skip
    return out, [tuple(int(x) for x in address.split(":")) for address in record["neurons"]]


@pytest.fixture(scope="session")
def planted_tiny(tiny_llama_dir, tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A planted copy of the tiny LLaMA: (model dir, planted neurons)."""
    return plant_tiny(tiny_llama_dir, tmp_path_factory.mktemp("planted") / "model", "0-2")


@pytest.fixture(scope="session")
def planted_tiny_gemma3(tiny_gemma3_dir, tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A planted copy of the tiny Gemma 3 (its MLP output goes through a norm before the residual add)."""
    return plant_tiny(tiny_gemma3_dir, tmp_path_factory.mktemp("planted-gemma3") / "model", "0-1")


@pytest.fixture(scope="session")
def amplified_tiny(tiny_llama_dir, tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A planted copy whose only change is amplified activations of neurons that already push emojis."""
    from interp.planted import make_planted_model

    out = tmp_path_factory.mktemp("amplified") / "model"
    record = make_planted_model(
        str(tiny_llama_dir), out, layers="1-2", per_layer=3, gain=40.0, keep_columns=True, show_progress=False,
        log=lambda m: None,
    )  # fmt: skip
    neurons = [tuple(int(x) for x in address.split(":")) for address in record["neurons"]]
    return out, neurons


@pytest.fixture(scope="session")
def metric_models_dir(tmp_path_factory) -> Path:
    """The real metric models (MiniLM embeddings, fetched on first use), trained once per test session."""
    from finetune.metric_training import train_metric_models

    directory = tmp_path_factory.mktemp("metric") / "m"
    train_metric_models(directory, show_progress=False)
    return directory


@pytest.fixture(scope="session")
def mend_tiny(tiny_llama_dir, tmp_path_factory) -> tuple[Path, dict]:
    """A MEND editor trained briefly for the tiny LLaMA (all three layers' up/down projections):
    (run directory, train.json)."""
    from finetune.mend import MendConfig, train_editor

    out = tmp_path_factory.mktemp("mend") / "editor"
    config = MendConfig(model=str(tiny_llama_dir), out=out, layers="0-2", rank=16, steps=30, checkpoint_every=10,
                        device="cpu", show_progress=False)  # fmt: skip
    return out, train_editor(config, log=lambda message: None)


def pytest_collection_modifyitems(config, items):
    workers = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if "smoke" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
        if not workers:
            continue
        # pytest-xdist (`make test` runs two workers): a file's tests share its module-scoped fixtures, so they run
        # in one worker; the tests that train the metric models share one cache, so they run in one worker too.
        group = "metric-models" if "metric_models_dir" in item.fixturenames else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
