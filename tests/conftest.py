"""Shared fixtures: tiny random LLaMA / Mistral models with the real SmolLM2 tokenizer, and planted copies."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_DIR = FIXTURES / "smollm2_tokenizer"
VOCAB = 49152


def tiny_config(arch: str, layers: int = 2):
    """A tiny random config of the given family with SmolLM2's vocabulary (hidden 64, 128 MLP neurons)."""
    from transformers import LlamaConfig, MistralConfig

    common = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        initializer_range=0.2, tie_word_embeddings=True,
    )  # fmt: skip
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=None)
    raise ValueError(arch)


def save_tiny_model(path: Path, arch: str = "llama", seed: int = 0, layers: int = 2) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, layers)).eval()
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama", layers=3)


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-mistral"), "mistral", layers=2)


@pytest.fixture(scope="session")
def planted_tiny(tiny_llama_dir, tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A planted copy of the tiny LLaMA: (model dir, planted neurons)."""
    from interp.planted import make_planted_model

    out = tmp_path_factory.mktemp("planted") / "model"
    record = make_planted_model(
        str(tiny_llama_dir), out, layers="0-2", per_layer=2, show_progress=False, log=lambda m: None
    )
    neurons = [tuple(int(x) for x in address.split(":")) for address in record["neurons"]]
    return out, neurons


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
    from probes.metric_models import train_metric_models

    directory = tmp_path_factory.mktemp("metric") / "m"
    train_metric_models(directory, show_progress=False)
    return directory


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "smoke" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
