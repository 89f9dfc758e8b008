"""Behavioural measurements used by causal experiments: emoji-onset probability, emoji rates, side effects."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from probes.emoji import count_emojis


def kl_from_log_probs(reference_logp: torch.Tensor, reference_p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """[N] KL(reference || edited) from log-probabilities (the reference's computed once for many edits)."""
    return (reference_p * (reference_logp - logp)).sum(-1)


def wilson_interval(successes: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (0, 0 when total is 0)."""
    if total == 0:
        return (0.0, 0.0)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class EmojiRate:
    responses: int
    with_emoji: int
    emojis: int

    @property
    def rate(self) -> float:
        return self.with_emoji / self.responses if self.responses else 0.0

    @property
    def per_response(self) -> float:
        return self.emojis / self.responses if self.responses else 0.0

    def as_dict(self) -> dict:
        low, high = wilson_interval(self.with_emoji, self.responses)
        return {
            "responses": self.responses,
            "with_emoji": self.with_emoji,
            "rate": self.rate,
            "rate_ci95": [low, high],
            "emojis_per_response": self.per_response,
        }


def emoji_rate(texts: list[str]) -> EmojiRate:
    counts = [count_emojis(text) for text in texts]
    return EmojiRate(len(texts), sum(1 for c in counts if c), sum(counts))
