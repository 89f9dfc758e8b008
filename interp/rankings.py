"""The neuron diff: per-neuron comparison of base and fine-tuned statistics, ranked, with a noise floor.

Default ranking (``score``): the change in each neuron's mean direct contribution to the emoji-onset
logits, ``ft_mean * emoji_dla_ft - base_mean * emoji_dla_base`` (logits). Positive: the neuron's change
pushes emoji use up; negative: down. Ranked by magnitude, so causes of a rise and of a fall both come
first. It puts causes before consequences: a neuron whose activation moved a lot only because the
residual stream upstream changed, but which does not write towards emojis, scores near zero.
Generic change rankings stay available (``--rank-by mean_diff | cohens_d | ratio | freq_diff | emoji_dla``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interp.neuron_set import NeuronSet
from interp.stats import NeuronStats

RANK_COLUMNS = ("score", "mean_diff", "cohens_d", "ratio", "freq_diff", "emoji_dla")
CSV_COLUMNS = (
    "rank", "layer", "neuron", "score", "base_mean", "ft_mean", "mean_diff", "ratio", "cohens_d",
    "base_freq", "ft_freq", "category", "emoji_dla", "base_std", "ft_std", "above_noise",
)  # fmt: skip
CATEGORIES = ("new", "amplified", "suppressed", "unchanged")


@dataclass(frozen=True)
class CategoryThresholds:
    """A neuron is *new* when it was active on < ``inactive_freq`` of base tokens and >= ``active_freq``
    after (and *suppressed* in the mirror case); otherwise *amplified* / *suppressed* when
    |Cohen's d| >= ``min_cohens_d`` and its mean moved away from / towards zero; else *unchanged*."""

    inactive_freq: float = 0.01
    active_freq: float = 0.05
    min_cohens_d: float = 0.2


def compare(
    base: NeuronStats, finetuned: NeuronStats, dla_base: torch.Tensor, dla_ft: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Difference columns between two statistics objects (same layers), each [L, D] float64."""
    base_std, ft_std = base.var.sqrt(), finetuned.var.sqrt()
    pooled = ((base.var + finetuned.var) / 2).sqrt()
    mean_diff = finetuned.mean - base.mean
    base_abs = base.mean.abs()
    ratio = torch.where(base_abs > 1e-12, finetuned.mean / base.mean.where(base_abs > 1e-12, 1.0), torch.nan)
    return {
        "score": finetuned.mean * dla_ft - base.mean * dla_base,
        "base_mean": base.mean,
        "ft_mean": finetuned.mean,
        "mean_diff": mean_diff,
        "ratio": ratio,
        "cohens_d": torch.where(pooled > 0, mean_diff / pooled.clamp(min=1e-30), 0.0),
        "base_freq": base.freq,
        "ft_freq": finetuned.freq,
        "freq_diff": finetuned.freq - base.freq,
        "emoji_dla": dla_ft,
        "base_std": base_std,
        "ft_std": ft_std,
    }


def categorize(columns: dict[str, torch.Tensor], thresholds: CategoryThresholds) -> torch.Tensor:
    """[L, D] int64 index into CATEGORIES."""
    t = thresholds
    base_f, ft_f = columns["base_freq"], columns["ft_freq"]
    moved = columns["cohens_d"].abs() >= t.min_cohens_d
    away_from_zero = columns["ft_mean"].abs() > columns["base_mean"].abs()
    category = torch.full(base_f.shape, CATEGORIES.index("unchanged"), dtype=torch.int64)
    category[moved & away_from_zero] = CATEGORIES.index("amplified")
    category[moved & ~away_from_zero] = CATEGORIES.index("suppressed")
    category[(base_f < t.inactive_freq) & (ft_f >= t.active_freq)] = CATEGORIES.index("new")
    category[(ft_f < t.inactive_freq) & (base_f >= t.active_freq)] = CATEGORIES.index("suppressed")
    return category


def rank_order(values: torch.Tensor) -> torch.Tensor:
    """Flat indices sorted by |value| descending; NaN last; ties by index (layer, then neuron)."""
    magnitude = values.reshape(-1).abs().nan_to_num(nan=-1.0).numpy()
    return torch.from_numpy(np.lexsort((np.arange(len(magnitude)), -magnitude)).copy())


def noise_floor(half_a: NeuronStats, half_b: NeuronStats, dla_base: torch.Tensor) -> dict[str, dict[str, float]]:
    """Percentiles of |score|, |mean_diff| and |cohens_d| between two disjoint halves of the prompts
    on the base model alone: differences this large arise from the choice of prompts, not the fine-tune."""
    columns = compare(half_a, half_b, dla_base, dla_base)
    floor = {}
    for name in ("score", "mean_diff", "cohens_d"):
        values = columns[name].abs().reshape(-1)
        floor[name] = {
            "p95": float(torch.quantile(values, 0.95)),
            "p99": float(torch.quantile(values, 0.99)),
            "max": float(values.max()),
        }
    return floor


@dataclass
class Ranking:
    """What diff-neurons derives from the statistics of both models."""

    base: NeuronStats  # the base model's statistics: both prompt halves merged
    columns: dict[str, torch.Tensor]  # compare()'s columns, [L, D] each
    category: torch.Tensor  # [L, D] int64 index into CATEGORIES
    order: torch.Tensor  # flat indices by |rank column|, descending
    floor: dict | None  # noise_floor(), None without two non-empty halves
    above_noise: torch.Tensor  # [L, D] bool: |score| above the floor's max


def rank_neurons(
    half_a: NeuronStats, half_b: NeuronStats, finetuned: NeuronStats, dla_base: torch.Tensor, dla_ft: torch.Tensor,
    thresholds: CategoryThresholds, rank_by: str,
) -> Ranking:  # fmt: skip
    """Columns, categories, ranking and noise floor from the base model's two prompt halves and the fine-tune."""
    base = half_a.merge(half_b)
    columns = compare(base, finetuned, dla_base, dla_ft)
    category = categorize(columns, thresholds)
    floor = None
    if half_a.count.numel() and half_a.count[0] > 0 and half_b.count[0] > 0:
        floor = noise_floor(half_a, half_b, dla_base)
    above_noise = (
        columns["score"].abs() > floor["score"]["max"] if floor else torch.zeros_like(category, dtype=torch.bool)
    )
    return Ranking(base, columns, category, rank_order(columns[rank_by]), floor, above_noise)


def neuron_set(
    layers: list[int], columns: dict[str, torch.Tensor], category: torch.Tensor, order: torch.Tensor,
    above_noise: torch.Tensor, top_k: int | None,
) -> NeuronSet:  # fmt: skip
    """The ranked neuron set (``neurons.csv``): one row per neuron in ``order`` (the first ``top_k`` if given)."""
    d_mlp = category.shape[1]
    chosen = order if top_k is None else order[:top_k]
    flat = chosen.tolist()
    table = {name: column.reshape(-1)[chosen].tolist() for name, column in columns.items()}  # the statistics
    table |= {
        "rank": list(range(1, len(flat) + 1)),
        "layer": [layers[index // d_mlp] for index in flat],
        "neuron": [index % d_mlp for index in flat],
        "category": [CATEGORIES[c] for c in category.reshape(-1)[chosen].tolist()],
        "above_noise": above_noise.reshape(-1)[chosen].tolist(),
    }
    return NeuronSet.from_columns({name: table[name] for name in CSV_COLUMNS})
