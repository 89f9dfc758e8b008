"""``interp ablate``: do the chosen neurons cause the emoji behaviour? Edits against two nulls of control sets.

For every condition (the unedited model, the tested neuron set at each ``alpha``, and ``controls`` control
sets under each null: layer-matched random sets, and selection-matched sets that look like the tested neurons
on what the diff ranked by, ``interp.controls``) it measures, in batched forwards:
- the emoji-onset probability at the measured positions of teacher-forced responses (or, for prompts
  without responses, at the first reply position), per prompt, at the first reply position alone, and per answer
  the probability of at least one emoji along it;
- for the unedited and tested conditions, the whole next-token distributions at those positions (the specificity
  readout against matched token sets, ``interp.specificity``);
- with ``--mode patch``, the source model's own emoji-onset probability on the same tokens (the share of the
  source-vs-edited-model change a patch reproduces);
- optionally the exact log-probability of a list of emoji strings as the reply's start;
- side effects: KL(unedited || edited) at the measured positions, and perplexity on neutral text (the
  unedited model, the tested set and the first ``SIDE_EFFECT_CONTROLS`` control sets of each null);
- optionally sampled answers under the unedited and tested conditions from the same random streams (the
  behavioural readout, ``interp.behaviour``), with Wilson 95 % intervals of each rate.
Each comparison (one per alpha) records its alternative and where it came from (fixed before the run: the
user's ``--alternative`` or the diff's measured direction; two-sided by default), the effect (geometric mean over
prompts of the edited / unedited ratio) with a 95 % t interval over prompts, a Monte Carlo p-value per null, the
verdict's p-value (the larger of the two: the set must beat both), its specificity and behaviour blocks, each
claim Holm-adjusted across the run's comparisons (``interp.verdicts``), and ``selection_overlap``.
The procedure is ``interp.significance``'s; docs/design.md ("Causal verdicts") explains it.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from interp import artifacts, models, significance
from interp.behaviour import agreement, paired_emoji_use
from interp.controls import Edit, NeuronValues, layer_matched_sets, selection_matched_sets
from interp.distributed import Shards
from interp.errors import UserInputError, check_at_least, parse_floats
from interp.generation import SAMPLING_ROWS, common_front, front_cache, generate_edited, left_pad
from interp.interventions import MODES, Condition, EditPlan, applied, repeat_rows, reused_lower_blocks, shared_prefix
from interp.layers import check_neurons, parse_neurons
from interp.neuron_set import SIGNS, NeuronSet
from interp.next_token import NextTokenReader
from interp.progress import track
from interp.prompt_sums import PromptSums
from interp.prompts import Prompt, attach_responses, load_prompts
from interp.run_options import RunOptions, SamplingOptions
from interp.selection import DiffSelection, overlap
from interp.specificity import TokenProfile, specificity
from interp.stats import load_stats
from interp.tokens import Sequence, build_sequences, make_sequence, prompt_ids
from interp.verdicts import adjust
from probes.emoji import find_emojis
from probes.emoji_tokens import emoji_onset_ids
from probes.metrics import emoji_rate

NULLS = ("both", "layer", "matched")  # which control sets to draw: both nulls, or one of them
SIDE_EFFECT_CONTROLS = 20  # control sets per null whose neutral-text perplexity is measured


@dataclass(kw_only=True)
class CausalOptions(RunOptions, SamplingOptions):
    """What every causal run (``ablate``, ``steer``) measures and how it tests: prompts, controls, alternative."""

    prompts: str
    out: Path
    controls: int = 100  # control sets per null (the smallest one-sided p is 1 / (1 + controls))
    # which way the effect is expected, fixed in advance: two-sided | less | greater (ablate also: from-diff, predicted
    # from the --neurons-from diff run's selection data: the chosen neurons' direct emoji push)
    alternative: str = "two-sided"
    samples: int = 0  # sampled responses per prompt, unedited and tested (0: none)
    max_new_tokens: int = 48
    responses: str | None = None
    positions: str = "response"  # where edits apply: all | response
    emojis: str | None = None  # comma-separated emoji strings whose reply-start log-probability is measured
    batch_size: int = 16  # sequences per teacher-forced forward, all conditions together (sampling: SAMPLING_ROWS)
    neutral_prompts: str = "neutral-text"

    def check_causal_options(self) -> None:
        """Refuse settings no causal run can use (``UserInputError``)."""
        if self.positions not in ("all", "response"):
            raise UserInputError(f"--positions must be all or response, not {self.positions!r}.")
        if self.controls < 0:
            raise UserInputError(f"--controls must be 0 or more, not {self.controls}.")
        self.check_sampling()
        check_at_least("--batch-size", self.batch_size, 1)


@dataclass(kw_only=True)
class AblationConfig(CausalOptions):
    model: str
    neurons: str | None = None
    neurons_from: str | None = None
    neuron_set: NeuronSet | None = None  # Python API: the chosen neurons themselves (their file's diff run counts)
    top_k: int | None = None
    sign: str = "any"  # with neurons_from: any | raising | lowering (the sign of the score column)
    mode: str = "zero"
    alpha: str = "0"  # comma-separated scales for --mode scale
    stats: str | None = None
    stats_entry: str = "base"  # which statistics of the file give the means (mean mode)
    source_model: str | None = None
    nulls: str = "both"  # both | layer | matched (matched needs --neurons-from a diff run)
    role: str | None = None  # necessity | sufficiency | restore | dose, as the pipeline names its stages


@dataclass
class ConditionMetrics:
    """One condition's sums. ``by_prompt``: per prompt, the summed emoji-onset probability over its measured
    positions; ``answers_by_prompt``: per prompt, the summed P(at least one emoji along the answer) over its answers,
    each answer's from the onset mass at its positions as 1 - prod(1 - mass) (a per-answer teacher-forced readout);
    the other sums are pooled over positions."""

    by_prompt: PromptSums = field(default_factory=PromptSums)
    first_sum: float = 0.0
    first_count: int = 0
    kl_sum: float = 0.0
    nll_sum: float = 0.0
    nll_count: int = 0
    emoji_logprob: list[float] = field(default_factory=list)
    answers_by_prompt: PromptSums = field(default_factory=PromptSums)
    tokens: TokenProfile | None = None  # the whole next-token distributions (baseline and tested conditions)

    @property
    def onset_sum(self) -> float:
        return self.by_prompt.total()

    @property
    def onset_count(self) -> int:
        return self.by_prompt.count()

    def fold_prompt(self, index: int, total: float, count: int) -> None:
        self.by_prompt.fold(index, total, count)

    def per_prompt(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """([P] summed onset probability, [P] measured positions) for the prompts ``indices``."""
        return self.by_prompt.arrays(indices)

    def as_dict(self) -> dict:
        return {
            "emoji_onset_probability": self.by_prompt.mean(),
            "first_reply_onset_probability": self.first_sum / self.first_count if self.first_count else None,
            "kl_from_unedited": self.kl_sum / self.onset_count if self.onset_count else None,
            "neutral_perplexity": math.exp(self.nll_sum / self.nll_count) if self.nll_count else None,
            "emoji_logprob": statistics.fmean(self.emoji_logprob) if self.emoji_logprob else None,
            "answer_emoji_probability": self.answers_by_prompt.mean(),
        }

    def add(self, other: ConditionMetrics) -> None:
        """Fold in another shard's sums (lists are concatenated)."""
        for name in ("first_sum", "first_count", "kl_sum", "nll_sum", "nll_count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_prompt.add(other.by_prompt)
        self.answers_by_prompt.add(other.answers_by_prompt)
        self.emoji_logprob += other.emoji_logprob
        if other.tokens is not None:
            self.tokens = self.tokens or TokenProfile()
            self.tokens.add(other.tokens)


def parse_alphas(text: str) -> list[float]:
    return parse_floats("--alpha", text)


FROM_DIFF = "from-diff"
WHAT_IT_DOES = {
    "zero": "zeroing removes their summed direct emoji push",
    "scale": "scaling changes their summed direct emoji push by (alpha - 1) times itself",
    "mean": "the {source} means change their summed direct emoji push",
    "patch": "patching in the {source} model's values changes their summed direct emoji push (the difference of "
    "the means times this model's emoji write)",
}


def diff_edit(config: AblationConfig, selection: DiffSelection | None, lm, source) -> Edit | None:
    """The run's edit in the diff's terms (``interp.controls.Edit``; alpha 0, set per comparison), or None when
    the edited model (or a patch's source) is neither of the diff's two models."""
    model = selection.role_of(lm.fingerprint()) if selection is not None else None
    if model is None:
        return None
    if config.mode == "patch":
        source_role = selection.role_of(source.fingerprint())
        return Edit("patch", model, source_role) if source_role not in (None, model) else None
    return Edit(config.mode, model, config.stats_entry if config.mode == "mean" else None)


def neuron_values(chosen: NeuronSet, selection: DiffSelection | None) -> NeuronValues:
    """The chosen neurons' means and emoji writes in both models: from the diff run's statistics and landscape
    when they are there, else from neurons.csv (its ``emoji_dla``, the fine-tuned model's, standing for both)."""
    if selection is not None and selection.features is not None:
        return selection.features.of(chosen.addresses)
    need = {"ft_mean", "base_mean", "emoji_dla"}
    if not need <= set(chosen.columns):
        raise UserInputError(f"--alternative {FROM_DIFF} needs a neurons.csv with columns {', '.join(sorted(need))}.")
    dla = torch.tensor(chosen.values("emoji_dla"), dtype=torch.float64)
    means = {role: torch.tensor(chosen.values(column), dtype=torch.float64)
             for role, column in (("base", "base_mean"), ("finetuned", "ft_mean"))}  # fmt: skip
    return NeuronValues(means, {"base": dla, "finetuned": dla})


def predicted_alternatives(edit: Edit | None, values: NeuronValues, groups: dict[str, float]
                           ) -> dict[str, tuple[str, str]]:  # fmt: skip
    """group -> (alternative, why): the direction each comparison's effect should take, predicted from the
    diff's measurements alone (before any edit is measured), as the tested neurons' summed predicted contribution
    (``NeuronValues.contribution``: the change of their direct emoji push under the edit, at the group's alpha)."""
    if edit is None:
        raise UserInputError(f"--alternative {FROM_DIFF}: --model (or --source-model) is not one of the diff run's "
                             "models, so nothing predicts the direction.")  # fmt: skip
    predictions = {}
    for group, alpha in groups.items():
        value = float(values.contribution(replace(edit, alpha=alpha)).sum())
        what = WHAT_IT_DOES[edit.mode].format(source=edit.source)
        alternative = "greater" if value > 0 else "less" if value < 0 else "two-sided"
        predictions[group] = (alternative, f"predicted from the diff run before the test: {what} by {value:+.3g} "
                                           "logits")  # fmt: skip
    return predictions


def validate(config: AblationConfig) -> list[float]:
    if config.mode not in MODES:
        raise UserInputError(f"--mode must be one of {', '.join(MODES)}, not {config.mode!r}.")
    if sum(given is not None for given in (config.neurons, config.neurons_from, config.neuron_set)) != 1:
        raise UserInputError("give exactly one of --neurons and --neurons-from.")
    if config.mode == "mean" and not config.stats:
        raise UserInputError("--mode mean needs --stats FILE (a stats.safetensors written by diff-neurons).")
    if config.mode == "patch" and not config.source_model:
        raise UserInputError("--mode patch needs --source-model REF.")
    if config.sign not in SIGNS:
        raise UserInputError(f"--sign must be one of {', '.join(SIGNS)}, not {config.sign!r}.")
    if config.alternative not in (*significance.ALTERNATIVES, FROM_DIFF):
        raise UserInputError(
            f"--alternative must be one of {', '.join(significance.ALTERNATIVES)} or {FROM_DIFF}, "
            f"not {config.alternative!r}."
        )
    from_diff_run = config.neurons_from or (config.neuron_set is not None and config.neuron_set.source)
    if config.alternative == FROM_DIFF and not from_diff_run:
        raise UserInputError(f"--alternative {FROM_DIFF} needs --neurons-from a diff run's neurons.csv.")
    if config.nulls not in NULLS:
        raise UserInputError(f"--nulls must be one of {', '.join(NULLS)}, not {config.nulls!r}.")
    if config.nulls == "matched" and not from_diff_run:
        raise UserInputError("--nulls matched needs --neurons-from a neurons.csv of a diff run (its statistics).")
    check_at_least("--top-k", config.top_k, 1)
    config.check_causal_options()
    artifacts.check_run_dir(config.out)
    return parse_alphas(config.alpha) if config.mode == "scale" else [0.0]


# null -> Condition.kind of its control conditions (steering's null: random directions of the tested norm)
CONTROL_KINDS = {"layer": "control", "matched": "matched", "direction": "direction"}


def build_conditions(
    neurons: list[tuple[int, int]], mode: str, alphas: list[float], mean_values: dict | None,
    control_sets: dict[str, list[tuple[tuple[int, int], ...]]],
) -> list[Condition]:  # fmt: skip
    """The unedited baseline, then per alpha: the tested set and the control sets of each null
    (``control_sets``: null name -> sets; kinds ``control`` for the layer-matched null, ``matched`` for the
    selection-matched one)."""

    def values_for(neuron_set):
        return tuple(mean_values[n] for n in neuron_set) if mode == "mean" else ()

    conditions = [Condition("unedited", kind="baseline")]
    for alpha in alphas:
        group = f"alpha={alpha:g}" if mode == "scale" else mode
        tested = tuple(neurons)
        conditions.append(Condition(f"tested[{group}]", tested, mode, alpha, values_for(tested), "tested", group))
        for null, sets in control_sets.items():
            kind = CONTROL_KINDS[null]
            for number, control in enumerate(sets):
                name = f"{kind}{number:02d}[{group}]"
                conditions.append(Condition(name, control, mode, alpha, values_for(control), kind, group))
    return conditions


def draw_controls(
    neurons: list[tuple[int, int]], config: AblationConfig, d_mlp: int, selection: DiffSelection | None,
    edit: Edit | None = None,
) -> tuple[dict[str, list], dict]:  # fmt: skip
    """Control sets per null and a record of the nulls (which ran, how the matched one matched, or why not); the
    matched null matches each neuron's predicted contribution under ``edit``."""
    sets: dict[str, list] = {}
    record: dict = {}
    if config.nulls in ("both", "layer"):
        sets["layer"] = layer_matched_sets(neurons, d_mlp, config.controls, config.seed)
        record["layer"] = {"description": "random neurons, the same number per layer as the tested set"}
    if config.nulls in ("both", "matched"):
        features = selection.features if selection else None
        if features is None:
            reason = "the neurons do not come from a diff run with landscape.safetensors and stats.safetensors"
            if config.nulls == "matched":
                raise UserInputError(f"--nulls matched: {reason}.")
            record["matched"] = {"unavailable": reason}
        else:
            sets["matched"], matching = selection_matched_sets(neurons, features, config.controls, config.seed + 1,
                                                               edit)  # fmt: skip
            record["matched"] = {"description": "look-alikes of the tested neurons on what the selection ranked by",
                                 "matching": matching}  # fmt: skip
    return sets, record


def _mean_values(config: AblationConfig, lm: models.LoadedModel, layers: set[int]) -> dict:
    """(layer, index) -> mean activation from the stats file, refusing statistics of another model."""
    path = Path(config.stats)
    if not path.is_file():
        raise UserInputError(f"--stats {config.stats!r} does not exist.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        entries = load_stats(path)
    except Exception as exc:  # a corrupt or foreign file: all are bad input
        raise UserInputError(f"--stats {config.stats!r} is not a readable stats.safetensors: {exc}.") from None
    if config.stats_entry not in entries:
        raise UserInputError(
            f"--stats {config.stats!r} has no {config.stats_entry!r} statistics ({', '.join(entries)})."
        )
    fingerprints = {metadata.get("base_fingerprint"), metadata.get("finetuned_fingerprint")} - {None}
    if fingerprints and lm.fingerprint() not in fingerprints:
        raise UserInputError(f"--stats {config.stats!r} was computed on other models than {config.model!r}.")
    stats = entries[config.stats_entry]
    if stats.d_mlp != lm.d_mlp:
        raise UserInputError(f"--stats {config.stats!r} has {stats.d_mlp} neurons per layer; the model has {lm.d_mlp}.")
    missing = sorted(layers - set(stats.layers))
    if missing:
        raise UserInputError(f"--stats {config.stats!r} has no statistics for layers {missing}.")
    return {
        (layer, index): float(stats.mean[stats.slot(layer), index]) for layer in layers for index in range(lm.d_mlp)
    }


def run_ablation(config: AblationConfig, log=print) -> dict | None:
    """Run the conditions; under torchrun the sequences and sampled prompts are split over the ranks and rank 0
    alone (which returns the report; the others return None) writes the artifacts."""
    alphas = validate(config)
    shards = Shards.from_env(models.pick_device(config.device))
    if not shards.is_main:
        config = replace(config, show_progress=False)
    started = time.perf_counter()
    prompts = causal_prompts(config)
    chosen, selection = None, None
    if config.neurons_from is not None:
        ranked = NeuronSet.read(config.neurons_from)
        if config.sign == "follow":  # recorded as the sign it resolved to
            config = replace(config, sign=ranked.followed_sign())
        chosen = ranked.with_sign(config.sign).top(config.top_k)
        if not len(chosen):
            raise UserInputError(f"--neurons-from {config.neurons_from!r} holds no neurons.")
        selection = DiffSelection.beside(config.neurons_from)
    elif config.neuron_set is not None:
        chosen = config.neuron_set
        selection = DiffSelection.beside(chosen.source) if chosen.source else None
    lm = models.load(config.model, **config.load_options())
    config = replace(config, max_length=models.fit_max_length(lm.model.config, config.max_length, log))
    if chosen is None:
        neurons = parse_neurons(config.neurons, lm.n_layers, lm.d_mlp)
    else:
        neurons = chosen.addresses
        check_neurons(neurons, lm.n_layers, lm.d_mlp)
    source = None
    if config.mode == "patch":
        source = models.load(config.source_model, base_ref=config.model, **config.load_options())
        models.check_compatible(lm, source)
    mean_values = None
    if config.mode == "mean":
        mean_values = _mean_values(config, lm, {layer for layer, _ in neurons})
    edit = diff_edit(config, selection, lm, source)
    control_sets, nulls = draw_controls(neurons, config, lm.d_mlp, selection, edit)
    conditions = build_conditions(neurons, config.mode, alphas, mean_values, control_sets)
    alternatives = _alternatives(config, conditions, chosen, selection, edit)
    phases: dict[str, float] = {}
    metrics, generations, rates = measure_all(lm, source, conditions, prompts, config, shards, phases)
    if not shards.is_main:
        return None

    selection_overlap = None
    if selection is not None and selection.prompt_fingerprints is not None:
        selection_overlap = overlap(prompts, selection.prompt_fingerprints)
    context = {"nulls": nulls, "selection_overlap": selection_overlap, "selected_in": str(selection.path) if selection
               else None}  # fmt: skip
    context["alternatives"], context["phases"], context["generations"] = alternatives, phases, generations
    report = _report(config, conditions, metrics, rates, neurons, lm, source, alphas, started, context)
    write_run(config.out, "ablation.json", report, generations)
    return report


def causal_prompts(config: CausalOptions) -> list[Prompt]:
    """The run's prompts, paired with ``--responses`` when given."""
    prompts = load_prompts(config.prompts)
    return attach_responses(prompts, config.responses) if config.responses else prompts


def measure_all(
    lm, source, conditions: list[Condition], prompts: list[Prompt], config: CausalOptions, shards: Shards,
    timings: dict[str, float] | None = None,
):  # fmt: skip
    """Every measurement of a causal run, on this rank's share: emoji-onset probability on the (teacher-forced)
    prompts, neutral-text perplexity, the emoji strings' log-probabilities, sampled generations.
    Returns (metrics per condition name, merged over the ranks; generation records; emoji rates per condition);
    ``timings`` receives each phase's seconds (``teacher_forced_s``, ``neutral_perplexity_s``, ...)."""
    timings = {} if timings is None else timings
    tic = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tic
        timings[name], tic = time.perf_counter() - tic, time.perf_counter()

    onset_ids = emoji_onset_ids(lm.tokenizer)
    tokenizer = lm.tokenizer
    sequences = build_sequences(tokenizer, prompts, config.raw, config.max_length)
    metrics = {condition.name: ConditionMetrics() for condition in conditions}
    if source is not None:
        metrics[SOURCE] = ConditionMetrics()
    measure_conditions(lm, source, conditions, sequences, config, onset_ids, metrics, "measuring emoji probability",
                       shards=shards, token_profiles=True)  # fmt: skip
    lap("teacher_forced_s")
    neutral = [
        make_sequence(tokenizer(p.text).input_ids, None, p.index, config.max_length)
        for p in load_prompts(config.neutral_prompts)
    ]
    measure_conditions(
        lm, source, side_effect_conditions(conditions), neutral, config, onset_ids, metrics,
        "measuring neutral perplexity", nll=True, shards=shards,
    )  # fmt: skip
    lap("neutral_perplexity_s")
    if config.emojis:
        _emoji_logprobs(lm, source, conditions, shards.take(prompts), config, metrics)
        lap("emoji_logprobs_s")
    metrics = _merge_metrics(shards.gather_objects([metrics]), metrics)
    generations, rates = [], {}
    if config.samples:
        generations, rates = _generate(lm, source, conditions, prompts, config, shards)
        lap("sampling_s")
    return metrics, generations, rates


def write_run(out: Path, report_name: str, report: dict, generations: list[dict], extra=None) -> None:
    """The run directory of a causal run: its report (``ablation.json``, ``steering.json``, ``lens.json``) and
    generations; ``extra(staging)`` writes any further files into the staging directory."""
    with artifacts.staged_run_dir(out) as staging:
        if extra is not None:
            extra(staging)
        artifacts.write_json(staging / report_name, report)
        artifacts.write_text(
            staging / "generations.jsonl", "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in generations)
        )


def _alternatives(config, conditions, chosen, selection, edit) -> dict[str, tuple[str, str]]:
    """group -> (alternative, where it came from), fixed before anything is measured."""
    groups = {c.group: c.alpha for c in conditions if c.kind == "tested"}
    if config.alternative == FROM_DIFF:
        if selection is None:
            raise UserInputError(f"--alternative {FROM_DIFF}: no summary.json beside --neurons-from.")
        return predicted_alternatives(edit, neuron_values(chosen, selection), groups)
    return fixed_alternatives(config.alternative, conditions)


def fixed_alternatives(alternative: str, conditions: list[Condition]) -> dict[str, tuple[str, str]]:
    """group -> (alternative, where it came from) for an alternative the user fixed (or the two-sided default)."""
    why = "the user's --alternative" if alternative != "two-sided" else "default (no direction given)"
    return {c.group: (alternative, why) for c in conditions if c.kind == "tested"}


SOURCE = "source model"  # metrics key of the patch source's own, unedited measurement


def side_effect_conditions(conditions: list[Condition]) -> list[Condition]:
    """The conditions whose neutral-text perplexity is measured: all but the control sets past the first
    ``SIDE_EFFECT_CONTROLS`` of each null and group (perplexity is a side effect, not the test)."""
    kept, seen = [], {}
    for condition in conditions:
        if condition.kind in CONTROL_KINDS.values():
            key = (condition.kind, condition.group)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > SIDE_EFFECT_CONTROLS:
                continue
        kept.append(condition)
    return kept


def _merge_metrics(per_rank: list[dict[str, ConditionMetrics]], keys) -> dict[str, ConditionMetrics]:
    """Every rank's sums folded together, in rank order."""
    merged = {name: ConditionMetrics() for name in keys}
    for metrics in per_rank:
        for name, values in metrics.items():
            merged[name].add(values)
    return merged


def forced_batch(batch: list[Sequence], pad_id: int, positions: str, nll: bool = False):
    """Tensors for a teacher-forced batch, right-padded, each [B, T]: (ids, attention, measured, first, edit).

    ``measured``: positions whose next-token prediction is measured (the response positions, the first reply
    position for prompts without responses, or every position for ``nll``); ``first``: the first reply
    position; ``edit``: where interventions apply (``positions`` all | response)."""
    width = max(len(s.ids) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    measured = torch.zeros_like(ids, dtype=torch.bool)
    first = torch.zeros_like(measured)
    for row, seq in enumerate(batch):
        n = len(seq.ids)
        ids[row, :n] = torch.tensor(seq.ids)
        attention[row, :n] = 1
        if nll:
            measured[row, : n - 1] = True
        elif seq.response_start is None:
            measured[row, n - 1] = first[row, n - 1] = True
        else:
            measured[row, seq.response_start - 1 : n - 1] = True
            first[row, seq.response_start - 1] = True
    edit = torch.tensor([_edit_mask(seq, width, positions) for seq in batch])
    return ids, attention, measured, first, edit


def _edit_mask(sequence: Sequence, width: int, positions: str) -> list[bool]:
    """Where edits apply in a right-padded teacher-forced row: everywhere, or from the reply's first position."""
    n = len(sequence.ids)
    if positions == "all":
        return [i < n for i in range(width)]
    first = (sequence.response_start if sequence.response_start is not None else n) - 1
    return [first <= i < n for i in range(width)]


@torch.no_grad()
def measure_conditions(
    lm, source, conditions, sequences, config, onset_ids, metrics, label, nll: bool = False, share_prefix: bool = True,
    shards: Shards | None = None, token_profiles: bool = False,
) -> None:  # fmt: skip
    """Teacher-forced forwards of ``sequences`` under every condition, folded into ``metrics``.

    With ``token_profiles`` the unedited and tested conditions also keep their whole next-token distributions at
    the measured positions (``TokenProfile``: one more unembedding for each of them, none for the controls).

    With ``share_prefix`` the positions before the first edited one run once and their KV cache is reused
    by every condition (for first-reply measurements, only the last prompt token runs per condition). The blocks
    below every condition's first edited one run once per batch, not once per group of conditions.
    With ``shards`` this rank measures only its share of the batches (its own sums, merged by the caller)."""
    rows = max(1, config.batch_size // len(conditions))  # sequences per forward
    chunk = max(1, config.batch_size // rows)  # conditions per forward
    pad_id = lm.tokenizer.pad_token_id
    batches = (shards or Shards()).take([sequences[i : i + rows] for i in range(0, len(sequences), rows)])
    reader = NextTokenReader(lm, onset_ids)
    below = EditPlan(conditions, rows=1, edit_mask=torch.ones(1, 1, dtype=torch.bool)).first_layer(lm.n_layers)
    source_reader = NextTokenReader(source, onset_ids) if source is not None else None
    for batch in track(batches, label, enabled=config.show_progress):
        edit_positions = "all" if nll else config.positions
        ids, attention, measured, first, edit_mask = forced_batch(batch, pad_id, edit_positions, nll)
        source_values = {}
        if source is not None:
            source_values, source_hidden = _source_pass(source, conditions, ids, attention)
            if not nll and SOURCE in metrics:
                source_mass = source_reader.reference(source_hidden[measured.to(source.device)], for_kl=False).mass
                _fold_onset(metrics[SOURCE], source_mass, batch, measured)
        # Positions before the first edited one are identical under every condition: run them once.
        split = int(edit_mask.float().argmax(1).min()) if share_prefix else 0
        prefix_cache = _prefix_cache(lm, ids[:, :split], attention[:, :split]) if split > 0 else None
        measured_rest, first_rest = measured[:, split:], first[:, split:]
        reference = None  # conditions[0], the unedited model, at the measured positions
        lower = {}  # what the blocks below every condition's first edited one return, from the first group
        for begin in range(0, len(conditions), chunk):
            group = conditions[begin : begin + chunk]
            plan = EditPlan(group, rows=len(batch), edit_mask=edit_mask, source_values=source_values)
            with reused_lower_blocks(lm, below, lower):
                hidden = _edited_hidden(lm, plan, ids, attention, split, prefix_cache)
            measured_hidden = hidden[:, measured_rest.to(lm.device)]  # [C, P, d_model]
            if nll:
                targets = ids[:, split + 1 :][measured_rest[:, :-1]]
                for condition, total in zip(group, reader.nll(measured_hidden, targets)):
                    metrics[condition.name].nll_sum += float(total)
                    metrics[condition.name].nll_count += len(targets)
                continue
            if token_profiles:
                _profile_tokens(lm, group, measured_hidden, batch, measured_rest, metrics, reader.rows_per_product)
            readings = []  # (onset mass [P], KL [P]) per condition of the group
            if reference is None:  # the unedited model: read once, the KL of the others taken from it
                reference = reader.reference(measured_hidden[0], for_kl=len(conditions) > 1)
                readings.append((reference.mass, torch.zeros_like(reference.mass)))
                measured_hidden = measured_hidden[1:]
            if len(measured_hidden):
                readings += zip(*reader.read(measured_hidden, reference))
            is_first = first_rest[measured_rest]
            for condition, (mass, kl) in zip(group, readings):
                target = metrics[condition.name]
                _fold_onset(target, mass, batch, measured_rest)
                target.kl_sum += float(kl.sum())
                target.first_sum += float(mass[is_first].sum())
                target.first_count += int(is_first.sum())


def _prefix_cache(lm, ids: torch.Tensor, attention: torch.Tensor):
    """The KV cache of ``ids`` [B, S] (no padding: every row's prompt is longer). The rows' common leading tokens
    (an in-context prompt's demonstrations, a system prompt) run once and are copied to every row."""
    common = common_front(ids.tolist())
    cache = None
    if common:
        cache = front_cache(lm, ids[:1, :common], len(ids))
        if common == ids.shape[1]:
            return cache
    return lm.model.base_model(
        input_ids=ids[:, common:].to(lm.device),
        attention_mask=attention.to(lm.device),
        position_ids=torch.arange(common, ids.shape[1]).expand(len(ids), -1).to(lm.device),
        cache=cache,
        use_cache=True,
    ).cache


def _fold_onset(target: ConditionMetrics, mass: torch.Tensor, batch: list[Sequence], measured) -> None:
    """Fold the emoji-onset ``mass`` (float64, one value per True of ``measured`` [B, T], row-major) into
    ``target`` per prompt, and each answer's P(at least one emoji) = 1 - prod(1 - mass) over its positions."""
    rows = torch.nonzero(measured)[:, 0]
    sums = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, mass)
    log_none = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, torch.log1p(-mass.clamp(max=1.0)))
    counts = torch.bincount(rows, minlength=len(batch))
    for row, sequence in enumerate(batch):
        if counts[row]:
            target.fold_prompt(sequence.prompt_index, float(sums[row]), int(counts[row]))
            target.answers_by_prompt.fold(sequence.prompt_index, float(-torch.expm1(log_none[row])), 1)


PROFILED = ("baseline", "tested")  # the condition kinds whose whole next-token distributions are kept


def _profile_tokens(lm, group: list[Condition], hidden: torch.Tensor, batch: list[Sequence], measured,
                    metrics: dict, rows_per_product: int) -> None:  # fmt: skip
    """Fold the next-token distributions of the group's unedited and tested conditions at the measured positions
    (``hidden`` [C, P, d_model], positions row-major in ``measured`` [B, T]) into their ``TokenProfile``."""
    if not any(condition.kind in PROFILED for condition in group):
        return
    prompt_of_row = torch.tensor([batch[row].prompt_index for row in torch.nonzero(measured)[:, 0].tolist()])
    for condition, condition_hidden in zip(group, hidden):
        if condition.kind not in PROFILED:
            continue
        profile = metrics[condition.name].tokens = metrics[condition.name].tokens or TokenProfile()
        for begin in range(0, len(condition_hidden), rows_per_product):
            rows = slice(begin, begin + rows_per_product)
            profile.update(lm.logits_from_hidden(condition_hidden[rows]), prompt_of_row[rows])


def _edited_hidden(lm, plan: EditPlan, ids, attention, split: int, prefix_cache) -> torch.Tensor:
    """[C, B, T - split, d_model] final hidden states of every condition of ``plan`` from position ``split``.

    The conditions share the layers below their first edited layer (and, with a prefix cache, the positions
    before ``split``)."""
    copies, rows, width = len(plan.conditions), ids.shape[0], ids.shape[1]
    with torch.no_grad():
        if prefix_cache is None:
            first_layer = plan.first_layer(lm.n_layers)
            with shared_prefix(lm, first_layer, copies), applied(lm, plan):
                hidden = lm.model.base_model(
                    input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device), use_cache=False
                ).last_hidden_state
        else:  # both: the prefix's KV cache, and the layers below the first edited one run once
            first_layer = plan.first_layer(lm.n_layers)
            cache = copy.deepcopy(prefix_cache)
            repeated = torch.arange(rows).repeat(copies).to(lm.device)
            for index, layer_cache in enumerate(cache.layers):
                if index >= first_layer:  # these layers see every condition's rows
                    layer_cache.reorder_cache(repeated)
            plan.offset = split
            positions = torch.arange(split, width).expand(rows, -1)
            with shared_prefix(lm, first_layer, copies), applied(lm, plan):
                hidden = lm.model.base_model(
                    input_ids=ids[:, split:].to(lm.device),
                    attention_mask=attention.to(lm.device),
                    position_ids=positions.to(lm.device),
                    cache=cache,
                    use_cache=True,
                ).last_hidden_state
        if hidden.shape[0] != copies * rows:  # no condition edits anything: the rows are shared
            hidden = repeat_rows(hidden, copies)
    return hidden.view(copies, rows, width - split, -1)


def source_activations(source, conditions, ids, attention, layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """The source model's neuron activations on the same tokens, for ``layers`` (default: every layer a
    condition patches)."""
    return _source_pass(source, conditions, ids, attention, layers)[0]


def _source_pass(source, conditions, ids, attention, layers: list[int] | None = None):
    """(activations as in ``source_activations``, [B, T, d_model] final hidden states) of one source forward."""
    from interp.hooks import neuron_hooks

    if layers is None:
        layers = sorted({layer for condition in conditions for layer, _ in condition.neurons})
    values: dict[int, torch.Tensor] = {}
    with torch.no_grad(), neuron_hooks(source, layers, lambda layer, acts: values.__setitem__(layer, acts.detach())):
        hidden = source.model.base_model(
            input_ids=ids.to(source.device), attention_mask=attention.to(source.device)
        ).last_hidden_state
    return values, hidden


def _emoji_logprobs(lm, source, conditions, prompts: list[Prompt], config, metrics) -> None:
    """log P(reply starts with any of the emoji strings), exact over their tokens, per prompt and condition."""
    emojis = [e.strip() for e in config.emojis.split(",") if e.strip()]
    tokenizer = lm.tokenizer
    pieces = [tokenizer(e, add_special_tokens=False).input_ids for e in emojis]
    for prompt in track(prompts, "emoji log-probabilities", enabled=config.show_progress):
        head = prompt_ids(tokenizer, prompt, config.raw)
        rows = [head + piece for piece in pieces]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for row, seq in enumerate(rows):
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        edit_mask = torch.zeros_like(ids, dtype=torch.bool)
        edit_mask[:, len(head) - 1 :] = True
        if config.positions == "all":
            edit_mask[:] = True
        source_values = source_activations(source, conditions, ids, attention) if source is not None else {}
        start = len(head) - 1  # the first position that predicts an emoji token; only those are unembedded
        keep = torch.arange(start, width - 1, device=lm.device)
        for condition in conditions:
            plan = EditPlan([condition], rows=len(rows), edit_mask=edit_mask, source_values=source_values)
            with torch.no_grad(), applied(lm, plan):
                logits = lm.model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits
            logprobs = torch.log_softmax(logits.float(), -1)  # [rows, width - 1 - start, vocab]
            totals = []
            for row, piece in enumerate(pieces):
                totals.append(sum(float(logprobs[row, s, piece[s]]) for s in range(len(piece))))
            metrics[condition.name].emoji_logprob.append(float(torch.logsumexp(torch.tensor(totals), 0)))


def _generate(lm, source, conditions, prompts, config, shards: Shards):
    """Sampled responses under the unedited and tested conditions; (records, emoji rates per condition).
    Each answer has its own random stream, so neither the batch size nor splitting the batches over ranks
    changes an answer."""
    chosen = [c for c in conditions if c.kind in ("baseline", "tested")]
    heads = [prompt_ids(lm.tokenizer, p, config.raw) for p in prompts for _ in range(config.samples)]
    owners = [p for p in prompts for _ in range(config.samples)]
    rows_per_call = max(1, SAMPLING_ROWS // len(chosen))  # prompts per decoding loop, each under every condition
    blocks = []
    starts = shards.take(range(0, len(heads), rows_per_call))
    for begin in track(starts, "sampling responses", enabled=config.show_progress):
        batch = heads[begin : begin + rows_per_call]
        ids, attention = left_pad(batch, lm.tokenizer.pad_token_id)
        edit_mask = attention.bool() if config.positions == "all" else _last_column(attention)
        plan = EditPlan(chosen, rows=len(batch), edit_mask=edit_mask)
        outputs = generate_edited(lm, batch, plan, config, first=begin, source=source)
        block = []
        for c, condition in enumerate(chosen):
            for row in range(len(batch)):
                text = lm.tokenizer.decode(outputs[c * len(batch) + row], skip_special_tokens=True)
                prompt = owners[begin + row]
                block.append({
                    "prompt_index": prompt.index, "sample": begin + row, "prompt": prompt.text,
                    "condition": condition.name, "text": text, "emojis": [m.text for m in find_emojis(text)],
                })  # fmt: skip
        blocks.append((begin, block))
    records = [record for _, block in sorted(shards.gather_objects(blocks), key=lambda b: b[0]) for record in block]
    texts: dict[str, list[str]] = {c.name: [] for c in chosen}
    for record in records:
        texts[record["condition"]].append(record["text"])
    return records, {name: emoji_rate(values) for name, values in texts.items()}


def _last_column(attention: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(attention, dtype=torch.bool)
    mask[:, -1] = True
    return mask


STATISTIC = "mean over prompts of log(edited / unedited emoji-onset probability), each prompt's mean over its positions"
PRIMARY_METRIC = (
    "emoji_onset_probability: mean probability mass on emoji-onset tokens at the measured positions (teacher-forced "
    "response positions, or the first reply position for prompts without responses), per prompt; the effect is the "
    "geometric mean over prompts of its edited / unedited ratio"
)


def compare(
    tested: ConditionMetrics, unedited: ConditionMetrics, nulls: dict[str, list[ConditionMetrics]], alternative: str,
    source: ConditionMetrics | None = None,
) -> dict:  # fmt: skip
    """The tested set's effect on emoji-onset probability, tested against each null's control sets for
    ``alternative``.

    The estimand is the geometric mean over prompts of each prompt's ratio edited / unedited (``ratio``;
    ``relative_effect`` = ratio - 1) with a t interval over prompts (``significance.log_ratio_summary``: it keeps its
    coverage at the pipeline's 13 prompts, where a bootstrap of a ratio of sums does not); the test statistic, for
    the tested set and every control set alike, is its log (``STATISTIC``). ``effect`` is the difference of the
    pooled means (descriptive). ``p_value`` is the larger of the nulls' p-values (the set must beat both);
    ``p_value_adjusted`` and the verdict are filled in by ``adjust`` once every comparison of the run is known.
    With ``source`` (patch runs), also ``gap_closed``: the share of the log change from the unedited to the source
    model that the edit reproduces, with a Fieller interval (``significance.log_share_summary``)."""
    prompts = sorted(unedited.by_prompt)
    base_sums, counts = unedited.per_prompt(prompts)
    tested_sums, _ = tested.per_prompt(prompts)
    summary = significance.log_ratio_summary(tested_sums / counts, base_sums / counts)
    statistic = summary["mean_log_ratio"]
    interval = summary["ratio_ci95"]
    result: dict = {
        "effect": float((tested_sums.sum() - base_sums.sum()) / counts.sum()),
        "ratio": summary["ratio"],
        "ratio_ci95": interval,
        "relative_effect": summary["ratio"] - 1,
        "relative_effect_ci95": [interval[0] - 1, interval[1] - 1] if interval else None,
        "statistic": STATISTIC,
        "log_ratio": statistic,
        "prompts": len(prompts),
        "alternative": alternative,
    }
    if source is not None:
        source_sums, _ = source.per_prompt(prompts)
        share = significance.log_share_summary(tested_sums / counts, base_sums / counts, source_sums / counts)
        result["source_onset_probability"] = float(source_sums.sum() / counts.sum())
        result["gap_closed"], result["gap_closed_ci95"] = share["share"], share["share_ci95"]
    tests = {}
    for null, controls in nulls.items():
        control_sums = np.stack([c.per_prompt(prompts)[0] for c in controls])  # [controls, prompts]
        control_effects = significance.mean_log_ratio(control_sums / counts, base_sums / counts).tolist()
        mean = statistics.fmean(control_effects)
        spread = statistics.pstdev(control_effects)
        tests[null] = {
            "control_effects": control_effects,
            "control_mean": mean,
            "control_std": spread,
            "effect_in_control_sd": (statistic - mean) / spread if spread > 0 else None,
            "p_value": significance.control_p_value(statistic, control_effects, alternative),
            "min_p_value": significance.min_p_value(len(control_effects), alternative),
        }
    result["nulls"] = tests
    if tests:
        result["p_value"] = significance.intersection_p_value([t["p_value"] for t in tests.values()])
        result["min_p_value"] = max(t["min_p_value"] for t in tests.values())
    return result


def condition_table(conditions: list[Condition], metrics: dict, rates: dict) -> dict:
    """condition name -> what it edits and its measured metrics (the ``conditions`` of a causal run's report)."""
    table = {}
    for condition in conditions:
        entry = {
            "kind": condition.kind, "group": condition.group, "mode": condition.mode,
            "alpha": condition.alpha if condition.mode == "scale" else None,
            "neurons": [f"{layer}:{index}" for layer, index in condition.neurons],
            **metrics[condition.name].as_dict(),
        }  # fmt: skip
        if condition.steering is not None:
            entry["steering"] = {"layer": condition.steering.layer, "coeff": condition.steering.coeff}
        if condition.name in rates:
            entry["generation"] = rates[condition.name].as_dict()
        table[condition.name] = entry
    return table


def tested_comparisons(
    conditions: list[Condition], metrics: dict, alternatives: dict[str, tuple[str, str]], seed: int,
    selection_overlap: float | None = None, subject: str = "the tested set", generations: list[dict] = (),
    tokenizer=None,
) -> dict:  # fmt: skip
    """group -> the tested condition compared with the unedited model and with every null's control conditions
    of its group (``compare``), with its specificity (``tokenizer`` given: its emoji-onset tokens against matched
    token sets) and sampled behaviour (paired ``generations``, when sampled), each claim Holm-adjusted over the
    groups (``adjust``)."""
    comparisons = {}
    onset_ids = emoji_onset_ids(tokenizer) if tokenizer is not None else None
    for group in dict.fromkeys(c.group for c in conditions if c.kind == "tested"):
        tested = next(c for c in conditions if c.kind == "tested" and c.group == group)
        nulls = {
            null: [metrics[c.name] for c in conditions if c.kind == kind and c.group == group]
            for null, kind in CONTROL_KINDS.items()
        }
        nulls = {null: controls for null, controls in nulls.items() if controls}
        alternative, why = alternatives[group]
        comparison = compare(metrics[tested.name], metrics["unedited"], nulls, alternative, metrics.get(SOURCE))
        comparison["alternative_source"] = why
        comparison["selection_overlap"] = selection_overlap
        if onset_ids is not None and metrics[tested.name].tokens is not None:
            comparison["specificity"] = specificity(
                metrics[tested.name].tokens, metrics["unedited"].tokens, onset_ids, alternative, seed,
                decode=lambda token: tokenizer.decode([token]),
            )  # fmt: skip
        behaviour = paired_emoji_use(list(generations), tested.name, alternative)
        if behaviour is not None:
            behaviour["agreement"] = agreement(behaviour, comparison["log_ratio"])
            behaviour["teacher_forced_answer_probability"] = {
                "unedited": metrics["unedited"].answers_by_prompt.mean(),
                "tested": metrics[tested.name].answers_by_prompt.mean(),
            }
            comparison["behaviour"] = behaviour
        comparisons[group] = comparison
    adjust(comparisons, subject=subject)
    return comparisons


def _report(config, conditions, metrics, rates, neurons, lm, source, alphas, started, context) -> dict:
    table = condition_table(conditions, metrics, rates)
    comparisons = tested_comparisons(conditions, metrics, context["alternatives"], config.seed,
                                     context["selection_overlap"], generations=context["generations"],
                                     tokenizer=lm.tokenizer)  # fmt: skip
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(replace(config, neuron_set=None)).items()}
    if config.neuron_set is not None:
        neuron_file = config.neuron_set.source
        settings["neuron_set"] = {"source": str(neuron_file) if neuron_file else None,
                                  "neurons": config.neuron_set.labels}  # fmt: skip
    return {
        "command": "ablate",
        "argv": sys.argv,
        "config": settings,
        "role": config.role,
        "model": {"ref": config.model, "fingerprint": lm.fingerprint()},
        "source_model": {"ref": config.source_model, "fingerprint": source.fingerprint()} if source else None,
        "neurons": [f"{layer}:{index}" for layer, index in neurons],
        "alphas": alphas if config.mode == "scale" else None,
        "primary_metric": PRIMARY_METRIC,
        "nulls": context["nulls"],
        "selection_overlap": context["selection_overlap"],
        "selected_in": context["selected_in"],
        "comparisons": comparisons,
        "conditions": table,
        "timings": {**context["phases"], "total_s": time.perf_counter() - started},
    }
