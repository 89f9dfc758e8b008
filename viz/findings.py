"""The report's headline: a short list of findings written from the run's numbers: which way emoji use moved
(with its interval over prompts), and each causal effect with its interval, its adjusted p-value against both
nulls, and whether it was tested on held-out prompts."""

from __future__ import annotations

from interp.significance import SIGNIFICANCE
from interp.verdicts import behaviour_words, effect_words, specificity_words
from viz.run_artifacts import AblationRun, RunArtifacts

ROLE_SENTENCES = {
    "restore": "Restoring the base model's values of the top {n} neurons{which} in the fine-tuned model",
    "necessity": "Editing ({mode}) the top {n} neurons{which} in the fine-tuned model",
    "sufficiency": "Patching the fine-tuned model's values of the top {n} neurons{which} into the base model",
}
NULL_LABELS = {"layer": "layer-matched", "matched": "selection-matched"}
WHICH = {"raising": " whose change pushes emoji logits up", "lowering": " whose change pushes emoji logits down"}


def findings(run: RunArtifacts) -> list[str]:
    """The headline's findings, one sentence (or two) each, most direct test of the change first."""
    return [s for s in (_evaluation(run), _diff(run), *_causal(run), _overlap(run), _sweep(run)) if s]


def _sweep(run: RunArtifacts) -> str | None:
    if not run.sweep or not run.sweep["rows"]:
        return None
    rows = [row for row in run.sweep["rows"] if row["seeds"]]
    counts = {word: sum(row["direction"] == word for row in rows) for word in ("rises", "falls", "no clear change")}
    more = [row["cell"] for row in rows
            if row["esr_p_value_adjusted"] is not None and row["esr_p_value_adjusted"] < 0.05
            and row["esr"] > row["base_esr"]]  # fmt: skip
    sampled = (f"sampled emoji use is significantly above the base model's in {', '.join(more)}" if more else
               "in none is sampled emoji use significantly above the base model's")  # fmt: skip
    return (
        f"Across {len(rows)} fine-tuning settings ({len(run.sweep['settings']['seeds'])} seeds each), the emoji-onset "
        f"probability at the reply start rises in {counts['rises']}, falls in {counts['falls']} and shows no clear "
        f"change in {counts['no clear change']} (t test of the seeds' log ratios, Holm-adjusted across settings); "
        f"{sampled} (Fisher, Holm-adjusted)."
    )


def _overlap(run: RunArtifacts) -> str | None:
    if not run.replication:
        return None
    overlap, seeds = run.replication["jaccard"], run.replication["seeds"]
    kept = sum(t["replicated"] for t in run.replication["tests"].values())
    return (
        f"A second adapter trained with seed {seeds['replicate']} (seed {seeds['original']} here) shares "
        f"{overlap['top_20_by_score']:.0%} of the top 20 neurons by |score| (Jaccard) and {overlap['tested_sets']:.0%} "
        f"of the tested set; {kept} of {len(run.replication['tests'])} causal verdicts replicate."
    )


def headline(run: RunArtifacts) -> str:
    found = findings(run)
    return " ".join(found) if found else "This run holds no results to summarise yet."


def _evaluation(run: RunArtifacts) -> str | None:
    if not run.evaluate:
        return None
    rows = {row["model"]: row for row in run.evaluate["rows"]}
    base, tuned = rows.get("base"), rows.get("peft")
    if not (base and tuned) or base.get("esr") is None or tuned.get("esr") is None:
        return None
    verdict = _esr_test(base, tuned)
    trait = tuned.get("trait", "the trait")
    ta = ""
    if tuned.get("ta") is not None and base.get("ta") is not None:
        ta = f", and the metric model reads {tuned['ta']:.0%} of them as {trait} (base {base['ta']:.0%})"
    return (
        f"Sampled answers to the test questions carry an emoji {tuned['esr']:.1%} of the time after fine-tuning on "
        f"{trait}, against {base['esr']:.1%} before ({verdict}){ta}."
    )


def _esr_test(base: dict, tuned: dict) -> str:
    """Fisher's exact test (two-sided) of the answers with an emoji, base vs fine-tuned."""
    from scipy.stats import fisher_exact

    counts = [(round(row["esr"] * row["responses"]), row["responses"]) for row in (tuned, base)]
    table = [[with_emoji, total - with_emoji] for with_emoji, total in counts]
    p_value = float(fisher_exact(table).pvalue)
    word = "significant" if p_value < SIGNIFICANCE else "not significant"
    return f"{counts[0][0]}/{counts[0][1]} vs {counts[1][0]}/{counts[1][1]}, Fisher's exact p = {p_value:.3g}: {word}"


def _diff(run: RunArtifacts) -> str | None:
    if not run.diff or "emoji" not in run.diff.summary:
        return None
    summary = run.diff.summary
    emoji = summary["emoji"]
    ratio = emoji["onset_probability"]["ratio"]
    interval = emoji["onset_probability"].get("ratio_ci95")
    positions = summary.get("config", {}).get("positions", "all")
    typical = "geometric mean over prompts, " if emoji["onset_probability"].get("ratio_estimand") else ""
    spread = f" ({typical}95 % CI {interval[0]:.4g}-{interval[1]:.4g}x)" if interval else " (no interval)"
    direction = emoji["direction"]
    words = "no clear change in emoji use" if direction == "no clear change" else f"emoji use {direction}"
    text = (
        f"At the counted positions ({positions}) the fine-tuned model puts {ratio:.4g}x the base model's "
        f"probability on tokens that begin an emoji{spread}: {words}."
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
        comparison = next(iter(run.printed_comparisons(ablation).values()))
        config = ablation.report["config"]
        which = WHICH.get(config.get("sign", "any"), "") if config.get("neurons_from") else ""
        lead = template.format(mode=config.get("mode"), n=len(ablation.report["neurons"]), which=which)
        sentences.append(f"{lead} ({_prompts(ablation.report)}) changed the teacher-forced emoji-onset probability "
                         f"by {effect_words(comparison)}; {_verdict(comparison)}{_replication(run, role)}."
                         f"{_claims(comparison)}")  # fmt: skip
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


def _replication(run: RunArtifacts, role: str) -> str:
    """ "; replicated with seed S" / "; does not replicate with seed S" from replication.json, if any."""
    test = (run.replication or {}).get("tests", {}).get(role)
    if test is None:
        return ""
    seed = run.replication["seeds"]["replicate"]
    return f"; {'replicated' if test['replicated'] else 'does not replicate'} with training seed {seed}"


def _prompts(report: dict) -> str:
    """ "held-out prompts" or how many of its prompts also selected the neurons."""
    overlap = report.get("selection_overlap")
    if overlap is None:
        return "selection prompts unknown"
    if overlap == 0:
        return "held-out prompts"
    return f"tested on the prompts they were selected on: {overlap:.0%} overlap"


def _direct_push(run: RunArtifacts, neurons: list[str]) -> float | None:
    """Sum over ``neurons`` ("L:I") of ft_mean x emoji_dla from neurons.csv, or None if any row is missing."""
    if run.diff is None:
        return None
    rows = run.diff.neurons.by_label()
    if not all(address in rows for address in neurons):
        return None
    return sum(float(rows[a]["ft_mean"]) * float(rows[a]["emoji_dla"]) for a in neurons)


def _gap_closed(run: RunArtifacts) -> str | None:
    """How much of the fine-tune's own change the patch reproduces (sufficiency) or undoes (restore): the edited
    model's mean per-prompt log change as a share of the source model's, both measured on the same sequences."""
    sentences = []
    for role, verb in (("restore", "undoes"), ("sufficiency", "reproduces")):
        ablation = run.ablation(role)
        comparison = next(iter(ablation.report["comparisons"].values()), None) if ablation else None
        if not comparison or comparison.get("gap_closed") is None:
            continue
        share, interval = comparison["gap_closed"], comparison.get("gap_closed_ci95")
        spread = f" (95 % CI {interval[0]:.0%} to {interval[1]:.0%})" if interval else ""
        scale = " (on the log scale, per prompt)" if "log_ratio" in comparison else ""
        sentences.append(f"The {role} edit {verb} {share:.0%}{spread} of the fine-tune's change in emoji-onset "
                         f"probability on its prompts{scale}.")  # fmt: skip
    return " ".join(sentences) or None


def _verdict(comparison: dict) -> str:
    """Significance from the adjusted p-value (over the pipeline's primary tests when the run is a pipeline), with
    how far the effect lies from each null's control sets and the smallest p-value their number allows."""
    if "p_value" not in comparison:
        return "no controls were run: significance unknown"
    over = len(comparison.get("adjusted_over") or [1])
    nulls = " and ".join(f"{len(t['control_effects'])} {NULL_LABELS.get(n, n)}" for n, t in comparison["nulls"].items())
    distances = ", ".join(f"{t['effect_in_control_sd']:+.1f}" for t in comparison["nulls"].values()
                          if t.get("effect_in_control_sd") is not None)  # fmt: skip
    beyond = f"; {distances} SD from the control sets' means" if distances else ""
    word = "significant" if comparison["significant"] else "not significant"
    return (f"{word} against {nulls} control sets ({comparison['alternative']}, p = {comparison['p_value']:.3g}, the "
            f"floor {comparison['min_p_value']:.2g}; Holm-adjusted p = {comparison['p_value_adjusted']:.3g} over "
            f"{over} test{'s' * (over != 1)}{beyond})")  # fmt: skip


def _claims(comparison: dict) -> str:
    """ " Specificity: ... Behaviour: ..." sentences of the comparison, where measured."""
    text = ""
    if comparison.get("specificity"):
        text += f" Specificity: {specificity_words(comparison['specificity'])}."
    if comparison.get("behaviour"):
        text += f" Sampled behaviour: {behaviour_words(comparison['behaviour'])}."
    return text


def _dose(dose: AblationRun) -> str:
    points = dose.dose_points()
    values = [tested for _, tested, _, _ in points]
    rising = all(a <= b for a, b in zip(values, values[1:]))
    falling = all(a >= b for a, b in zip(values, values[1:]))
    shape = "rises steadily" if rising else "falls steadily" if falling else "is not monotonic"
    comparisons = list(dose.report["comparisons"].values())
    first = comparisons[0]
    if "p_value" not in first:
        controlled = "no controls were run: the curve is descriptive"
    elif first["min_p_value"] < first["significance_level"]:
        significant = sum(c["significant"] for c in comparisons)
        controlled = f"{significant} of {len(comparisons)} scales beat their controls (Holm-adjusted within the run)"
    else:
        sets = len(next(iter(first["nulls"].values()))["control_effects"])
        controlled = (f"with {sets} control sets per scale the curve is descriptive "
                      f"(p cannot fall below {first['min_p_value']:.2g})")  # fmt: skip
    return (
        f"Scaling those neurons from alpha {points[0][0]:g} to {points[-1][0]:g}, the emoji-onset probability {shape} "
        f"({values[0]:.3g} to {values[-1]:.3g}); {controlled}."
    )
