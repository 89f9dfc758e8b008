"""Does sampled behaviour follow? Sampled emoji use under a tested edit against the unedited model, paired.

Every answer is sampled under both conditions from one random stream (common random numbers: the same Gumbel
noise per step, ``interp.generation``), so the two answers of a pair differ only through the edit. Each pair is
(unedited has an emoji, edited has an emoji). The test is McNemar's exact test: under "the edit does not change
the probability of an emoji", each discordant pair is as likely to favour either condition, so the number that
favour the edited model is Binomial(discordant, 1/2) (``scipy.stats.binomtest``), in the comparison's fixed
direction. The rate difference (edited - unedited) gets Newcombe's (1998, method 10) interval for paired
proportions, built from the two rates' Wilson intervals and their correlation.
"""

from __future__ import annotations

import math

from scipy.stats import binomtest

from probes.metrics import wilson_interval

READOUT = "sampled answers with at least one emoji, both conditions drawn from the same random stream per answer"


def paired_emoji_use(records: list[dict], tested: str, alternative: str, unedited: str = "unedited") -> dict | None:
    """The behavioural block of one comparison from generation ``records`` (``condition``, ``prompt_index``,
    ``sample``, ``emojis``), pairing condition ``tested`` with ``unedited``; None without pairs."""
    answers: dict[str, dict[tuple[int, int], bool]] = {unedited: {}, tested: {}}
    for record in records:
        if record["condition"] in answers:
            answers[record["condition"]][(record["prompt_index"], record["sample"])] = bool(record["emojis"])
    keys = sorted(set(answers[unedited]) & set(answers[tested]))
    if not keys:
        return None
    pairs = [(answers[unedited][k], answers[tested][k]) for k in keys]
    both = sum(u and t for u, t in pairs)
    tested_only = sum(t and not u for u, t in pairs)
    unedited_only = sum(u and not t for u, t in pairs)
    n, discordant = len(pairs), tested_only + unedited_only
    p_value = binomtest(tested_only, discordant, 0.5, alternative=alternative).pvalue if discordant else 1.0
    return {
        "readout": READOUT,
        "pairs": n,
        "prompts": len({k[0] for k in keys}),
        "unedited_with_emoji": both + unedited_only,
        "tested_with_emoji": both + tested_only,
        "unedited_only": unedited_only,
        "tested_only": tested_only,
        "rate_difference": (tested_only - unedited_only) / n,
        "rate_difference_ci95": newcombe_interval(both, tested_only, unedited_only, n - both - discordant),
        "test": "exact McNemar (binomial test of the discordant pairs)",
        "alternative": alternative,
        "p_value": float(p_value),
        "min_p_value": min(1.0, (2 if alternative == "two-sided" else 1) * 0.5**discordant),
    }


def newcombe_interval(both: int, first_only: int, second_only: int, neither: int) -> list[float]:
    """95 % interval of (first rate - second rate) for paired binary outcomes (Newcombe 1998, method 10):
    ``both`` pairs with the outcome in both, ``first_only`` / ``second_only`` in one, ``neither`` in none."""
    n = both + first_only + second_only + neither
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    (l1, u1), (l2, u2) = wilson_interval(both + first_only, n), wilson_interval(both + second_only, n)
    cross = both * neither - first_only * second_only
    if cross > 0:  # Newcombe's continuity adjustment of the correlation
        cross = max(cross - n / 2, 0.0)
    denominator = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    phi = cross / math.sqrt(denominator) if denominator else 0.0
    difference = p1 - p2
    below = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    above = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return [max(-1.0, difference - below), min(1.0, difference + above)]


def agreement(behaviour: dict, teacher_forced_effect: float) -> str:
    """Whether sampled emoji use moved the way the teacher-forced readout did: agree | disagree | no change."""
    sampled = behaviour["tested_only"] - behaviour["unedited_only"]
    if sampled == 0:
        return "no change"
    return "agree" if (sampled > 0) == (teacher_forced_effect > 0) else "disagree"
