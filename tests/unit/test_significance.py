"""The causal verdicts' statistics: p-values with an alternative fixed in advance, Holm, bootstrap intervals over
prompts, selection-matched controls, and their calibration on simulated nulls measured on a real tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from interp import models, significance
from interp.ablation import AblationConfig, ConditionMetrics, adjust, compare, measure_conditions
from interp.controls import SelectionFeatures, layer_matched_sets, selection_matched_sets
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
    tested, reference, counts = rng.random(30) + 0.2, rng.random(30), np.full(30, 5.0)
    estimate = significance.difference_of_means(tested, reference, counts)
    first = significance.prompt_interval(significance.difference_of_means, [tested, reference, counts], seed=3)
    assert first == significance.prompt_interval(significance.difference_of_means, [tested, reference, counts], 3)
    assert first[0] < estimate < first[1]
    assert significance.prompt_interval(significance.difference_of_means, [[1.0], [0.5], [1.0]]) is None


def test_selection_matched_controls_are_look_alikes_of_the_same_layer():
    d_mlp = 64
    dla = torch.linspace(0.01, 1.0, d_mlp).repeat(2, 1)
    rms = torch.linspace(0.5, 2.0, d_mlp).repeat(2, 1)
    dla[1, 5] = 50.0  # a planted-like neuron: no natural look-alike
    features = SelectionFeatures([3, 4], dla.double(), rms.double())
    tested = [(3, 30), (3, 31), (4, 5)]
    sets, matching = selection_matched_sets(tested, features, count=20, seed=0)
    assert len(sets) == 20
    for neuron_set in sets:
        assert sorted(layer for layer, _ in neuron_set) == [3, 3, 4]
        assert not set(neuron_set) & set(tested)
        assert all(abs(index - 30) <= 8 for layer, index in neuron_set if layer == 3)  # neighbours in both features
    quality = {q["neuron"]: q["good_match"] for q in matching["per_neuron"]}
    assert quality == {"3:30": True, "3:31": True, "4:5": False}
    assert matching["neurons_without_good_match"] == 1


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
        same_side = "greater" if comparison["effect"] >= 0 else "less"
        old_rule += significance.control_p_value(comparison["effect"], effects, same_side) < 0.05
    assert stats.binomtest(significant, trials, 0.05, alternative="greater").pvalue > 0.01, significant
    assert significant <= 0.05 * trials + 3 * np.sqrt(trials * 0.05 * 0.95)
    if alternative == "two-sided":  # same draws: picking the side after the fact about doubles the rate
        assert old_rule > significant
