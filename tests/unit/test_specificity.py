"""Is an effect about emojis at all? The specificity readout against matched token sets, through ``interp ablate``:
planted emoji neurons are "emoji-specific"; planted neurons that sharpen the whole distribution (a generic write)
move the emoji-onset mass too, but "not specific: moves matched tokens alike"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import main
from interp.specificity import TokenProfile, matched_token_sets, specificity


def ablate(model: Path, neurons: list[tuple[int, int]], out: Path, *extra: str) -> dict:
    listed = ",".join(f"{layer}:{index}" for layer, index in neurons)
    argv = ["ablate", "--model", str(model), "--neurons", listed, "--prompts", "persona-demo[1::2]", "--controls", "9",
            "--out", str(out), "--device", "cpu", *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "ablation.json").read_text(encoding="utf-8"))


def test_planted_emoji_neurons_are_emoji_specific(planted_tiny, tmp_path):
    model, neurons = planted_tiny
    report = ablate(model, neurons, tmp_path / "zero")
    block = report["comparisons"]["zero"]["specificity"]
    assert block["sets"] >= 200 and block["seed"] == 0
    assert block["emoji_relative_change"] < -0.5  # zeroing the planted push removes most of the onset mass
    assert block["p_value"] == pytest.approx(2 / 1001) and block["specific"]
    assert block["share_of_sets_as_extreme"] == 0  # no matched token set falls as far
    assert "emoji-specific" in report["comparisons"]["zero"]["verdict"]
    lowered = {entry["token"] for entry in block["most_lowered"]}
    assert lowered & {entry["token"] for entry in block["onset_tokens"]}  # the onset tokens are among the most moved
    assert all(entry["share_of_vocabulary_moved_more"] < 0.02 for entry in block["onset_tokens"])


@pytest.fixture(scope="module")
def sharpening_tiny(tiny_llama_dir, tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A copy of the tiny LLaMA whose two last-layer neurons write towards its most probable token: they make every
    distribution sharper (lower entropy) and lower every other token alike, emojis included."""
    from interp import models
    from interp.planted import PlantSpec, plant
    from interp.prompts import load_prompts
    from interp.tokens import build_sequences

    lm = models.load(str(tiny_llama_dir), device="cpu", dtype="float32")
    mean_prob = torch.zeros(lm.model.config.vocab_size)
    with torch.no_grad():
        for sequence in build_sequences(lm.tokenizer, load_prompts("persona-demo[0::2]"), False, 256):
            logits = lm.model(input_ids=torch.tensor([sequence.ids])).logits[0]
            mean_prob += logits.softmax(-1).mean(0)
    top = [int(mean_prob.argmax())]
    neurons = [(lm.n_layers - 1, 3), (lm.n_layers - 1, 7)]
    plant(lm, PlantSpec(tuple(neurons), gain=3.0, push=6.0), top, {})
    out = tmp_path_factory.mktemp("sharpening") / "model"
    lm.model.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    return out, neurons


def test_a_generic_write_is_not_specific(sharpening_tiny, tmp_path):
    model, neurons = sharpening_tiny
    report = ablate(model, neurons, tmp_path / "zero")
    comparison = report["comparisons"]["zero"]
    block = comparison["specificity"]
    assert abs(block["emoji_relative_change"]) > 0.1  # the onset mass moves, as the primary readout sees ...
    low, high = block["matched_relative_change_5_95"]
    assert low < block["emoji_relative_change"] < high  # ... but the matched token sets move alike
    assert block["entropy_change"]["mean_nats"] > 0.1  # zeroing sharpening neurons raises the entropy
    assert not block["specific"] and block["p_value"] > 0.05
    assert "not specific: moves matched tokens alike" in comparison["verdict"]


def profile(probs: np.ndarray) -> TokenProfile:
    """A profile of one prompt with the same next-token distribution ``probs`` [vocab] at 4 positions."""
    result = TokenProfile()
    logits = torch.tensor(np.log(probs), dtype=torch.float32).repeat(4, 1)
    result.update(logits, torch.zeros(4, dtype=torch.long))
    return result


def test_matched_sets_match_probability_and_never_repeat_a_token():
    rng = np.random.default_rng(0)
    mean_prob = rng.dirichlet(np.full(5000, 0.3))
    onset = [10, 11, 12, 13]
    sets = matched_token_sets(mean_prob, onset, 300, seed=1)
    assert sets.shape == (300, 4) and not np.isin(sets, onset).any()
    assert all(len(set(row)) == 4 for row in sets.tolist())
    log_gap = np.abs(np.log(mean_prob[sets]) - np.log(mean_prob[onset]))
    others = np.abs(np.log(mean_prob)[:, None] - np.log(mean_prob[onset])[None, :])
    assert np.all(log_gap <= np.sort(others, axis=0)[60])  # within each onset token's nearest tokens
    assert np.array_equal(sets, matched_token_sets(mean_prob, onset, 300, seed=1))  # seeded


def test_raising_the_whole_tail_is_not_specific_and_raising_emojis_is():
    rng = np.random.default_rng(2)
    base = rng.dirichlet(np.full(3000, 0.2))
    onset = [int(i) for i in np.argsort(base)[1500:1504]]  # onset tokens in the middle of the distribution
    tail = base.copy()
    tail[base < np.median(base) * 4] *= 3  # every less probable token, onset tokens included, tripled
    tail /= tail.sum()
    emojis = base.copy()
    emojis[onset] *= 3
    emojis /= emojis.sum()
    unedited = profile(base)
    generic = specificity(profile(tail), unedited, onset, "greater", seed=0)
    specific = specificity(profile(emojis), unedited, onset, "greater", seed=0)
    assert generic["emoji_relative_change"] > 1.5 and generic["p_value"] > 0.05
    assert specific["emoji_relative_change"] > 1.5 and specific["p_value"] == pytest.approx(1 / 1001)
    assert specific["entropy_change"]["mean_nats"] == pytest.approx(
        float(-(emojis * np.log(emojis)).sum() + (base * np.log(base)).sum()), rel=1e-3
    )
