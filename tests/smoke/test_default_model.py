"""Smoke tests on the embedded default model (SmolLM2-135M-Instruct); fetched on first use."""

from __future__ import annotations

import csv

import pytest
import torch

from cli import main
from interp import embedded, models
from tests.unit.test_backends import assert_backends_agree, assert_site_is_gated_product


@pytest.fixture(scope="module")
def default_lm():
    return models.load(embedded.DEFAULT_MODEL, device="cpu", dtype="float32")


def test_fetch_is_cached_and_checked(default_lm):
    assert embedded.is_fetched("smollm2-135m")
    assert (default_lm.n_layers, default_lm.d_mlp, default_lm.vocab_size) == (30, 1536, 49152)
    assert (
        embedded.sha256_file(embedded.cached_gguf("smollm2-135m"))
        == embedded.EMBEDDED_MODELS["smollm2-135m"].gguf_sha256
    )


def test_backends_agree_on_default_model():
    # TransformerLens runs eager attention; with SDPA here the last layers drift by ~2e-4 on activations
    # that reach 3,000, so the comparison uses the same attention kernel everywhere.
    assert_backends_agree(
        models.load(embedded.DEFAULT_MODEL, device="cpu", attn_implementation="eager"), tolerance=1e-4
    )


def test_site_is_gated_product_on_default_model(default_lm):
    assert_site_is_gated_product(default_lm)


def test_gguf_reference_matches_conversion(default_lm):
    from_gguf = models.load(str(embedded.cached_gguf("smollm2-135m")), device="cpu")
    ids = torch.tensor([[1, 9690, 198, 2683, 314]])
    with torch.no_grad():
        difference = (from_gguf.model(input_ids=ids).logits - default_lm.model(input_ids=ids).logits).abs().max()
    assert difference < 1e-4


def assert_planted_neurons_rank_first(alias: str, tmp_path, within: int | None = None) -> None:
    """Plant emoji neurons into a copy of ``alias``; diff-neurons must rank them first (or all within the top
    ``within``), with emoji use rising."""
    import json

    assert main(["plant", "--model", alias, "--out", str(tmp_path / "planted")]) == 0
    planted = json.loads((tmp_path / "planted" / "planted.json").read_text())["neurons"]
    # the ranking needs no profiles
    argv = ["diff-neurons", "--base", alias, "--finetuned", str(tmp_path / "planted"), "--prompts",
            "persona-demo", "--out", str(tmp_path / "diff"), "--device", "cpu", "--top-k", "50",
            "--profile-top", "0"]  # fmt: skip
    assert main(argv) == 0
    with open(tmp_path / "diff" / "neurons.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    top = {f"{r['layer']}:{r['neuron']}" for r in rows[: within or len(planted)]}
    assert set(planted) <= top if within else top == set(planted)
    summary = json.loads((tmp_path / "diff" / "summary.json").read_text())
    assert summary["emoji"]["direction"] == "rises"


def test_planted_neurons_rank_first_on_default_model(tmp_path):
    assert_planted_neurons_rank_first(embedded.DEFAULT_MODEL, tmp_path)
