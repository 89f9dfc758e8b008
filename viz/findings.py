"""The report's headline: one paragraph written from the run's numbers, saying which way emoji use moved
and whether each causal effect beat its random controls."""

from __future__ import annotations

from viz.run_artifacts import AblationRun, RunArtifacts

ROLE_SENTENCES = {
    "necessity": "Editing ({mode}) the top {n} neurons{which} in the fine-tuned model",
    "sufficiency": "Patching the fine-tuned model's values of the top {n} neurons{which} into the base model",
}
WHICH = {"raising": " whose change pushes emoji logits up", "lowering": " whose change pushes emoji logits down"}


def headline(run: RunArtifacts) -> str:
    sentences = [s for s in (_evaluation(run), _diff(run), *_causal(run)) if s]
    return " ".join(sentences) if sentences else "This run holds no results to summarise yet."


def _evaluation(run: RunArtifacts) -> str | None:
    if not run.evaluate:
        return None
    rows = {row["model"]: row for row in run.evaluate["rows"]}
    base, tuned = rows.get("base"), rows.get("peft")
    if not (base and tuned) or base.get("esr") is None or tuned.get("esr") is None:
        return None
    overlap = tuned["esr_ci_low"] <= base["esr_ci_high"] and base["esr_ci_low"] <= tuned["esr_ci_high"]
    verdict = "the 95 % intervals overlap: not significant" if overlap else "the 95 % intervals do not overlap"
    trait = tuned.get("trait", "the trait")
    ta = ""
    if tuned.get("ta") is not None and base.get("ta") is not None:
        ta = f", and the metric model reads {tuned['ta']:.0%} of them as {trait} (base {base['ta']:.0%})"
    return (
        f"Sampled answers to the test questions carry an emoji {tuned['esr']:.1%} of the time after fine-tuning on "
        f"{trait}, against {base['esr']:.1%} before ({verdict}){ta}."
    )


def _diff(run: RunArtifacts) -> str | None:
    if not run.diff or "emoji" not in run.diff.summary:
        return None
    summary = run.diff.summary
    emoji = summary["emoji"]
    ratio = emoji["onset_probability"]["ratio"]
    positions = summary.get("config", {}).get("positions", "all")
    text = (
        f"At the counted positions ({positions}) the fine-tuned model puts {ratio:.3g}x the base model's "
        f"probability on tokens that begin an emoji: emoji use {emoji['direction']}."
    )
    floor = summary.get("noise_floor", {})
    if "neurons_above_max_score" in floor:
        text += f" {floor['neurons_above_max_score']} neurons change more than the noise floor between prompt halves."
    return text


def _causal(run: RunArtifacts) -> list[str]:
    sentences = []
    for role, template in ROLE_SENTENCES.items():
        ablation = run.ablation(role)
        if ablation is None or not ablation.report["comparisons"]:
            continue
        comparison = next(iter(ablation.report["comparisons"].values()))
        config = ablation.report["config"]
        which = WHICH.get(config.get("sign", "any"), "") if config.get("neurons_from") else ""
        lead = template.format(mode=config.get("mode"), n=len(ablation.report["neurons"]), which=which)
        sentences.append(f"{lead} changed the emoji-onset probability by {_relative(comparison)}; "
                         f"{_verdict(comparison)}.")  # fmt: skip
        if role == "necessity" and config.get("mode") == "zero":
            push = _direct_push(run, ablation.report["neurons"])
            if push is not None:
                way = "up" if push > 0 else "down"
                sentences.append(f"Their summed direct emoji push in the fine-tuned model (ft_mean x emoji_dla) is "
                                 f"{push:+.3g} logits: zeroing removes a net push {way}.")  # fmt: skip
    gap = _gap_closed(run)
    if gap:
        sentences.append(gap)
    dose = run.ablation("dose")
    if dose is not None and dose.report["comparisons"]:
        sentences.append(_dose(dose))
    return sentences


def _direct_push(run: RunArtifacts, neurons: list[str]) -> float | None:
    """Sum over ``neurons`` ("L:I") of ft_mean x emoji_dla from neurons.csv, or None if any row is missing."""
    if run.diff is None:
        return None
    rows = {f"{row['layer']}:{row['neuron']}": row for row in run.diff.neurons}
    if not all(address in rows for address in neurons):
        return None
    return sum(float(rows[a]["ft_mean"]) * float(rows[a]["emoji_dla"]) for a in neurons)


def _gap_closed(run: RunArtifacts) -> str | None:
    """How much of the fine-tune's own change the patch reproduces: the patched base's shift as a share of
    (fine-tuned - base), both unedited models measured on the same sequences and positions."""
    necessity, sufficiency = run.ablation("necessity"), run.ablation("sufficiency")
    if not (necessity and sufficiency and sufficiency.report["comparisons"]):
        return None
    same = ("prompts", "responses", "positions", "max_length", "raw")
    if any(necessity.report["config"].get(k) != sufficiency.report["config"].get(k) for k in same):
        return None
    tuned = necessity.report["conditions"]["unedited"]["emoji_onset_probability"]
    base = sufficiency.report["conditions"]["unedited"]["emoji_onset_probability"]
    effect = next(iter(sufficiency.report["comparisons"].values()))["effect"]
    if tuned == base:
        return None
    share = effect / (tuned - base)
    direction = "falls" if tuned < base else "rises"
    if share < 0:
        return (
            f"On these sequences emoji-onset probability {direction} with the fine-tune ({base:.3g} -> {tuned:.3g}), "
            f"but the patch moves the base the other way: these neurons do not carry the fine-tune's change."
        )
    return (
        f"On these sequences emoji-onset probability {direction} with the fine-tune ({base:.3g} -> {tuned:.3g}); "
        f"the patch reproduces {share:.0%} of that change."
    )


def _relative(comparison: dict) -> str:
    relative = comparison.get("relative_effect")
    return f"{relative:+.1%}" if relative is not None else f"{comparison['effect']:+.3g}"


def _verdict(comparison: dict) -> str:
    n = len(comparison["control_effects"])
    word = "significant" if comparison["significant"] else "not significant"
    return f"{word} against {n} random matched neuron sets (p = {comparison['p_value']:.3g})"


def _dose(dose: AblationRun) -> str:
    points = dose.dose_points()
    values = [tested for _, tested, _, _ in points]
    rising = all(a <= b for a, b in zip(values, values[1:]))
    falling = all(a >= b for a, b in zip(values, values[1:]))
    shape = "rises steadily" if rising else "falls steadily" if falling else "is not monotonic"
    comparisons = list(dose.report["comparisons"].values())
    first = comparisons[0]
    if first.get("min_p_value", 0.0) < first.get("significance_level", 1.0):
        significant = sum(c["significant"] for c in comparisons)
        controlled = f"{significant} of {len(comparisons)} scales beat their random controls"
    else:
        controlled = (f"with {len(first['control_effects'])} random sets per scale the curve is descriptive "
                      f"(p cannot fall below {first['significance_level']:g})")  # fmt: skip
    return (
        f"Scaling those neurons from alpha {points[0][0]:g} to {points[-1][0]:g}, the emoji-onset probability {shape} "
        f"({values[0]:.3g} to {values[-1]:.3g}); {controlled}."
    )
