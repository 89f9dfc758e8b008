"""The words of a causal test: corrections over a family of comparisons and one sentence per verdict.

A comparison (``interp.ablation.compare``) answers three claims, each corrected as its own family (Holm over the
run's comparisons, or over the pipeline's primary tests): the teacher-forced effect beats the control sets
(``p_value``), it is specific to the emoji-onset tokens (``specificity``), and sampled emoji use follows
(``behaviour``). Loads no model: the report words verdicts with it too.
"""

from __future__ import annotations

import copy

from interp import significance

SPECIFIC = "emoji-specific"
NOT_SPECIFIC = "not specific: moves matched tokens alike"
NULL_LABELS = {"layer": "layer-matched", "matched": "selection-matched", "direction": "norm-matched random direction"}
READOUT = "teacher-forced emoji-onset probability"
CLAIMS = ("effect", "specificity", "behaviour")  # the families a comparison belongs to


def p_values(comparison: dict) -> dict[str, float | None]:
    """claim -> the comparison's raw p-value for it (None where it was not tested)."""
    return {
        "effect": comparison.get("p_value"),
        "specificity": (comparison.get("specificity") or {}).get("p_value"),
        "behaviour": (comparison.get("behaviour") or {}).get("p_value"),
    }


def adjust(comparisons: dict[str, dict], level: float = significance.SIGNIFICANCE, subject: str = "the tested set"
           ) -> None:  # fmt: skip
    """Holm-adjust each claim's p-values over ``comparisons`` (name -> comparison) in place, then word each verdict
    (naming ``subject``)."""
    names = list(comparisons)
    raw = [p_values(comparisons[name]) for name in names]
    for claim in CLAIMS:
        tested = [name for name, p in zip(names, raw) if p[claim] is not None]
        adjusted = significance.holm([p[claim] for p in raw if p[claim] is not None])
        for name, value in zip(tested, adjusted):
            set_adjusted(comparisons[name], claim, value, tested, level)
    for comparison in comparisons.values():
        comparison["significance_level"] = level
        comparison["verdict"] = verdict(comparison, subject)


def set_adjusted(comparison: dict, claim: str, adjusted: float, family: list[str], level: float) -> None:
    """Record one claim's adjusted p-value and its family (the names of the comparisons corrected together)."""
    if claim == "effect":
        comparison["p_value_adjusted"], comparison["adjusted_over"] = adjusted, family
        comparison["significant"] = adjusted < level
        return
    block = comparison[claim]
    block["p_value_adjusted"], block["adjusted_over"] = adjusted, family
    block["specific" if claim == "specificity" else "significant"] = adjusted < level


def verdict(comparison: dict, subject: str = "the tested set") -> str:
    """The verdict's sentences: the teacher-forced effect against its nulls, its specificity, sampled behaviour."""
    sentences = [_effect_sentence(comparison, subject)]
    if comparison.get("specificity"):
        sentences.append(f"Specificity: {specificity_words(comparison['specificity'])}.")
    if comparison.get("behaviour"):
        sentences.append(f"Behaviour: {behaviour_words(comparison['behaviour'])}.")
    return " ".join(sentences)


def _effect_sentence(comparison: dict, subject: str) -> str:
    size = effect_words(comparison)
    if "p_value" not in comparison:
        return f"{subject} changed the {READOUT} by {size}; no controls were run: significance unknown."
    nulls = "; ".join(_null_words(null, test) for null, test in comparison["nulls"].items())
    if comparison["min_p_value"] >= comparison.get("significance_level", significance.SIGNIFICANCE):
        return (f"not significant, descriptive only (with these control sets p cannot fall below "
                f"{comparison['min_p_value']:.2g}; {comparison['alternative']}; readout: {READOUT}): {subject} changed "
                f"it by {size}; {nulls}.")  # fmt: skip
    word = "significant" if comparison["significant"] else "not significant"
    over = len(comparison.get("adjusted_over") or [1])
    return (
        f"{word} (Holm-adjusted p = {comparison['p_value_adjusted']:.3g} over {over} test{'s' * (over != 1)}, "
        f"{comparison['alternative']}; readout: {READOUT}): {subject} changed it by {size}; {nulls}."
    )


def _null_words(null: str, test: dict) -> str:
    """One null's p-value, the floor its control count allows, and how far beyond the control sets' mean."""
    distance = test.get("effect_in_control_sd")
    beyond = f", {distance:+.1f} SD from their mean" if distance is not None else ""
    return (f"{NULL_LABELS.get(null, null)}: p = {test['p_value']:.3g} (floor {test['min_p_value']:.2g}, "
            f"{len(test['control_effects'])} sets{beyond})")  # fmt: skip


def effect_words(comparison: dict) -> str:
    """The effect with its interval: the geometric mean over prompts of the edited / unedited ratio, as a change
    (the absolute difference for artifacts without one)."""
    relative = comparison.get("relative_effect")
    if relative is None:
        return f"{comparison['effect']:+.3g}"
    interval = comparison.get("relative_effect_ci95")
    spread = f", 95 % CI {interval[0]:+.1%} to {interval[1]:+.1%}" if interval else ""
    mean = "geometric mean" if "log_ratio" in comparison else "pooled"
    return f"{relative:+.1%} ({mean} over {comparison['prompts']} prompts{spread})"


def specificity_words(block: dict) -> str:
    """ "emoji-specific (...)" or "not specific: moves matched tokens alike (...)"."""
    low, high = block["matched_relative_change_5_95"]
    word = SPECIFIC if block.get("specific") else NOT_SPECIFIC
    adjusted = block.get("p_value_adjusted", block["p_value"])
    return (
        f"{word} (emoji-onset mass {block['emoji_relative_change']:+.0%}; {block['sets']} matched token sets "
        f"{low:+.0%} to {high:+.0%}, 5th-95th percentile, {block['share_of_sets_as_extreme']:.1%} as extreme; "
        f"p = {block['p_value']:.3g}, Holm-adjusted {adjusted:.3g}, floor {block['min_p_value']:.2g}; entropy "
        f"{block['entropy_change']['mean_nats']:+.3g} nats)"
    )


def behaviour_words(block: dict) -> str:
    """Sampled emoji use, edited against unedited, with its exact paired test and whether it agrees."""
    low, high = block["rate_difference_ci95"]
    adjusted = block.get("p_value_adjusted", block["p_value"])
    word = "significant" if adjusted < significance.SIGNIFICANCE else "not significant"
    agreement = {
        "agree": "sampled use moves the way the teacher-forced readout does",
        "disagree": "sampled use moves against the teacher-forced readout",
        "no change": "no pair changed, so sampled use cannot confirm the teacher-forced readout",
    }[block["agreement"]]
    return (
        f"{block['tested_with_emoji']} of {block['pairs']} sampled answers with an emoji against "
        f"{block['unedited_with_emoji']} unedited (paired; difference {block['rate_difference']:+.0%}, 95 % CI "
        f"{low:+.0%} to {high:+.0%}); exact McNemar p = {block['p_value']:.3g}, Holm-adjusted {adjusted:.3g}: "
        f"{word}; {agreement}"
    )


def as_family(comparisons: dict[str, dict], level: float = significance.SIGNIFICANCE) -> dict[str, dict]:
    """Copies of ``comparisons`` (name -> comparison, e.g. a pipeline's primary tests, one from each run) corrected
    as one family per claim and re-worded; the originals keep their run's own correction."""
    copies = copy.deepcopy(comparisons)
    adjust(copies, level)
    return copies
