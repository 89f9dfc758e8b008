"""The causal verdicts' statistics: p-values with an alternative fixed in advance, Holm, bootstrap intervals over
prompts, selection-matched controls, and their calibration on simulated nulls measured on a real tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from interp import models, significance
from interp.ablation import AblationConfig, ConditionMetrics, adjust, compare, measure_conditions
from interp.controls import (
    GOOD_MATCH,
    POOL,
    Edit,
    NeuronValues,
    SelectionFeatures,
    layer_matched_sets,
    selection_matched_sets,
)
from interp.interventions import Condition
from interp.prompts import load_prompts
from interp.tokens import build_sequences
from probes.emoji_tokens import emoji_onset_ids


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_control_p_value_equals_scipy_monte_carlo_test(alternative):
    """Same definition as scipy's Monte Carlo test, given the same null draws."""
    rng = np.random.default_rng(1)
    for effect in (-2.5, -0.3, 0.0, 0.4, 3.0):
        controls = rng.normal(size=99)
        result = stats.monte_carlo_test(  # one observation per "sample": the statistic is the value itself
            [effect], rvs=lambda size, controls=controls: controls.reshape(size),
            statistic=lambda x, axis: np.take(x, 0, axis=axis), vectorized=True, n_resamples=len(controls),
            alternative=alternative,
        )  # fmt: skip
        ours = significance.control_p_value(effect, controls.tolist(), alternative)
        assert ours == pytest.approx(float(result.pvalue), abs=1e-12)


def test_p_value_never_depends_on_the_sign_of_the_effect():
    """Two-sided: mirroring the effect and the controls gives the same p; one-sided: the far tail is ~1."""
    controls = list(np.linspace(-1, 1, 39))
    assert significance.control_p_value(1.5, controls, "two-sided") == significance.control_p_value(
        -1.5, [-c for c in controls], "two-sided"
    )
    assert significance.control_p_value(1.5, controls, "two-sided") == pytest.approx(2 / 40)
    assert significance.control_p_value(1.5, controls, "less") == 1.0
    assert significance.min_p_value(99, "greater") == 0.01 and significance.min_p_value(99, "two-sided") == 0.02


def test_holm_matches_the_step_down_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04); input order kept
    assert significance.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert significance.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 caps, and step-down is monotone
    assert significance.holm([]) == []
    assert significance.holm([0.04, None, 0.01]) == pytest.approx([0.04, None, 0.02])  # None: not tested, not counted


def test_prompt_interval_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(0)
    tested, reference = rng.random(30) + 0.2, rng.random(30)
    estimate = significance.ratio_of_sums(tested, reference)
    first = significance.prompt_interval(significance.ratio_of_sums, [tested, reference], seed=3)
    assert first == significance.prompt_interval(significance.ratio_of_sums, [tested, reference], 3)
    assert first[0] < estimate < first[1]
    assert significance.prompt_interval(significance.ratio_of_sums, [[1.0], [0.5]]) is None


def scored(score: torch.Tensor, rms: torch.Tensor, layers: list[int], push: torch.Tensor | None = None
           ) -> SelectionFeatures:  # fmt: skip
    """Features whose score (ft_mean x dla - base_mean x dla, with dla 1) is ``score`` and whose fine-tuned push
    (ft_mean x dla) is ``push`` (default: the score, with base means 0)."""
    push = score if push is None else push
    ones = torch.ones_like(score, dtype=torch.double)
    values = NeuronValues(
        {"base": (push - score).double(), "finetuned": push.double()}, {"base": ones, "finetuned": ones}
    )
    return SelectionFeatures(layers, values, rms.double())


def test_selection_matched_controls_are_look_alikes_of_the_same_layer():
    d_mlp = 64
    score = torch.linspace(0.01, 1.0, d_mlp).repeat(2, 1)
    rms = torch.linspace(0.5, 2.0, d_mlp).repeat(2, 1)
    score[1, 5] = 50.0  # a planted-like neuron: no natural look-alike
    features = scored(score, rms, [3, 4])
    tested = [(3, 30), (3, 31), (4, 5)]
    sets, matching = selection_matched_sets(tested, features, count=20, seed=0)
    assert len(sets) == 20
    for neuron_set in sets:
        assert sorted(layer for layer, _ in neuron_set) == [3, 3, 4]
        assert not set(neuron_set) & set(tested)
        assert all(abs(index - 30) <= 8 for layer, index in neuron_set if layer == 3)  # neighbours in both features
    quality = {q["neuron"]: q for q in matching["per_neuron"]}
    assert {name: q["good_match"] for name, q in quality.items()} == {"3:30": True, "3:31": True, "4:5": False}
    assert all(q["same_sign"] for q in quality.values()) and matching["neurons_without_same_sign"] == 0
    assert quality["3:30"]["contribution_factor"] < 1.2 and quality["3:30"]["activation_factor"] < 1.1
    assert quality["4:5"]["contribution_factor"] > 20  # its nearest are the largest natural scores
    assert matching["neurons_without_good_match"] == 1


def signed_features() -> SelectionFeatures:
    """One layer (7) of 64 neurons: 0-31 raise emoji push, 32-63 lower it by the same sizes at the same rms, so
    every neuron's nearest neighbour by |score| and rms has the opposite sign."""
    size = torch.logspace(-1, 1, 32, dtype=torch.double)
    rms = (1 + 0.02 * torch.arange(32, dtype=torch.double)).repeat(2)[None]
    return scored(torch.cat([size, -size])[None], rms, [7])


def test_selection_matched_controls_have_the_tested_neurons_signs():
    features = signed_features()
    tested = [(7, 10), (7, 50)]  # score +0.44 (nearest: neuron 42, -0.44) and -1.45 (nearest: neuron 18, +1.45)
    sets, matching = selection_matched_sets(tested, features, count=40, seed=0)
    for neuron_set in sets:
        signs = sorted(float(features.values.score[0, index].sign()) for _, index in neuron_set)
        assert signs == [-1.0, 1.0]  # one look-alike per tested neuron, each of its sign
        assert not {42, 18} & {index for _, index in neuron_set}  # the opposite-sign twins are never drawn
    quality = {q["neuron"]: q for q in matching["per_neuron"]}
    for q in quality.values():
        assert q["same_sign"] and q["good_match"]
        assert 1.0 <= q["contribution_factor"] < GOOD_MATCH and 1.0 <= q["activation_factor"] < GOOD_MATCH
        assert q["emoji_dla_factor"] == 1.0
    assert matching["neurons_without_good_match"] == 0 and matching["neurons_without_same_sign"] == 0
    assert "same sign" in matching["method"]


def test_zeroing_is_matched_on_the_neurons_own_push_and_patching_on_their_change():
    """What predicts a test's effect differs by edit: a patch moves each neuron by its change (the score), zeroing
    removes its whole push. Neurons 0-31 changed up and push up; 32-63 changed up by the same sizes but push down
    (suppressed writers): for a patch their look-alikes come from both halves, for zeroing only from their own."""
    size = torch.logspace(-1, 1, 32, dtype=torch.double)
    push = torch.cat([size * 3, -size * 3])[None]
    features = scored(torch.cat([size, size])[None], torch.ones(1, 64, dtype=torch.double), [7], push)
    tested = [(7, 10)]
    zeroed, record = selection_matched_sets(tested, features, count=200, seed=0, edit=Edit("zero", "finetuned"))
    assert {index for ((_, index),) in zeroed} <= set(range(32))  # same push sign: the raising writers only
    assert "zero on the finetuned model" in record["matched_on"]
    patched, _ = selection_matched_sets(tested, features, count=200, seed=0, edit=Edit("patch", "base", "finetuned"))
    assert {index for ((_, index),) in patched} & set(range(32, 64))  # same change: either writer
    contribution = features.of(tested).contribution(Edit("zero", "finetuned"))
    assert float(contribution) == pytest.approx(-float(push[0, 10]))  # zeroing removes the push


def test_selection_matched_controls_say_when_a_layer_lacks_same_sign_neurons():
    size = torch.logspace(-1, 1, 32, dtype=torch.double)
    score = torch.cat([size, -size])[None]
    score[0, 5:32] *= -1  # only neurons 0-4 still raise emoji push
    features = scored(score, (1 + 0.02 * torch.arange(32, dtype=torch.double)).repeat(2)[None], [7])
    sets, matching = selection_matched_sets([(7, 2)], features, count=200, seed=0)
    drawn = {index for neuron_set in sets for _, index in neuron_set}
    assert {0, 1, 3, 4} <= drawn and len(drawn) == POOL  # the four same-sign neurons first, then the nearest others
    (q,) = matching["per_neuron"]
    assert not q["same_sign"] and not q["good_match"]
    assert matching["neurons_without_same_sign"] == 1 and matching["neurons_without_good_match"] == 1
    assert "opposite sign" in matching["note"]


def test_selection_matched_features_come_from_the_diff_run(tmp_path):
    from safetensors.torch import save_file

    from interp.selection import _features
    from interp.stats import NeuronStats, save_stats

    layers, d_mlp = [2, 5], 8
    stats = {}
    for name, shift in (("base", 0.0), ("finetuned", 1.0)):
        stats[name] = NeuronStats.empty(layers, d_mlp, 0.0)
        for slot in range(len(layers)):
            stats[name].update(slot, torch.randn(50, d_mlp, generator=torch.Generator().manual_seed(slot)) + shift)
    save_stats(tmp_path / "stats.safetensors", stats)
    dla = {
        "emoji_dla_base": -torch.ones(2, d_mlp, dtype=torch.double),
        "emoji_dla_finetuned": torch.full((2, d_mlp), 3.0, dtype=torch.double),
    }
    metadata = {"layers": json.dumps(layers)}
    save_file(dla, str(tmp_path / "landscape.safetensors"), metadata=metadata)
    features = _features(tmp_path)
    values = features.values
    assert features.layers == layers and torch.equal(values.emoji_dla["finetuned"], dla["emoji_dla_finetuned"])
    assert torch.allclose(values.mean["finetuned"] - values.mean["base"], torch.ones(2, d_mlp, dtype=torch.double))
    assert torch.allclose(values.score, 3 * values.mean["finetuned"] + values.mean["base"])
    assert features.activation_rms.shape == (2, d_mlp) and bool((features.activation_rms > 0).all())
    save_file({"emoji_dla_base": dla["emoji_dla_base"]}, str(tmp_path / "landscape.safetensors"), metadata=metadata)
    assert _features(tmp_path) is None  # a damaged or foreign landscape: no matched null


@pytest.fixture(scope="module")
def null_effects(tiny_llama_dir):
    """One real measurement of 300 random 4-neuron sets zeroed in the tiny model (the pool simulated tests draw
    from) plus the unedited model: {name: ConditionMetrics}."""
    lm = models.load(str(tiny_llama_dir), device="cpu")
    prompts = load_prompts("persona-demo")[:8]
    prompts = [type(p)(messages=p.messages, response="Sure, that sounds fun to me!", index=p.index) for p in prompts]
    sequences = build_sequences(lm.tokenizer, prompts, False, 128)
    pool = layer_matched_sets([(1, 0), (1, 1), (2, 0), (2, 1)], lm.d_mlp, 300, seed=5)
    conditions = [Condition("unedited", kind="baseline")] + [Condition(f"s{i}", s, "zero") for i, s in enumerate(pool)]
    metrics = {c.name: ConditionMetrics() for c in conditions}
    config = AblationConfig(model="", prompts="", out=None, batch_size=128, show_progress=False)
    measure_conditions(lm, None, conditions, sequences, config, emoji_onset_ids(lm.tokenizer), metrics, "")
    return metrics


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_verdict_false_positive_rate_on_simulated_nulls(null_effects, alternative):
    """250 null tests: the tested set and its 39 controls drawn alike from the measured pool. The verdict
    ("significant" after Holm, through the same compare/adjust as ``interp ablate``) must fire at the nominal
    5 % within binomial noise. The old rule (direction taken from the tested effect) fired about twice as often."""
    rng = np.random.default_rng(7)
    unedited = null_effects["unedited"]
    names = [name for name in null_effects if name != "unedited"]
    significant, old_rule = 0, 0
    trials = 250
    for _ in range(trials):
        drawn = rng.choice(len(names), size=40, replace=False)
        tested, controls = null_effects[names[drawn[0]]], [null_effects[names[i]] for i in drawn[1:]]
        comparison = compare(tested, unedited, {"layer": controls}, alternative)
        adjust({"zero": comparison})
        significant += comparison["significant"]
        effects = comparison["nulls"]["layer"]["control_effects"]
        same_side = "greater" if comparison["log_ratio"] >= 0 else "less"
        old_rule += significance.control_p_value(comparison["log_ratio"], effects, same_side) < 0.05
    assert stats.binomtest(significant, trials, 0.05, alternative="greater").pvalue > 0.01, significant
    assert significant <= 0.05 * trials + 3 * np.sqrt(trials * 0.05 * 0.95)
    if alternative == "two-sided":  # same draws: picking the side after the fact about doubles the rate
        assert old_rule > significant
