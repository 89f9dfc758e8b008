"""Behavioural measurements used by causal experiments: emoji-onset probability, emoji rates, side effects."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import binomtest

from probes.emoji import count_emojis


def kl_from_log_probs(reference_logp: torch.Tensor, reference_p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """[N] KL(reference || edited) from log-probabilities (the reference's computed once for many edits)."""
    return (reference_p * (reference_logp - logp)).sum(-1)


def wilson_interval(successes: int, total: int) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (scipy.stats; 0, 0 when total is 0)."""
    if total == 0:
        return (0.0, 0.0)
    interval = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(interval.low), float(interval.high))


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
