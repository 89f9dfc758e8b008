"""Is an edit's effect about emojis at all? Its effect on the emoji-onset tokens against matched token sets.

A causal test reads one number, the probability mass on the emoji-onset tokens. An edit that raises the whole tail
of the next-token distribution, or sharpens it, moves that mass too. So for the unedited model and every tested
condition, ``TokenProfile`` sums over the measured positions each token's probability and log-probability and,
per prompt, the entropy of the next-token distribution. Afterwards ``specificity`` compares the edit's change of
the onset tokens' mass (the log ratio of pooled masses, edited / unedited) with the same change of
``MATCHED_SETS`` token sets of the same size, each token drawn from the ``TOKEN_POOL`` tokens nearest to one onset
token in mean probability under the unedited model at the same positions (log scale). The emoji effect's
Monte Carlo p-value among them, in the test's fixed direction, says whether the edit is emoji-specific; the
entropy change and the tokens whose log-probability moved most say what else it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from interp import significance
from interp.prompt_sums import PromptSums

MATCHED_SETS = 1000  # token sets matched to the onset set (the smallest one-sided p is 1 / 1001)
TOKEN_POOL = 50  # candidates per onset token: the nearest other tokens in log mean probability
TOP_TOKENS = 10  # tokens listed per direction of log-probability change


@dataclass
class TokenProfile:
    """One condition's next-token distributions summed over the measured positions."""

    prob_sum: torch.Tensor | None = None  # [vocab] float64, summed probability of each token
    logprob_sum: torch.Tensor | None = None  # [vocab] float64, summed log-probability (nats)
    positions: int = 0
    entropy_by_prompt: PromptSums = field(default_factory=PromptSums)  # summed entropy (nats) over positions

    def update(self, logits: torch.Tensor, prompt_of_row: torch.Tensor) -> None:
        """Fold in float32 ``logits`` [P, vocab] of P positions; ``prompt_of_row`` [P]: each position's prompt."""
        logp = torch.log_softmax(logits.float(), -1)
        probs = logp.exp()
        entropy = -(probs * logp).sum(-1).double().cpu()
        if self.prob_sum is None:
            self.prob_sum = torch.zeros(logits.shape[-1], dtype=torch.float64)
            self.logprob_sum = torch.zeros(logits.shape[-1], dtype=torch.float64)
        self.prob_sum += probs.sum(0).double().cpu()
        self.logprob_sum += logp.sum(0).double().cpu()
        self.positions += len(logits)
        for prompt, value in zip(prompt_of_row.tolist(), entropy.tolist()):
            self.entropy_by_prompt.fold(prompt, value, 1)

    def add(self, other: TokenProfile) -> None:
        """Fold in another shard's sums."""
        if other.prob_sum is None:
            return
        if self.prob_sum is None:
            self.prob_sum, self.logprob_sum = other.prob_sum.clone(), other.logprob_sum.clone()
        else:
            self.prob_sum += other.prob_sum
            self.logprob_sum += other.logprob_sum
        self.positions += other.positions
        self.entropy_by_prompt.add(other.entropy_by_prompt)

    def mean_entropy(self, prompts: list[int]) -> np.ndarray:
        """[len(prompts)] mean entropy (nats) of the next-token distribution per prompt."""
        sums, counts = self.entropy_by_prompt.arrays(prompts)
        return sums / counts


def matched_token_sets(mean_prob: np.ndarray, onset_ids: list[int], count: int, seed: int) -> np.ndarray:
    """[count, K] token sets matched to the K ``onset_ids`` on ``mean_prob`` [vocab] (log scale): per onset token,
    one of its ``TOKEN_POOL`` nearest non-onset tokens, no token twice in a set. The pools come from one sort of the
    vocabulary (memory K x pool, not K x vocab: Gemma 3 has 1,031 onset tokens and 262,144 tokens)."""
    onset = np.asarray(onset_ids)
    log_prob = np.log(np.maximum(mean_prob, 1e-300))
    candidates = np.setdiff1d(np.arange(len(mean_prob)), onset)
    candidates = candidates[np.argsort(log_prob[candidates], kind="stable")]  # by probability
    ordered = log_prob[candidates]
    pool_size = min(TOKEN_POOL, len(candidates))
    # the pool_size nearest of a sorted list lie within pool_size places on either side of the insertion point
    at = np.searchsorted(ordered, log_prob[onset])
    window = np.clip(at[:, None] + np.arange(-pool_size, pool_size)[None, :], 0, len(candidates) - 1)  # [K, 2 pool]
    nearest = np.argsort(np.abs(ordered[window] - log_prob[onset][:, None]), axis=1, kind="stable")[:, :pool_size]
    pools = candidates[np.take_along_axis(window, nearest, axis=1)]  # [K, pool]
    rng = np.random.default_rng(seed)
    sets = pools[np.arange(len(onset))[:, None], rng.integers(pool_size, size=(len(onset), count))].T  # [count, K]
    for row in sets:  # pools overlap where onset tokens are alike: redraw a repeated token from its own pool
        for k in range(1, len(row)):
            while row[k] in row[:k] and len(set(pools[k]) - set(row[:k])) > 0:
                row[k] = pools[k][rng.integers(pool_size)]
    return sets


def specificity(
    tested: TokenProfile, unedited: TokenProfile, onset_ids: list[int], alternative: str, seed: int,
    decode=None, sets: int = MATCHED_SETS,
) -> dict:  # fmt: skip
    """The specificity block of one comparison: the onset tokens' log ratio of pooled mass (edited / unedited)
    against ``sets`` matched token sets (p-value for ``alternative``; ``p_value_adjusted`` and ``specific`` are
    filled in with the run's other comparisons), the entropy change, and the tokens whose mean log-probability
    moved most (``decode``: token id -> text)."""
    unedited_mass, tested_mass = unedited.prob_sum.numpy(), tested.prob_sum.numpy()
    matched = matched_token_sets(unedited_mass / unedited.positions, onset_ids, sets, seed)

    def log_ratio(tokens: np.ndarray) -> np.ndarray:
        return np.log(tested_mass[tokens].sum(-1)) - np.log(unedited_mass[tokens].sum(-1))

    emoji = float(log_ratio(np.asarray(onset_ids)))
    controls = log_ratio(matched)
    change = (tested.logprob_sum - unedited.logprob_sum).numpy() / unedited.positions  # [vocab] mean change, nats
    prompts = sorted(unedited.entropy_by_prompt)
    entropy_change = tested.mean_entropy(prompts) - unedited.mean_entropy(prompts)
    low, high = np.percentile(controls, [5, 95])
    return {
        "method": f"the emoji-onset tokens' log ratio of pooled probability (edited / unedited) against {sets} token "
        f"sets of the same size, each token one of the {TOKEN_POOL} nearest to an onset token in mean probability "
        "under the unedited model at the same positions",
        "sets": sets,
        "seed": seed,
        "alternative": alternative,
        "emoji_relative_change": float(np.expm1(emoji)),
        "matched_relative_change_5_95": [float(np.expm1(low)), float(np.expm1(high))],
        "matched_relative_change_median": float(np.expm1(np.median(controls))),
        "share_of_sets_as_extreme": _share_as_extreme(emoji, controls, alternative),
        "effect_in_matched_sd": float((emoji - controls.mean()) / controls.std()) if controls.std() > 0 else None,
        "p_value": significance.control_p_value(emoji, controls.tolist(), alternative),
        "min_p_value": significance.min_p_value(sets, alternative),
        "entropy_change": _mean_with_interval(entropy_change),
        "onset_tokens": _onset_ranks(change, onset_ids, alternative, decode),
        "most_raised": _listed(np.argsort(-change, kind="stable")[:TOP_TOKENS], change, decode),
        "most_lowered": _listed(np.argsort(change, kind="stable")[:TOP_TOKENS], change, decode),
    }


def _share_as_extreme(effect: float, controls: np.ndarray, alternative: str) -> float:
    """Share of the matched sets whose change is at least as extreme as the onset tokens' in ``alternative``
    (two-sided: twice the smaller tail, at most 1), as the p-value counts them."""
    greater, less = float(np.mean(controls >= effect)), float(np.mean(controls <= effect))
    return {"greater": greater, "less": less}.get(alternative, min(1.0, 2 * min(greater, less)))


def _mean_with_interval(values: np.ndarray) -> dict:
    """Mean over prompts (nats) with a 95 % t interval (None with fewer than two prompts)."""
    mean = float(values.mean())
    interval = None
    if len(values) > 1 and values.std() > 0:
        ci = stats.ttest_1samp(values, 0.0).confidence_interval(significance.CONFIDENCE)
        interval = [float(ci.low), float(ci.high)]
    return {"mean_nats": mean, "ci95": interval, "prompts": len(values)}


def _onset_ranks(change: np.ndarray, onset_ids: list[int], alternative: str, decode) -> list[dict]:
    """Per onset token: its mean log-probability change and the share of the vocabulary that moved more in the
    test's direction (|change| when two-sided)."""
    moved = -change if alternative == "less" else np.abs(change) if alternative == "two-sided" else change
    return [
        {"token": int(t), "text": decode(int(t)) if decode else None, "logprob_change": float(change[t]),
         "share_of_vocabulary_moved_more": float(np.mean(moved > moved[t]))}
        for t in onset_ids
    ]  # fmt: skip


def _listed(tokens: np.ndarray, change: np.ndarray, decode) -> list[dict]:
    return [{"token": int(t), "text": decode(int(t)) if decode else None, "logprob_change": float(change[t])}
            for t in tokens]  # fmt: skip
