"""``interp attribute``: score every neuron's effect on emoji-onset probability without ablating each one.

Metric M: the mean probability mass on emoji-onset tokens at the measured positions (as ``interp ablate``
measures it). Two methods, each giving a ``neurons.csv``-compatible ranking:
- ``attribution-patching`` (all layers, about one forward and one backward pass): the first-order estimate
  of what replacing neuron i's activations a by a' (0 for ``--mode zero``, the source model's values for
  ``--mode patch``) at the edited positions does to M: ``sum_positions (a' - a) * dM/da``.
- ``integrated-gradients`` (captum, chosen layers): the same change integrated along the straight path from
  a to a' (``steps`` points), which is exact for the joint edit of all neurons of the layer (completeness)
  and splits it among them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interp import artifacts, models
from interp.ablation import forced_batch, source_activations
from interp.errors import UserInputError, check_at_least
from interp.hooks import neuron_hooks
from interp.layers import parse_layers
from interp.neuron_set import NeuronSet
from interp.progress import track
from interp.prompts import attach_responses, load_prompts
from interp.rankings import rank_order
from interp.run_options import RunOptions
from interp.tokens import build_sequences
from probes.emoji_tokens import emoji_onset_ids

METHODS = ("attribution-patching", "integrated-gradients")
CSV_COLUMNS = ("rank", "layer", "neuron", "score", "mean_activation", "mean_delta")


@dataclass(kw_only=True)
class AttributionConfig(RunOptions):
    model: str
    prompts: str
    out: Path
    mode: str = "zero"
    source_model: str | None = None
    method: str = "attribution-patching"
    layers: str | None = None
    steps: int = 16
    responses: str | None = None
    positions: str = "response"
    top_k: int | None = None
    batch_size: int = 8


@dataclass
class Attribution:
    layers: list[int]
    score: torch.Tensor  # [L, D] estimated change of M (probability) when the neuron is edited
    mean_activation: torch.Tensor  # [L, D] mean activation at edited positions
    mean_delta: torch.Tensor  # [L, D] mean (a' - a) at edited positions
    metric: float  # M of the unedited model


def validate(config: AttributionConfig) -> None:
    if config.mode not in ("zero", "patch"):
        raise UserInputError(f"--mode must be zero or patch for attribution, not {config.mode!r}.")
    if config.mode == "patch" and not config.source_model:
        raise UserInputError("--mode patch needs --source-model REF.")
    if config.method not in METHODS:
        raise UserInputError(f"--method must be one of {', '.join(METHODS)}, not {config.method!r}.")
    if config.positions not in ("all", "response"):
        raise UserInputError(f"--positions must be all or response, not {config.positions!r}.")
    if config.steps < 2 or config.batch_size < 1:
        raise UserInputError("--steps must be at least 2 and --batch-size at least 1.")
    check_at_least("--top-k", config.top_k, 1)
    artifacts.check_run_dir(config.out)


def attribute(lm, source, sequences, layers: list[int], config: AttributionConfig, onset_ids: list[int]) -> Attribution:
    """Scores for every neuron of ``layers`` over ``sequences`` (teacher-forced)."""
    shape = (len(layers), lm.d_mlp)
    score, act_sum, delta_sum = (torch.zeros(shape, dtype=torch.float64) for _ in range(3))
    edited_count = 0
    metric = 0.0
    total_measured = sum(
        len(s.ids) - s.response_start if s.response_start is not None else 1 for s in sequences
    )  # measured positions over the whole set
    pad_id = lm.tokenizer.pad_token_id
    batches = [sequences[i : i + config.batch_size] for i in range(0, len(sequences), config.batch_size)]
    for batch in track(batches, f"{config.method}", enabled=config.show_progress):
        ids, attention, measured, _, edit = forced_batch(batch, pad_id, config.positions)
        targets = source_activations(source, [], ids, attention, layers) if source is not None else None
        edit_f = edit.unsqueeze(-1).to(torch.float32)
        if config.method == "attribution-patching":
            acts, grads, value = _gradients(lm, ids, attention, measured, layers, onset_ids, total_measured)
            metric += value
            for slot, layer in enumerate(layers):
                goal = targets[layer] if targets is not None else torch.zeros_like(acts[layer])
                delta = (goal - acts[layer]) * edit_f
                score[slot] += (delta * grads[layer]).sum((0, 1)).double()
                act_sum[slot] += (acts[layer] * edit_f).sum((0, 1)).double()
                delta_sum[slot] += delta.sum((0, 1)).double()
        else:
            for slot, layer in enumerate(layers):
                ig, acts, value = _integrated_gradients(
                    lm, ids, attention, measured, edit, layer, targets, onset_ids, total_measured, config.steps
                )
                metric += value / len(layers)
                score[slot] += ig.sum((0, 1)).double()
                goal = targets[layer] if targets is not None else torch.zeros_like(acts)
                act_sum[slot] += (acts * edit_f).sum((0, 1)).double()
                delta_sum[slot] += ((goal - acts) * edit_f).sum((0, 1)).double()
        edited_count += int(edit.sum())
    count = max(edited_count, 1)
    return Attribution(layers, score, act_sum / count, delta_sum / count, metric)


def _metric(lm, hidden, measured, onset_ids, total_measured) -> torch.Tensor:
    """[rows] each row's share of M: summed onset mass at its measured positions / all measured positions."""
    logits = lm.logits_from_hidden(hidden).float()
    mass = torch.softmax(logits, dim=-1)[..., onset_ids].sum(-1)  # [rows, T]
    return (mass * measured.to(mass.device)).sum(-1) / total_measured


def _gradients(lm, ids, attention, measured, layers, onset_ids, total_measured):
    """One forward and one backward pass: (activations, dM/d activations, M share) per layer."""
    acts: dict[int, torch.Tensor] = {}
    probes: dict[int, torch.Tensor] = {}

    def track_grad(layer: int, value: torch.Tensor) -> torch.Tensor:
        # A zero "probe" added at each site: its gradient is dM/da with every downstream path intact
        # (detaching the activations themselves would cut the paths through later layers' neurons).
        acts[layer] = value.detach()
        probes[layer] = torch.zeros_like(value, requires_grad=True)
        return value + probes[layer]

    with torch.enable_grad(), neuron_hooks(lm, layers, track_grad, edits=True):
        hidden = lm.model.base_model(
            input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device)
        ).last_hidden_state
        total = _metric(lm, hidden, measured, onset_ids, total_measured).sum()
        grads = torch.autograd.grad(total, [probes[layer] for layer in layers])
    return (
        {layer: acts[layer].detach().float().cpu() for layer in layers},
        {layer: grad.float().cpu() for layer, grad in zip(layers, grads)},
        float(total),
    )


def _integrated_gradients(lm, ids, attention, measured, edit, layer, targets, onset_ids, total_measured, steps):
    """Captum integrated gradients of M w.r.t. one layer's activations, from a to a' at edited positions."""
    from captum.attr import IntegratedGradients

    captured: dict[int, torch.Tensor] = {}
    with torch.no_grad(), neuron_hooks(lm, [layer], lambda _l, a: captured.__setitem__(0, a.detach().clone())):
        hidden = lm.model.base_model(
            input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device)
        ).last_hidden_state
        value = float(_metric(lm, hidden, measured, onset_ids, total_measured).sum())
    acts = captured[0]
    goal = targets[layer].to(acts) if targets is not None else torch.zeros_like(acts)
    baseline = torch.where(edit.unsqueeze(-1).to(acts.device), goal, acts)

    def forward(values, ids_rep, attention_rep, measured_rep):
        with neuron_hooks(lm, [layer], lambda _l, _a: values, edits=True):
            out = lm.model.base_model(input_ids=ids_rep, attention_mask=attention_rep).last_hidden_state
        return _metric(lm, out, measured_rep, onset_ids, total_measured)

    ig = IntegratedGradients(forward)
    with torch.enable_grad():
        attributions = ig.attribute(
            acts, baselines=baseline, additional_forward_args=(ids.to(lm.device), attention.to(lm.device), measured),
            n_steps=steps, internal_batch_size=ids.shape[0] * min(steps, 4),
        )  # fmt: skip
    # captum attributes M(acts) - M(baseline); we want the change caused by the edit, M(baseline) - M(acts).
    return -attributions.detach().float().cpu(), acts.float().cpu(), value


def neuron_set(result: Attribution, top_k: int | None) -> NeuronSet:
    """The ranked neuron set (neurons.csv) of an attribution: score, mean activation and mean change."""
    order = rank_order(result.score).tolist()
    d_mlp = result.score.shape[1]
    records = []
    for rank, flat in enumerate(order[: top_k or len(order)], start=1):
        slot, neuron = divmod(flat, d_mlp)
        records.append({
            "rank": rank, "layer": result.layers[slot], "neuron": neuron, "score": float(result.score[slot, neuron]),
            "mean_activation": float(result.mean_activation[slot, neuron]),
            "mean_delta": float(result.mean_delta[slot, neuron]),
        })  # fmt: skip
    return NeuronSet.from_records(CSV_COLUMNS, records)


def run_attribution(config: AttributionConfig, log=print) -> dict:
    validate(config)
    started = time.perf_counter()
    prompts = load_prompts(config.prompts)
    if config.responses:
        prompts = attach_responses(prompts, config.responses)
    lm = models.load(config.model, **config.load_options())
    source = None
    if config.mode == "patch":
        source = models.load(config.source_model, base_ref=config.model, **config.load_options())
        models.check_compatible(lm, source)
    if config.method == "integrated-gradients" and config.layers is None:
        raise UserInputError("--method integrated-gradients needs --layers (it costs --steps passes per layer).")
    layers = parse_layers(config.layers, lm.n_layers)
    max_length = models.fit_max_length(lm.model.config, config.max_length, log)
    sequences = build_sequences(lm.tokenizer, prompts, config.raw, max_length)
    result = attribute(lm, source, sequences, layers, config, emoji_onset_ids(lm.tokenizer))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    summary = {
        "command": "attribute",
        "argv": sys.argv,
        "config": settings,
        "model": {"ref": config.model, "fingerprint": lm.fingerprint()},
        "source_model": {"ref": config.source_model, "fingerprint": source.fingerprint()} if source else None,
        "metric": "mean emoji-onset probability at the measured positions",
        "metric_unedited": result.metric,
        "score_definition": "estimated change of the metric when the neuron is set to "
        + ("0" if config.mode == "zero" else "the source model's values")
        + " at the edited positions",
        "sum_of_scores": float(result.score.sum()),
        "timings": {"total_s": time.perf_counter() - started},
    }
    with artifacts.staged_run_dir(config.out) as staging:
        neuron_set(result, config.top_k).write(staging / "neurons.csv")
        artifacts.write_json(staging / "summary.json", summary)
    return summary
