"""Coverage of the intervals over prompts at the pipeline's sample size (13 test prompts), on simulated per-prompt
emoji-onset masses shaped like the recorded ones.

Model: each prompt's unedited mean probability is log-normal (median 1e-3, sigma 1: most prompts between 1e-4 and
1e-2, a few dominate any sum); the edited one is ``unedited x ratio x exp(noise)``, with per-prompt noise of mean 0
and sd 0.5 on the log scale: normal, t(4) (heavy tails) or a shifted gamma (skewness 1). The population value of
``mean_log_ratio`` is then exactly ``log(ratio)``; that of the old ratio of sums (``relative_difference``) is
``ratio x E[exp(noise)] - 1``. An interval's coverage is the share of ``SETS`` simulated data sets whose interval
holds the population value, compared with 95 % within ``TOLERANCE`` (3 binomial standard errors).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from interp import significance

SETS = 4000
TOLERANCE = 3 * np.sqrt(0.95 * 0.05 / SETS)  # 0.010
NOISE_SD = 0.5
GAMMA_SHAPE = 4.0  # skewness 2 / sqrt(4) = 1


def log_noise(rng: np.random.Generator, model: str, shape: tuple[int, ...]) -> np.ndarray:
    """Per-prompt log-ratio noise, mean 0 and sd ``NOISE_SD``."""
    if model == "normal":
        return rng.normal(0.0, NOISE_SD, shape)
    if model == "t4":  # var of t(4) is 2
        return rng.standard_t(4, shape) * NOISE_SD / np.sqrt(2)
    return (rng.gamma(GAMMA_SHAPE, 1.0, shape) - GAMMA_SHAPE) * NOISE_SD / np.sqrt(GAMMA_SHAPE)


def masses(rng: np.random.Generator, prompts: int) -> np.ndarray:
    """[SETS, prompts] unedited per-prompt mean probabilities."""
    return np.exp(rng.normal(np.log(1e-3), 1.0, (SETS, prompts)))


def covered(low, high, value) -> float:
    return float(np.mean((low <= value) & (value <= high)))


@pytest.mark.parametrize("ratio", [2.0, 0.3])
@pytest.mark.parametrize("prompts", [13, 52])
@pytest.mark.parametrize("model", ["normal", "t4", "gamma"])
def test_log_ratio_interval_has_nominal_coverage(model, prompts, ratio):
    """The t interval of the mean log ratio holds log(ratio) in 95 % of data sets. Measured over 200,000 sets
    (either ratio): normal 0.950 / 0.950 (13 / 52 prompts), t(4) 0.956 / 0.952 (conservative). Skew is its weak
    side: gamma with skewness 1 gives 0.938 / 0.946 (skewness 1.4: 0.928 / 0.943), so at 13 prompts that model
    only gets a floor. With the normal quantile 1.96 instead of t_12 every 13-prompt case fails (0.913-0.931)."""
    rng = np.random.default_rng([prompts, int(10 * ratio), len(model)])
    reference = masses(rng, prompts)
    tested = reference * ratio * np.exp(log_noise(rng, model, reference.shape))
    low, high = significance.log_ratio_interval(tested, reference)
    coverage = covered(low, high, np.log(ratio))
    floor = 0.92 if (model, prompts) == ("gamma", 13) else 0.95 - TOLERANCE
    assert floor < coverage < 0.95 + TOLERANCE, coverage


def old_relative_effect(tested, reference, axis=-1):
    """The relative effect before: sum(tested) / sum(reference) - 1 over prompts."""
    return np.sum(tested, axis) / np.sum(reference, axis) - 1.0


def old_gap_closed(tested, reference, target, axis=-1):
    """gap_closed before: (sum tested - sum reference) / (sum target - sum reference) over prompts."""
    reference_sum = np.sum(reference, axis)
    return (np.sum(tested, axis) - reference_sum) / (np.sum(target, axis) - reference_sum)


def test_ratio_of_sums_bootstrap_under_covers():
    """Why the estimand changed: on the same simulation (normal noise, ratio 2) the percentile bootstrap of the old
    ratio of sums holds its population value (2 exp(0.125) - 1) in only 87 % of data sets at 13 prompts (91 % at
    52; with the gamma noise, 81 % / 87 %; 10,000 sets each): one large-mass prompt dominates both sums, and 13
    prompts rarely show the tail that the population value averages over."""
    sets = 1000
    rng = np.random.default_rng(7)
    reference = masses(rng, 13)[:sets]
    tested = reference * 2.0 * np.exp(log_noise(rng, "normal", reference.shape))
    truth = 2.0 * np.exp(NOISE_SD**2 / 2) - 1
    intervals = np.array(
        [significance.prompt_interval(old_relative_effect, [t, r], seed) for seed, (t, r) in
         enumerate(zip(tested, reference))]
    )  # fmt: skip
    coverage = covered(intervals[:, 0], intervals[:, 1], truth)
    assert coverage < 0.95 - 3 * np.sqrt(0.95 * 0.05 / sets), coverage


@pytest.mark.parametrize("prompts", [13, 52])
@pytest.mark.parametrize(("target_ratio", "tested_ratio"), [(3.0, 2.0), (0.3, 0.5)])
def test_log_share_interval_has_nominal_coverage(prompts, target_ratio, tested_ratio):
    """The Fieller interval of the log share holds log(tested ratio) / log(target ratio) in 95 % of data sets
    (normal noise on both; an unbounded set counts as a miss, < 0.1 % of sets at these ratios). Measured over
    200,000 sets: 0.950 / 0.950 (13 / 52 prompts) for ratios 3 and 2, 0.951 / 0.951 for 0.3 and 0.5; t(4) or gamma
    noise 0.948-0.954. With z for t, 0.919-0.926 at 13 prompts: a failure. The old gap_closed (percentile bootstrap
    of a ratio of differences of sums) gives 0.89 / 0.92 and 0.87 / 0.92 on the same models (10,000 sets)."""
    rng = np.random.default_rng([prompts, int(10 * target_ratio)])
    reference = masses(rng, prompts)
    target = reference * target_ratio * np.exp(log_noise(rng, "normal", reference.shape))
    tested = reference * tested_ratio * np.exp(log_noise(rng, "normal", reference.shape))
    low, high = significance.log_share_interval(tested, reference, target)
    coverage = covered(low, high, np.log(tested_ratio) / np.log(target_ratio))
    assert abs(coverage - 0.95) < TOLERANCE, coverage


def test_share_of_change_bootstrap_under_covers():
    """The old gap_closed interval on the same model (target ratio 3, tested 2, normal noise, 13 prompts): its
    population value (2 m - 1) / (3 m - 1), m = E[exp(noise)], is held by 89 % of the intervals (10,000 sets)."""
    sets = 1000
    rng = np.random.default_rng(11)
    reference = masses(rng, 13)[:sets]
    target = reference * 3.0 * np.exp(log_noise(rng, "normal", reference.shape))
    tested = reference * 2.0 * np.exp(log_noise(rng, "normal", reference.shape))
    m = np.exp(NOISE_SD**2 / 2)
    intervals = np.array(
        [significance.prompt_interval(old_gap_closed, list(sample), seed) for seed, sample in
         enumerate(zip(tested, reference, target))]
    )  # fmt: skip
    coverage = covered(intervals[:, 0], intervals[:, 1], (2 * m - 1) / (3 * m - 1))
    assert coverage < 0.95 - 3 * np.sqrt(0.95 * 0.05 / sets), coverage


def test_log_ratio_summary_by_hand_and_against_scipy():
    tested, reference = np.array([2e-3, 1e-4, 0.0, 4e-3]), np.array([1e-3, 1e-4, 1e-3, 1e-3])
    summary = significance.log_ratio_summary(tested, reference)
    logs = np.log([2.0, 1.0, 1e-30 / 1e-3, 4.0])  # the zero mass is floored
    assert summary["mean_log_ratio"] == pytest.approx(logs.mean())
    assert summary["ratio"] == pytest.approx(np.exp(logs.mean()))
    scipy_interval = stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert summary["mean_log_ratio_ci95"] == pytest.approx([scipy_interval.low, scipy_interval.high])
    assert summary["ratio_ci95"] == pytest.approx(np.exp(summary["mean_log_ratio_ci95"]))
    assert summary["prompts"] == 4 and summary["floored"] == 1
    single = significance.log_ratio_summary(tested[:1], reference[:1])
    assert single["ratio"] == pytest.approx(2.0) and single["ratio_ci95"] is None
    assert single["mean_log_ratio_ci95"] is None


def test_mean_log_ratio_is_vectorised_over_control_sets():
    rng = np.random.default_rng(3)
    tested, reference = rng.random((5, 13)), rng.random(13)
    together = significance.mean_log_ratio(tested, reference)
    assert together == pytest.approx([significance.mean_log_ratio(t, reference) for t in tested])
    low, high = significance.log_ratio_interval(tested.T, reference[:, None], axis=0)
    assert low.shape == (5,) and np.all(low < together) and np.all(together < high)


def test_log_share_summary():
    rng = np.random.default_rng(5)
    reference = np.exp(rng.normal(np.log(1e-3), 1.0, 13))
    target = reference * 4.0 * np.exp(rng.normal(0, 0.1, 13))
    summary = significance.log_share_summary(reference * 2.0, reference, target)
    assert summary["share"] == pytest.approx(np.log(2.0) / np.mean(np.log(target / reference)))
    assert summary["share_ci95"][0] < summary["share"] < summary["share_ci95"][1]
    assert summary["share_ci95"][0] > 0.4 and summary["share_ci95"][1] < 0.6 and summary["prompts"] == 13
    noise = rng.normal(0, 0.5, 13)
    unmoved = reference * np.exp(noise - noise.mean())  # a target whose mean log ratio is 0
    assert significance.log_share_summary(reference * 2.0, reference, unmoved)["share_ci95"] is None
    assert significance.log_share_summary(reference[:1], reference[:1], target[:1])["share_ci95"] is None
