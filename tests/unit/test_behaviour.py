"""Does sampled behaviour follow? The paired behavioural readout of the causal tests: answers drawn from one random
stream under both conditions, McNemar's exact test, Newcombe's interval; on a planted model that samples emojis,
zeroing the planted neurons lowers sampled emoji use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import main
from interp.behaviour import agreement, newcombe_interval, paired_emoji_use


@pytest.fixture(scope="module")
def emoji_sampling_tiny(tiny_llama_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """A planted copy of the tiny LLaMA (two last-layer neurons pushing emoji-onset tokens) whose logits are 8x
    sharper (final norm's gain), so that it samples an emoji in about a quarter of its answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp.planted import make_planted_model

    folder = tmp_path_factory.mktemp("emoji-sampling")
    record = make_planted_model(str(tiny_llama_dir), folder / "planted", layers="2", per_layer=2, push=4.0,
                                show_progress=False, log=lambda m: None)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(folder / "planted")
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    model.save_pretrained(folder / "model", safe_serialization=True)
    AutoTokenizer.from_pretrained(folder / "planted").save_pretrained(folder / "model")
    return folder / "model", record["neurons"]


def test_zeroing_planted_neurons_lowers_sampled_emoji_use(emoji_sampling_tiny, tmp_path):
    model, neurons = emoji_sampling_tiny
    out = tmp_path / "zero"
    argv = ["ablate", "--model", str(model), "--neurons", ",".join(neurons), "--prompts", "persona-demo[1::2]",
            "--controls", "3", "--samples", "2", "--max-new-tokens", "16", "--alternative", "less", "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    comparison = json.loads((out / "ablation.json").read_text(encoding="utf-8"))["comparisons"]["zero"]
    behaviour = comparison["behaviour"]
    assert behaviour["pairs"] == 32 and behaviour["prompts"] == 16
    assert behaviour["unedited_with_emoji"] >= 6 and behaviour["tested_with_emoji"] < behaviour["unedited_with_emoji"]
    assert behaviour["p_value"] < 0.05 and behaviour["significant"] and behaviour["agreement"] == "agree"
    assert behaviour["rate_difference_ci95"][1] < 0
    answers = behaviour["teacher_forced_answer_probability"]
    assert answers["tested"] < answers["unedited"]
    assert "Behaviour: " in comparison["verdict"] and "exact McNemar" in comparison["verdict"]
    # the pairs the test counts are the records in generations.jsonl: the same answer stream under both conditions
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert paired_emoji_use(records, "tested[zero]", "less")["p_value"] == behaviour["p_value"]
    streams = {r["condition"]: sorted((r["prompt_index"], r["sample"]) for r in records) for r in records}
    assert streams["unedited"] == streams["tested[zero]"]


def records(pairs: list[tuple[bool, bool]]) -> list[dict]:
    """Generation records of (unedited has an emoji, tested has an emoji) pairs, one prompt each."""
    out = []
    for number, (unedited, tested) in enumerate(pairs):
        for condition, has in (("unedited", unedited), ("tested[x]", tested)):
            out.append({"condition": condition, "prompt_index": number, "sample": number, "emojis": ["🙂"] * has})
    return out


def test_mcnemar_counts_only_discordant_pairs_in_the_fixed_direction():
    pairs = [(False, True)] * 6 + [(True, True)] * 5 + [(False, False)] * 20
    raised = paired_emoji_use(records(pairs), "tested[x]", "greater")
    assert (raised["tested_only"], raised["unedited_only"], raised["pairs"]) == (6, 0, 31)
    assert raised["p_value"] == pytest.approx(0.5**6) and raised["min_p_value"] == pytest.approx(0.5**6)
    assert paired_emoji_use(records(pairs), "tested[x]", "less")["p_value"] == 1.0  # the other way: nothing
    assert agreement(raised, teacher_forced_effect=+0.1) == "agree"
    assert agreement(raised, teacher_forced_effect=-0.1) == "disagree"
    same = paired_emoji_use(records([(True, True), (False, False)]), "tested[x]", "two-sided")
    assert same["p_value"] == 1.0 and agreement(same, 0.1) == "no change"


def test_newcombe_interval_covers_at_the_causal_stages_sample_size():
    """2,000 simulated sets of 26 pairs (correlated outcomes, rates 0.15 and 0.05): the interval covers the true
    difference about 95 % of the time (Newcombe's method is slightly conservative)."""
    rng = np.random.default_rng(0)
    cells = np.array([0.04, 0.11, 0.01, 0.84])  # both, tested only, unedited only, neither
    truth = cells[1] - cells[2]
    covered = 0
    for counts in rng.multinomial(26, cells, size=2000):
        low, high = newcombe_interval(*counts.tolist())
        covered += low <= truth <= high
    assert 0.93 <= covered / 2000 <= 0.99


def test_answer_emoji_probability_is_one_minus_the_product_along_each_answer(tiny_llama_dir):
    """The per-answer teacher-forced readout, against a plain forward: 1 - prod(1 - onset mass) over the positions
    that predict each answer's tokens, averaged over answers."""
    from interp import models
    from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
    from interp.generation import UNEDITED
    from interp.prompts import load_prompts
    from interp.tokens import build_sequences
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(str(tiny_llama_dir), device="cpu")
    prompts = [type(p)(messages=p.messages, response=f"Sure{'!' * i} sounds fun", index=p.index)
               for i, p in enumerate(load_prompts("persona-demo")[:5])]  # fmt: skip
    sequences = build_sequences(lm.tokenizer, prompts, False, 128)
    onset = emoji_onset_ids(lm.tokenizer)
    metrics = {"unedited": ConditionMetrics()}
    config = AblationConfig(model="", prompts="", out=None, batch_size=4, show_progress=False)
    measure_conditions(lm, None, [UNEDITED], sequences, config, onset, metrics, "")
    expected = []
    with torch.no_grad():
        for sequence in sequences:
            probs = lm.model(input_ids=torch.tensor([sequence.ids])).logits[0].double().softmax(-1)
            mass = probs[sequence.response_start - 1 : len(sequence.ids) - 1, onset].sum(-1)
            expected.append(float(1 - torch.prod(1 - mass)))
    assert metrics["unedited"].answers_by_prompt.mean() == pytest.approx(np.mean(expected), rel=1e-5)
