"""``interp ablate``: do the chosen neurons cause the emoji behaviour? Edits with matched random controls.

For every condition (the unedited model, the tested neuron set at each ``alpha``, and ``controls`` random
neuron sets with the same number of neurons per layer) it measures, in batched forwards:
- the emoji-onset probability at the measured positions of teacher-forced responses (or, for prompts
  without responses, at the first reply position), and at the first reply position alone;
- optionally the exact log-probability of a list of emoji strings as the reply's start;
- side effects: KL(unedited || edited) at the measured positions and perplexity on neutral text;
- optionally the emoji rate of sampled generations (unedited and tested conditions), Wilson 95 % intervals.
The tested set's effect is compared with the control distribution: empirical p-value (one-sided, in the
direction of the tested effect, (1 + #controls at least as extreme) / (1 + N)) and the effect in control
standard deviations; "not significant" when p >= 0.05.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from interp import artifacts, models
from interp.distributed import Shards
from interp.errors import UserInputError
from interp.generation import SamplingConfig, generate_edited, left_pad
from interp.interventions import (
    MODES,
    Condition,
    EditPlan,
    applied,
    random_matched_sets,
    repeat_rows,
    shared_prefix,
)
from interp.layers import parse_neurons
from interp.progress import track
from interp.prompts import Prompt, attach_responses, load_prompts
from interp.run_options import RunOptions
from interp.stats import load_stats
from interp.tokens import Sequence, build_sequences, make_sequence, prompt_ids
from probes.emoji import find_emojis
from probes.emoji_tokens import emoji_onset_ids
from probes.metrics import emoji_rate, kl_divergence, onset_mass

SIGNIFICANCE = 0.05


@dataclass(kw_only=True)
class AblationConfig(RunOptions):
    model: str
    prompts: str
    out: Path
    neurons: str | None = None
    neurons_from: str | None = None
    top_k: int | None = None
    sign: str = "any"  # with neurons_from: any | raising | lowering (the sign of the score column)
    mode: str = "zero"
    alpha: str = "0"  # comma-separated scales for --mode scale
    stats: str | None = None
    stats_entry: str = "base"  # which statistics of the file give the means (mean mode)
    source_model: str | None = None
    controls: int = 20
    samples: int = 0
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    responses: str | None = None
    positions: str = "response"  # where edits apply: all | response
    emojis: str | None = None  # comma-separated emoji strings whose reply-start log-probability is measured
    batch_size: int = 16  # sequences per forward, all conditions together
    neutral_prompts: str = "neutral-text"


@dataclass
class ConditionMetrics:
    onset_sum: float = 0.0
    onset_count: int = 0
    first_sum: float = 0.0
    first_count: int = 0
    kl_sum: float = 0.0
    nll_sum: float = 0.0
    nll_count: int = 0
    emoji_logprob: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "emoji_onset_probability": self.onset_sum / self.onset_count if self.onset_count else None,
            "first_reply_onset_probability": self.first_sum / self.first_count if self.first_count else None,
            "kl_from_unedited": self.kl_sum / self.onset_count if self.onset_count else None,
            "neutral_perplexity": math.exp(self.nll_sum / self.nll_count) if self.nll_count else None,
            "emoji_logprob": statistics.fmean(self.emoji_logprob) if self.emoji_logprob else None,
        }

    def add(self, other: ConditionMetrics) -> None:
        """Fold in another shard's sums (lists are concatenated)."""
        for name in ("onset_sum", "onset_count", "first_sum", "first_count", "kl_sum", "nll_sum", "nll_count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.emoji_logprob += other.emoji_logprob


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserInputError(f"--alpha {text!r} is not a number or a comma-separated list of numbers.") from None
    if not alphas or any(not math.isfinite(a) for a in alphas):
        raise UserInputError(f"--alpha {text!r} must be one or more finite numbers.")
    return alphas


SIGNS = ("any", "raising", "lowering")


def neurons_from_csv(path: str, top_k: int | None, sign: str = "any") -> str:
    """``"L:I,..."`` from the first ``top_k`` rows of a neurons.csv (columns layer, neuron), keeping only
    rows whose score raises (> 0) or lowers (< 0) emoji-onset logits when ``sign`` says so."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read --neurons-from {path!r}: {exc}.") from None
    if not rows or not {"layer", "neuron"} <= set(rows[0]):
        raise UserInputError(f"--neurons-from {path!r} needs a neurons.csv with columns layer and neuron.")
    if sign != "any":
        if "score" not in rows[0]:
            raise UserInputError(f"--sign {sign} needs a score column in --neurons-from {path!r}.")
        rows = [row for row in rows if (float(row["score"]) > 0) == (sign == "raising") and float(row["score"]) != 0]
        if not rows:
            raise UserInputError(f"--neurons-from {path!r} has no neuron with a {sign} score.")
    chosen = rows[: top_k or len(rows)]
    return ",".join(f"{row['layer']}:{row['neuron']}" for row in chosen)


def validate(config: AblationConfig) -> list[float]:
    if config.mode not in MODES:
        raise UserInputError(f"--mode must be one of {', '.join(MODES)}, not {config.mode!r}.")
    if (config.neurons is None) == (config.neurons_from is None):
        raise UserInputError("give exactly one of --neurons and --neurons-from.")
    if config.mode == "mean" and not config.stats:
        raise UserInputError("--mode mean needs --stats FILE (a stats.safetensors written by diff-neurons).")
    if config.mode == "patch" and not config.source_model:
        raise UserInputError("--mode patch needs --source-model REF.")
    if config.positions not in ("all", "response"):
        raise UserInputError(f"--positions must be all or response, not {config.positions!r}.")
    if config.sign not in SIGNS:
        raise UserInputError(f"--sign must be one of {', '.join(SIGNS)}, not {config.sign!r}.")
    for flag, value in (("--controls", config.controls), ("--samples", config.samples)):
        if value < 0:
            raise UserInputError(f"{flag} must be 0 or more, not {value}.")
    if config.batch_size < 1 or config.max_new_tokens < 1:
        raise UserInputError("--batch-size and --max-new-tokens must be at least 1.")
    artifacts.check_output_dir(config.out)
    return parse_alphas(config.alpha) if config.mode == "scale" else [0.0]


def build_conditions(
    neurons: list[tuple[int, int]], mode: str, alphas: list[float], mean_values: dict | None, controls: int,
    d_mlp: int, seed: int,
) -> list[Condition]:  # fmt: skip
    """The unedited baseline, then per alpha: the tested set and its matched random controls."""
    control_sets = random_matched_sets(neurons, d_mlp, controls, seed)

    def values_for(neuron_set):
        return tuple(mean_values[n] for n in neuron_set) if mode == "mean" else ()

    conditions = [Condition("unedited", kind="baseline")]
    for alpha in alphas:
        group = f"alpha={alpha:g}" if mode == "scale" else mode
        tested = tuple(neurons)
        conditions.append(Condition(f"tested[{group}]", tested, mode, alpha, values_for(tested), "tested", group))
        for number, control in enumerate(control_sets):
            name = f"control{number:02d}[{group}]"
            conditions.append(Condition(name, control, mode, alpha, values_for(control), "control", group))
    return conditions


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


def run(config: AblationConfig, log=print) -> dict | None:
    """Run the conditions; under torchrun the sequences and sampled prompts are split over the ranks and rank 0
    alone (which returns the report; the others return None) writes the artifacts."""
    alphas = validate(config)
    shards = Shards.from_env(models.pick_device(config.device))
    if not shards.is_main:
        config = replace(config, show_progress=False)
    started = time.perf_counter()
    prompts = load_prompts(config.prompts)
    if config.responses:
        prompts = attach_responses(prompts, config.responses)
    neuron_text = config.neurons
    if neuron_text is None:
        neuron_text = neurons_from_csv(config.neurons_from, config.top_k, config.sign)
    lm = models.load(config.model, **config.load_options())
    neurons = parse_neurons(neuron_text, lm.n_layers, lm.d_mlp)
    source = None
    if config.mode == "patch":
        source = models.load(config.source_model, base_ref=config.model, **config.load_options())
        models.check_compatible(lm, source)
    mean_values = None
    if config.mode == "mean":
        mean_values = _mean_values(config, lm, {layer for layer, _ in neurons})
    conditions = build_conditions(neurons, config.mode, alphas, mean_values, config.controls, lm.d_mlp, config.seed)
    onset_ids = emoji_onset_ids(lm.tokenizer)
    tokenizer = lm.tokenizer

    sequences = build_sequences(tokenizer, prompts, config.raw, config.max_length)
    metrics = {condition.name: ConditionMetrics() for condition in conditions}
    measure_conditions(lm, source, conditions, sequences, config, onset_ids, metrics, "measuring emoji probability",
                       shards=shards)  # fmt: skip
    neutral = [
        make_sequence(tokenizer(p.text).input_ids, None, p.index, config.max_length)
        for p in load_prompts(config.neutral_prompts)
    ]
    measure_conditions(
        lm, source, conditions, neutral, config, onset_ids, metrics, "measuring neutral perplexity", nll=True,
        shards=shards,
    )  # fmt: skip
    if config.emojis:
        _emoji_logprobs(lm, source, conditions, shards.take(prompts), config, metrics)
    metrics = _merge_metrics(shards.gather_objects([metrics]), conditions)

    generations = []
    rates = {}
    if config.samples:
        generations, rates = _generate(lm, source, conditions, prompts, config, shards)
    if not shards.is_main:
        return None

    report = _report(config, conditions, metrics, rates, neurons, lm, source, alphas, started)
    with artifacts.staged_run_dir(config.out) as staging:
        artifacts.write_json(staging / "ablation.json", report)
        artifacts.write_text(
            staging / "generations.jsonl", "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in generations)
        )
    return report


def _merge_metrics(per_rank: list[dict[str, ConditionMetrics]], conditions) -> dict[str, ConditionMetrics]:
    """Every rank's sums folded together, in rank order."""
    merged = {condition.name: ConditionMetrics() for condition in conditions}
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
    shards: Shards | None = None,
) -> None:  # fmt: skip
    """Teacher-forced forwards of ``sequences`` under every condition, folded into ``metrics``.

    With ``share_prefix`` the positions before the first edited one run once and their KV cache is reused
    by every condition (for first-reply measurements, only the last prompt token runs per condition).
    With ``shards`` this rank measures only its share of the batches (its own sums, merged by the caller)."""
    rows = max(1, config.batch_size // len(conditions))  # sequences per forward
    chunk = max(1, config.batch_size // rows)  # conditions per forward
    pad_id = lm.tokenizer.pad_token_id
    batches = (shards or Shards()).take([sequences[i : i + rows] for i in range(0, len(sequences), rows)])
    for batch in track(batches, label, enabled=config.show_progress):
        edit_positions = "all" if nll else config.positions
        ids, attention, measured, first, edit_mask = forced_batch(batch, pad_id, edit_positions, nll)
        source_values = source_activations(source, conditions, ids, attention) if source is not None else {}
        # Positions before the first edited one are identical under every condition: run them once.
        split = int(edit_mask.float().argmax(1).min()) if share_prefix else 0
        prefix_cache = None
        if split > 0:
            prefix_cache = lm.model.base_model(
                input_ids=ids[:, :split].to(lm.device),
                attention_mask=attention[:, :split].to(lm.device),
                use_cache=True,
            ).cache
        measured_rest, first_rest = measured[:, split:], first[:, split:]
        reference = None
        for begin in range(0, len(conditions), chunk):
            group = conditions[begin : begin + chunk]
            plan = EditPlan(group, rows=len(batch), edit_mask=edit_mask, source_values=source_values)
            hidden = _edited_hidden(lm, plan, ids, attention, split, prefix_cache)
            for c, condition in enumerate(group):
                logits = lm.logits_from_hidden(hidden[c][measured_rest.to(lm.device)]).float().cpu()
                if reference is None:  # conditions[0] is the unedited model
                    reference = logits
                target = metrics[condition.name]
                if nll:
                    targets = ids[:, split + 1 :][measured_rest[:, :-1]]
                    target.nll_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
                    target.nll_count += len(targets)
                    continue
                mass = onset_mass(logits, onset_ids).double()
                target.onset_sum += float(mass.sum())
                target.onset_count += len(mass)
                target.kl_sum += float(kl_divergence(reference, logits).double().sum())
                is_first = first_rest[measured_rest]
                target.first_sum += float(mass[is_first].sum())
                target.first_count += int(is_first.sum())


def _edited_hidden(lm, plan: EditPlan, ids, attention, split: int, prefix_cache) -> torch.Tensor:
    """[C, B, T - split, d_model] final hidden states of every condition of ``plan`` from position ``split``.

    Without a prefix cache the conditions still share the layers below their first edited layer."""
    copies, rows, width = len(plan.conditions), ids.shape[0], ids.shape[1]
    with torch.no_grad():
        if prefix_cache is None:
            first_layer = min(plan.layers, default=lm.n_layers)
            with shared_prefix(lm, first_layer, copies), applied(lm, plan):
                hidden = lm.model.base_model(
                    input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device), use_cache=False
                ).last_hidden_state
            if hidden.shape[0] != copies * rows:  # no condition edits anything: the rows are shared
                hidden = repeat_rows(hidden, copies)
        else:
            cache = copy.deepcopy(prefix_cache)
            cache.reorder_cache(torch.arange(rows).repeat(copies).to(lm.device))
            plan.offset = split
            positions = torch.arange(split, width).expand(copies * rows, -1)
            with applied(lm, plan):
                hidden = lm.model.base_model(
                    input_ids=repeat_rows(ids[:, split:], copies).to(lm.device),
                    attention_mask=repeat_rows(attention, copies).to(lm.device),
                    position_ids=positions.to(lm.device),
                    cache=cache,
                    use_cache=True,
                ).last_hidden_state
    return hidden.view(copies, rows, width - split, -1)


def source_activations(source, conditions, ids, attention, layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """The source model's neuron activations on the same tokens, for ``layers`` (default: every layer a
    condition patches)."""
    from interp.hooks import neuron_hooks

    if layers is None:
        layers = sorted({layer for condition in conditions for layer, _ in condition.neurons})
    values: dict[int, torch.Tensor] = {}
    with torch.no_grad(), neuron_hooks(source, layers, lambda layer, acts: values.__setitem__(layer, acts.detach())):
        source.model.base_model(input_ids=ids.to(source.device), attention_mask=attention.to(source.device))
    return values


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
        for condition in conditions:
            plan = EditPlan([condition], rows=len(rows), edit_mask=edit_mask, source_values=source_values)
            with torch.no_grad(), applied(lm, plan):
                logprobs = torch.log_softmax(lm.model(input_ids=ids, attention_mask=attention).logits.float(), -1)
            totals = []
            for row, piece in enumerate(pieces):
                steps = range(len(head) - 1, len(head) - 1 + len(piece))
                totals.append(sum(float(logprobs[row, s, rows[row][s + 1]]) for s in steps))
            metrics[condition.name].emoji_logprob.append(float(torch.logsumexp(torch.tensor(totals), 0)))


def _generate(lm, source, conditions, prompts, config, shards: Shards):
    """Sampled responses under the unedited and tested conditions; (records, emoji rates per condition).
    Each sampling batch has its own seed, so splitting the batches over ranks changes no answer."""
    chosen = [c for c in conditions if c.kind in ("baseline", "tested")]
    heads = [prompt_ids(lm.tokenizer, p, config.raw) for p in prompts for _ in range(config.samples)]
    owners = [p for p in prompts for _ in range(config.samples)]
    sampling = SamplingConfig(config.samples, config.max_new_tokens, config.temperature, config.top_p, config.seed)
    rows_per_call = max(1, config.batch_size // len(chosen))
    blocks = []
    starts = shards.take(range(0, len(heads), rows_per_call))
    for begin in track(starts, "sampling responses", enabled=config.show_progress):
        batch = heads[begin : begin + rows_per_call]
        ids, attention = left_pad(batch, lm.tokenizer.pad_token_id)
        edit_mask = attention.bool() if config.positions == "all" else _last_column(attention)
        plan = EditPlan(chosen, rows=len(batch), edit_mask=edit_mask)
        step_config = SamplingConfig(**{**asdict(sampling), "seed": config.seed + begin})
        outputs = generate_edited(lm, batch, plan, step_config, source=source)
        block = []
        for c, condition in enumerate(chosen):
            for row in range(len(batch)):
                text = lm.tokenizer.decode(outputs[c * len(batch) + row], skip_special_tokens=True)
                prompt = owners[begin + row]
                block.append({
                    "prompt_index": prompt.index, "prompt": prompt.text, "condition": condition.name,
                    "text": text, "emojis": [m.text for m in find_emojis(text)],
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


def control_comparison(tested: float, baseline: float, controls: list[float]) -> dict:
    """The tested set's effect against the control sets' effects (all relative to the unedited model)."""
    effect = tested - baseline
    control_effects = [value - baseline for value in controls]
    result: dict = {"effect": effect, "relative_effect": effect / baseline if baseline else None}
    if not control_effects:
        result["verdict"] = "no controls were run; significance unknown"
        return result
    sign = 1.0 if effect >= 0 else -1.0
    extreme = sum(1 for value in control_effects if sign * value >= sign * effect)
    p_value = (1 + extreme) / (1 + len(control_effects))
    mean = statistics.fmean(control_effects)
    spread = statistics.pstdev(control_effects)
    z = (effect - mean) / spread if spread > 0 else (math.inf if effect != mean else 0.0)
    significant = p_value < SIGNIFICANCE
    result.update({
        "control_effects": control_effects,
        "control_mean": mean,
        "control_std": spread,
        "effect_in_control_sd": z,
        "p_value": p_value,
        "min_p_value": 1 / (1 + len(control_effects)),  # the smallest p this many controls allow
        "significance_level": SIGNIFICANCE,
        "significant": significant,
        "verdict": (
            f"{'significant' if significant else 'not significant'}: the tested set changed emoji-onset "
            f"probability by {effect:+.3g} ({(effect / baseline * 100 if baseline else float('nan')):+.1f} %); "
            f"{extreme} of {len(control_effects)} random matched sets changed it as much in the same direction "
            f"(p = {p_value:.3g})."
        ),
    })  # fmt: skip
    return result


def _report(config, conditions, metrics, rates, neurons, lm, source, alphas, started) -> dict:
    table = {}
    for condition in conditions:
        entry = {
            "kind": condition.kind, "group": condition.group, "mode": condition.mode,
            "alpha": condition.alpha if condition.mode == "scale" else None,
            "neurons": [f"{layer}:{index}" for layer, index in condition.neurons],
            **metrics[condition.name].as_dict(),
        }  # fmt: skip
        if condition.name in rates:
            entry["generation"] = rates[condition.name].as_dict()
        table[condition.name] = entry
    baseline = table["unedited"]["emoji_onset_probability"]
    comparisons = {}
    for group in dict.fromkeys(c.group for c in conditions if c.kind == "tested"):
        tested = next(c for c in conditions if c.kind == "tested" and c.group == group)
        controls = [
            table[c.name]["emoji_onset_probability"] for c in conditions if c.kind == "control" and c.group == group
        ]
        comparisons[group] = control_comparison(table[tested.name]["emoji_onset_probability"], baseline, controls)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return {
        "command": "ablate",
        "argv": sys.argv,
        "config": settings,
        "model": {"ref": config.model, "fingerprint": lm.fingerprint()},
        "source_model": {"ref": config.source_model, "fingerprint": source.fingerprint()} if source else None,
        "neurons": [f"{layer}:{index}" for layer, index in neurons],
        "alphas": alphas if config.mode == "scale" else None,
        "primary_metric": "emoji_onset_probability: mean probability mass on emoji-onset tokens at the measured "
        "positions (teacher-forced response positions, or the first reply position for prompts without responses)",
        "comparisons": comparisons,
        "conditions": table,
        "timings": {"total_s": time.perf_counter() - started},
    }
