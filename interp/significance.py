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
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

ALTERNATIVES = ("two-sided", "less", "greater")
SIGNIFICANCE = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


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


def difference_of_means(tested, reference, counts, axis=-1):
    """(sum tested - sum reference) / sum counts: a pooled per-position difference."""
    return (np.sum(tested, axis) - np.sum(reference, axis)) / np.sum(counts, axis)


def relative_difference(tested, reference, axis=-1):
    """(sum tested - sum reference) / sum reference."""
    return np.sum(tested, axis) / np.sum(reference, axis) - 1.0


def ratio_of_sums(numerator, denominator, axis=-1):
    return np.sum(numerator, axis) / np.sum(denominator, axis)


def share_of_change(tested, reference, target, axis=-1):
    """(sum tested - sum reference) / (sum target - sum reference): how much of the reference-to-target
    change the tested edit reproduces (1 = all of it)."""
    reference_sum = np.sum(reference, axis)
    return (np.sum(tested, axis) - reference_sum) / (np.sum(target, axis) - reference_sum)
