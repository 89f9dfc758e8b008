"""Significance of causal effects: tests against control sets, intervals over prompts, corrections.

The procedure (docs/design.md, "Causal verdicts"):
- ``control_p_value``: Monte Carlo p-value of the tested set's effect among the effects of control sets drawn
  under the null, for an alternative fixed *before* the effect is seen (``two-sided`` doubles the smaller tail).
  Same definition as ``scipy.stats.monte_carlo_test``: (1 + #controls at least as extreme) / (1 + N).
- ``intersection_p_value``: a set must beat every null it was compared with (an intersection-union test), so
  the verdict's p-value is the largest of the nulls' p-values; no correction is needed for using two nulls.
- ``prompt_interval``: a 95 % bootstrap interval over prompts (the unit that replicates) of a ratio of sums,
  with ``scipy.stats.bootstrap`` (paired resampling of prompts, percentile method, seeded).
- ``holm``: Holm's step-down adjustment of several p-values (family-wise error rate).
- ``log_ratio_summary``: the geometric mean over prompts of the per-prompt ratio tested / reference with a t
  interval (the mean of per-prompt log ratios); it keeps its nominal coverage at 13 prompts where the bootstrap of
  a ratio of sums does not (``tests/unit/test_intervals.py``). ``log_share_summary``: the share of the log change
  from reference to target that the tested edit reproduces, with a Fieller interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

ALTERNATIVES = ("two-sided", "less", "greater")
SIGNIFICANCE = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
MASS_FLOOR = 1e-30  # probability floor of the log ratios


def control_p_value(effect: float, control_effects: list[float], alternative: str) -> float:
    """p-value of ``effect`` among ``control_effects`` (drawn under the null) for ``alternative``:
    ``greater`` (the tested effect is larger), ``less`` (smaller) or ``two-sided``."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, not {alternative!r}")
    controls = np.asarray(control_effects, dtype=float)
    n = len(controls)
    greater = (1 + int(np.sum(controls >= effect))) / (1 + n)
    less = (1 + int(np.sum(controls <= effect))) / (1 + n)
    if alternative == "greater":
        return greater
    if alternative == "less":
        return less
    return min(1.0, 2 * min(greater, less))


def min_p_value(controls: int, alternative: str) -> float:
    """The smallest p-value ``controls`` control sets allow."""
    return min(1.0, (2 if alternative == "two-sided" else 1) / (1 + controls))


def intersection_p_value(p_values: list[float]) -> float:
    """The p-value of "beats every null": the largest of the nulls' p-values."""
    return max(p_values)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order (monotone step-down, capped at 1); a None (a test that could not
    be made) stays None and does not count towards the family."""
    tested = [i for i, value in enumerate(p_values) if value is not None]
    p = np.asarray([p_values[i] for i in tested], dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted: list[float | None] = [None] * len(p_values)
    for rank, value in zip(order, np.minimum(stepped, 1.0)):
        adjusted[tested[rank]] = float(value)
    return adjusted


def prompt_interval(
    statistic: Callable[..., np.ndarray], samples: list[np.ndarray], seed: int = 0
) -> list[float] | None:
    """95 % percentile bootstrap interval of ``statistic(*samples, axis=-1)`` over prompts.

    ``samples`` are per-prompt arrays of equal length (e.g. each condition's summed emoji-onset probability
    and the number of measured positions per prompt), resampled together. None with fewer than two prompts or
    when the statistic is undefined on resamples (e.g. a zero denominator)."""
    if len(samples[0]) < 2:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        result = stats.bootstrap(
            tuple(np.asarray(s, dtype=float) for s in samples), statistic, paired=True, vectorized=True,
            n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE, method="percentile",
            rng=np.random.default_rng(seed),
        )  # fmt: skip
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return [low, high]


def ratio_of_sums(numerator, denominator, axis=-1):
    return np.sum(numerator, axis) / np.sum(denominator, axis)


def log_ratios(tested, reference):
    """Elementwise ``log(tested / reference)`` of per-prompt masses (any shape), both floored at ``MASS_FLOOR``: a
    zero mass gives a large finite log ratio (~-62 against a mass of 1e-3) instead of an infinite one."""
    floored = [np.maximum(np.asarray(x, dtype=float), MASS_FLOOR) for x in (tested, reference)]
    return np.log(floored[0]) - np.log(floored[1])


def mean_log_ratio(tested, reference, axis=-1):
    """Mean over prompts (``axis``) of ``log_ratios``: the log of the geometric mean of the per-prompt ratios.
    ``tested``, ``reference``: [..., P] per-prompt mean (or summed, over the same positions) probabilities."""
    return np.mean(log_ratios(tested, reference), axis)


def log_ratio_interval(tested, reference, confidence=CONFIDENCE, axis=-1) -> tuple[np.ndarray, np.ndarray]:
    """Student t interval of ``mean_log_ratio`` over the P prompts on ``axis``: mean +- t_{P-1} x sd / sqrt(P),
    on the log scale. Returns (low, high), each shaped like the input without ``axis``; NaN with P < 2."""
    values = np.moveaxis(log_ratios(tested, reference), axis, -1)
    prompts, mean = values.shape[-1], values.mean(-1)
    if prompts < 2:
        return np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = stats.t.ppf((1 + confidence) / 2, prompts - 1) * values.std(-1, ddof=1) / np.sqrt(prompts)
    return mean - half, mean + half


def log_ratio_summary(tested: np.ndarray, reference: np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """The geometric mean over prompts of the per-prompt ratio ``tested / reference``, with a t interval.

    ``tested``, ``reference``: [P] each prompt's mean probability over its measured positions (sums over the same
    positions give the same ratios), floored at ``MASS_FLOOR`` (``floored`` counts the masses that were).
    ``ratio = exp(mean_log_ratio)`` (so ``ratio - 1`` is a typical prompt's relative effect); ``ratio_ci95`` is
    the exponentiated ``log_ratio_interval`` at ``confidence``; the intervals are None with fewer than 2 prompts."""
    prompts = len(tested)
    mean = float(mean_log_ratio(tested, reference))
    low, high = (float(x) for x in log_ratio_interval(tested, reference, confidence))
    return {
        "ratio": float(np.exp(mean)),
        "ratio_ci95": [float(np.exp(low)), float(np.exp(high))] if prompts >= 2 else None,
        "mean_log_ratio": mean,
        "mean_log_ratio_ci95": [low, high] if prompts >= 2 else None,
        "prompts": prompts,
        "floored": int(np.sum(np.asarray(tested) < MASS_FLOOR) + np.sum(np.asarray(reference) < MASS_FLOOR)),
    }


def log_share_of_change(tested, reference, target, axis=-1):
    """mean log(tested / reference) / mean log(target / reference) over prompts (``axis``): the share of the
    reference-to-target change, on the log scale, that the tested edit reproduces (1 = all of it; a tested ratio
    of sqrt(target ratio) is 0.5). Inputs: [..., P] per-prompt mean probabilities, floored at ``MASS_FLOOR``."""
    return mean_log_ratio(tested, reference, axis) / mean_log_ratio(target, reference, axis)


def log_share_interval(tested, reference, target, confidence=CONFIDENCE, axis=-1) -> tuple[np.ndarray, np.ndarray]:
    """Fieller interval of ``log_share_of_change``: the shares s for which the paired per-prompt values
    ``log(tested / reference) - s log(target / reference)`` have a t interval (``confidence``) containing 0.
    Returns (low, high), each shaped like the input without ``axis``; NaN where that set is unbounded (the target's
    mean log ratio is not distinguishable from 0 at ``confidence``) or with fewer than 2 prompts."""
    a = np.moveaxis(log_ratios(tested, reference), axis, -1)
    b = np.moveaxis(log_ratios(target, reference), axis, -1)
    prompts = a.shape[-1]
    if prompts < 2:
        return np.full(a.shape[:-1], np.nan), np.full(a.shape[:-1], np.nan)
    mean_a, mean_b = a.mean(-1), b.mean(-1)
    q2 = stats.t.ppf((1 + confidence) / 2, prompts - 1) ** 2 / prompts
    cov = np.sum((a - mean_a[..., None]) * (b - mean_b[..., None]), -1) / (prompts - 1)
    # s is in the set <=> quad s^2 - 2 lin s + const <= 0
    quad = mean_b**2 - q2 * b.var(-1, ddof=1)
    lin = mean_a * mean_b - q2 * cov
    const = mean_a**2 - q2 * a.var(-1, ddof=1)
    root = np.sqrt(np.maximum(lin**2 - quad * const, 0.0))
    bounded = quad > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bounded, (lin - root) / quad, np.nan), np.where(bounded, (lin + root) / quad, np.nan)


def log_share_summary(
    tested: np.ndarray, reference: np.ndarray, target: np.ndarray, confidence: float = CONFIDENCE
) -> dict:
    """``log_share_of_change`` of [P] per-prompt mean probabilities with its ``log_share_interval`` as
    ``share_ci95`` (None where unbounded or with fewer than 2 prompts); ``share`` is None when the target's mean
    log ratio is 0."""
    low, high = (float(x) for x in log_share_interval(tested, reference, target, confidence))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = float(log_share_of_change(tested, reference, target))
    return {
        "share": share if np.isfinite(share) else None,
        "share_ci95": [low, high] if np.isfinite(low) else None,
        "prompts": len(tested),
    }
