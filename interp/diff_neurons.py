"""``interp diff-neurons``: which MLP neurons changed between a base model and its fine-tune.

Both models see exactly the same token streams (tokenised once with the base tokenizer). The base model's
statistics are gathered in two disjoint halves of the prompts (even / odd prompt index), merged for the
diff and compared with each other for the noise floor, at no extra forward passes.
Artifacts (written atomically into ``out``): ``neurons.csv``, ``stats.safetensors``, ``summary.json``,
``landscape.safetensors`` (every neuron's score and category, [layers, d_mlp], for the report's overview) and,
unless ``profile_top`` is 0, ``profiles.json`` (``interp.profiles`` for the top-ranked neurons in both models:
activation samples, top activating contexts, promoted tokens; kept during the capture itself, so each
model is loaded and run once).
"""

from __future__ import annotations

import gc
import json
import platform
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from interp import artifacts, models, rankings, remote, significance
from interp.backends import BACKENDS, make_backend
from interp.capture import CaptureResult, capture_stats, mlp_output_norms
from interp.distributed import Shards
from interp.dla import emoji_dla
from interp.errors import UserInputError, check_at_least
from interp.generation import sample_sequences
from interp.layers import parse_layers
from interp.planted import read_planted_neurons
from interp.profiles import ProfileRecorder
from interp.progress import track
from interp.prompts import attach_responses, load_prompts
from interp.remote import DEADLINE_S
from interp.run_options import RunOptions, SamplingOptions
from interp.selection import prompt_fingerprints
from interp.stats import NeuronStats, save_stats
from interp.tokens import POSITION_MODES, Sequence, TokenBatch, build_sequences, make_batches, position_mask
from probes.emoji_tokens import emoji_onset_ids, token_byte_table

PACKAGES = ("torch", "transformers", "peft", "nnsight", "transformer-lens", "safetensors", "persona-interp")


@dataclass(kw_only=True)
class DiffConfig(RunOptions, SamplingOptions):
    base: str
    finetuned: str
    prompts: str
    out: Path
    responses: str | None = None
    samples: int = 0  # --generate: responses sampled per prompt from the fine-tuned model, then teacher-forced
    positions: str = "all"
    layers: str | None = None
    top_k: int | None = None
    rank_by: str = "score"
    batch_size: int = 8
    backend: str = "torch"
    threshold: float = 0.1  # |activation| above which a neuron counts as active (for freq columns)
    profile_top: int = 50  # top-ranked neurons profiled for the report (0: none)
    remote: bool = False  # run the sides given as Hub repo ids on NDIF (interp.remote; needs backend nnsight)
    remote_timeout: float = DEADLINE_S  # seconds one NDIF request may take, queueing included
    thresholds: rankings.CategoryThresholds = field(default_factory=rankings.CategoryThresholds)


@dataclass
class DiffResult:
    out: Path
    summary: dict


def validate(config: DiffConfig) -> None:
    """Check every flag that can be checked without a model; UserInputError on the first bad one."""
    if config.positions not in POSITION_MODES:
        raise UserInputError(f"--positions must be one of {', '.join(POSITION_MODES)}, not {config.positions!r}.")
    if config.rank_by not in rankings.RANK_COLUMNS:
        raise UserInputError(f"--rank-by must be one of {', '.join(rankings.RANK_COLUMNS)}, not {config.rank_by!r}.")
    if config.backend not in BACKENDS:
        raise UserInputError(f"--backend must be one of {', '.join(BACKENDS)}, not {config.backend!r}.")
    for flag, value in (("--batch-size", config.batch_size), ("--max-length", config.max_length)):
        if value < 1:
            raise UserInputError(f"{flag} must be at least 1, not {value}.")
    if config.profile_top < 0:
        raise UserInputError(f"--profile-top must be 0 or more, not {config.profile_top}.")
    check_at_least("--top-k", config.top_k, 1)
    config.check_sampling(samples_flag="--generate")
    if config.samples and config.responses:
        raise UserInputError("give either --responses or --generate, not both.")
    if config.remote:
        if config.backend != "nnsight":
            raise UserInputError("--remote runs through nnsight's remote execution: add --backend nnsight.")
        if Shards.launched():
            raise UserInputError("--remote runs in one process: launch it without torchrun.")
        if not config.remote_timeout > 0:
            raise UserInputError(f"--remote-timeout must be a positive number of seconds, not {config.remote_timeout}.")
        remote.credentials()
    artifacts.check_run_dir(config.out)


def run_diff(config: DiffConfig, log=print) -> DiffResult | None:
    """Run the diff; under torchrun every rank captures its shard and rank 0 alone (which returns the result;
    the others return None) profiles and writes the artifacts."""
    validate(config)
    shards = Shards.from_env(models.pick_device(config.device))
    if not shards.is_main:
        log, config = (lambda message: None), replace(config, show_progress=False)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    prompts = load_prompts(config.prompts)
    if config.responses:
        prompts = attach_responses(prompts, config.responses)
    base_src = _resolve(config, config.base, log)
    ft_src = _resolve(config, config.finetuned, log, base_ref=config.base)
    if config.remote:
        remote.check_sides(base_src, ft_src, config.samples)
    base_cfg, ft_cfg = models.load_config(base_src), models.load_config(ft_src)
    tokenizer, ft_tok = models.load_tokenizer(base_src), models.load_tokenizer(ft_src)
    models.check_compatible_configs(base_cfg, ft_cfg, tokenizer, ft_tok, config.base, config.finetuned)
    config = replace(config, max_length=models.fit_max_length(ft_cfg, config.max_length, log))
    byte_table = token_byte_table(tokenizer)
    onset_ids = emoji_onset_ids(tokenizer, byte_table)
    planted = _planted_record([base_src, ft_src], log)
    # Hosted sides first: their first request (the emoji DLA) fails fast, before any local work.
    hosted = {
        src.ref: remote.open_hosted(src, onset_ids, config.trust_remote_code, config.remote_timeout)
        for src in (base_src, ft_src)
        if src.kind == remote.HOSTED
    }

    def load(source: models.ModelSource):
        if source.kind == remote.HOSTED:
            return hosted[source.ref]
        return models.load(source, **config.load_options(), tokenizer=ft_tok if source is ft_src else tokenizer)

    tic = time.perf_counter()
    ft = load(ft_src)
    layers = parse_layers(config.layers, ft.n_layers)
    if config.samples:
        sequences = sample_sequences(ft, prompts, config, config.raw, config.max_length, config.batch_size,
                                     config.show_progress, shards)  # fmt: skip
    else:
        sequences = build_sequences(tokenizer, prompts, config.raw, config.max_length)
    timings["prepare_s"] = time.perf_counter() - tic

    masks = [position_mask(seq, config.positions, byte_table) for seq in sequences]
    halves = _split_halves(sequences)
    if sum(sum(mask) for mask in masks) == 0:
        raise UserInputError(
            f"no token positions to count under --positions {config.positions}"
            + (": none of the responses contains an emoji." if config.positions == "pre-emoji" else ".")
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    all_batches = make_batches(sequences, masks, config.batch_size, pad_id)
    half_batches = [
        make_batches([sequences[i] for i in half], [masks[i] for i in half], config.batch_size, pad_id)
        for half in halves
    ]
    profile_top = 0 if hosted else config.profile_top
    if hosted and config.profile_top:
        log("no profiles.json: profiles need every token's activations, and a hosted model's stay on NDIF.")

    def recorder(lm) -> ProfileRecorder | None:  # what the profiles need, kept during the capture itself
        return ProfileRecorder([s.ids for s in sequences], masks, layers, lm.d_mlp) if profile_top else None

    recorders = {"finetuned": recorder(ft)}
    ft_capture = _capture(ft, config, shards, all_batches, layers, onset_ids, "fine-tuned model",
                          _observer(recorders["finetuned"], list(range(len(sequences)))))  # fmt: skip
    if shards.is_main:
        dla_ft, ft_fingerprint = _emoji_dla(ft, layers, onset_ids, ft_capture.mlp_out_inv_rms), ft.fingerprint()
    if recorders["finetuned"]:
        recorders["finetuned"].keep_readout(ft)
    watch = weakref.ref(ft.model)
    del ft
    _collect_if_alive(watch)

    base = load(base_src)
    recorders["base"] = recorder(base)
    half_captures = []
    for name, half, batches in zip("AB", halves, half_batches):
        observe = _observer(recorders["base"], half)
        half_captures.append(_capture(base, config, shards, batches, layers, onset_ids, f"base model, half {name}",
                                      observe))  # fmt: skip
    for side in recorders.values():
        if side:
            side.merge_ranks(shards)
    if not shards.is_main:  # the statistics are rank 0's to rank, profile and write
        return None
    base_inv_rms = _pooled_inv_rms(half_captures)
    dla_base, base_fingerprint = _emoji_dla(base, layers, onset_ids, base_inv_rms), base.fingerprint()

    a, b = half_captures
    ranking = rankings.rank_neurons(
        a.stats, b.stats, ft_capture.stats, dla_base, dla_ft, config.thresholds, config.rank_by
    )
    base_capture = CaptureResult(
        ranking.base, a.tokens + b.tokens, a.processed_tokens + b.processed_tokens,
        a.onset_prob_sum + b.onset_prob_sum, a.seconds + b.seconds,
    )  # fmt: skip
    d_mlp = ranking.category.shape[1]
    profiled = [(layers[i // d_mlp], i % d_mlp) for i in ranking.order[:profile_top].tolist()]
    profiles = {}
    if profiled:
        recorders["base"].keep_readout(base)
        profiles = {side: recorders[side].profiles(profiled) for side in ("base", "finetuned")}
    watch = weakref.ref(base.model)
    del base
    _collect_if_alive(watch)

    onset_tokens = tokenizer.convert_ids_to_tokens(onset_ids)
    tokens = {"base": base_capture.tokens, "finetuned": ft_capture.tokens}
    onset = {"base": base_capture.onset_prob, "finetuned": ft_capture.onset_prob}
    per_prompt = _onset_per_prompt(sequences, ft_capture, halves, half_captures)
    results = results_summary(layers, ranking, tokens, onset, onset_ids, onset_tokens, config.rank_by, config.top_k,
                              config.thresholds, config.threshold, per_prompt)  # fmt: skip
    summary = _summary(config, prompts, sequences, base_capture, ft_capture, timings, started, results,
                       base_fingerprint, ft_fingerprint)  # fmt: skip
    if ft_capture.mlp_out_inv_rms is not None and base_inv_rms is not None:
        summary["mlp_output_inv_rms"] = {
            "description": "per layer, mean 1/rms of the MLP output before its norm at the counted positions "
            "(Gemma 2/3); each layer's emoji_dla is scaled by it",
            "base": {str(k): v for k, v in base_inv_rms.items()},
            "finetuned": {str(k): v for k, v in ft_capture.mlp_out_inv_rms.items()},
        }
    recovery = _planted_recovery(*planted, layers, ranking.columns, config.rank_by, log) if planted else None
    if recovery:
        summary["planted_recovery"] = recovery
    stats = {"base": base_capture.stats, "finetuned": ft_capture.stats, "base_half_a": a.stats, "base_half_b": b.stats}
    metadata = {
        "base": config.base, "finetuned": config.finetuned, "positions": config.positions,
        "base_fingerprint": base_fingerprint, "finetuned_fingerprint": ft_fingerprint,
    }  # fmt: skip
    extra = {"profiles.json": {"neurons": [f"{ly}:{i}" for ly, i in profiled], "models": profiles}} if profiled else {}
    write_run(Path(config.out), layers, stats, metadata, ranking, dla_base, dla_ft, summary, config.top_k, extra)
    return DiffResult(Path(config.out), summary)


def write_run(
    out: Path, layers: list[int], stats: dict[str, NeuronStats], metadata: dict[str, str], ranking: rankings.Ranking,
    dla_base: torch.Tensor, dla_ft: torch.Tensor, summary: dict, top_k: int | None, extra_json: dict[str, dict],
) -> None:  # fmt: skip
    """Write a diff run directory atomically: neurons.csv, stats.safetensors, landscape.safetensors (score,
    category and both models' emoji_dla for every neuron), summary.json and any ``extra_json`` files."""
    with artifacts.staged_run_dir(out) as staging:
        ranked = rankings.neuron_set(
            layers, ranking.columns, ranking.category, ranking.order, ranking.above_noise, top_k
        )
        ranked.write(staging / "neurons.csv")
        save_stats(staging / "stats.safetensors", stats, metadata=metadata)
        _save_landscape(staging / "landscape.safetensors", layers, ranking, dla_base, dla_ft)
        for name, content in extra_json.items():  # large (profiles.json: thousands of values per neuron)
            artifacts.write_json(staging / name, content, indent=None)
        artifacts.write_json(staging / "summary.json", summary)


def _planted_record(sources, log) -> tuple[str, list[tuple[int, int]]] | None:
    """(model path, planted neurons) if either local model is a planted one (ground truth)."""
    for source in sources:
        neurons = read_planted_neurons(source.path, log) if source.kind == "hf" else None
        if neurons:
            return str(source.path), neurons
    return None


def _planted_recovery(
    path: str, planted: list[tuple[int, int]], layers: list[int], columns: dict[str, torch.Tensor], rank_by: str, log
) -> dict | None:
    """Where the rankings put the planted neurons.

    ``ranks`` is for the chosen ranking; ``ranks_by`` for every rankable column, which shows how much a
    generic change ranking buries the planted causes under their downstream consequences."""
    d_mlp = columns["score"].shape[1]
    if any(index >= d_mlp for _, index in planted):
        log(f"warning: ignoring {path}/planted.json: it names neurons beyond this model's {d_mlp} per layer.")
        return None
    ranks_by = {}
    for column in rankings.RANK_COLUMNS:
        rank_of = {int(flat): rank for rank, flat in enumerate(rankings.rank_order(columns[column]).tolist(), start=1)}
        ranks_by[column] = {
            f"{layer}:{index}": rank_of[layers.index(layer) * d_mlp + index] if layer in layers else None
            for layer, index in planted
        }
    found = [rank for rank in ranks_by[rank_by].values() if rank is not None]
    return {
        "planted_model": path,
        "ranks": ranks_by[rank_by],
        "all_in_top": bool(found) and len(found) == len(planted) and max(found) == len(planted),
        "ranks_by": ranks_by,
    }


def _collect_if_alive(watch: weakref.ref) -> None:
    """Free the model ``watch`` follows (its ``nn.Module``; the last reference just dropped) before the next one
    loads: reference counting has done it unless a reference cycle keeps it, and only then does the collector
    run (a full collection takes a few tenths of a second)."""
    if watch() is not None:
        gc.collect()


def _observer(recorder: ProfileRecorder | None, numbers: list[int]):
    """``capture_stats``'s ``observe`` feeding ``recorder`` for batches made from the sequences ``numbers``."""
    if recorder is None:
        return None

    def observe(batch: TokenBatch, layer: int, acts: torch.Tensor, counted: torch.Tensor) -> None:
        recorder.observe([numbers[i] for i in batch.sequence_numbers], layer, acts, batch.positions, counted)

    return observe


def _save_landscape(path: Path, layers: list[int], ranking: rankings.Ranking, dla_base, dla_ft) -> None:
    """Every neuron's score, category index and emoji_dla in both models ([layers, d_mlp]); metadata names
    the layers and categories."""
    from safetensors.torch import save_file

    tensors = {
        "score": ranking.columns["score"].float(), "category": ranking.category.to(torch.int8),
        "emoji_dla_base": dla_base.double(), "emoji_dla_finetuned": dla_ft.double(),
    }  # fmt: skip
    metadata = {"layers": json.dumps(layers), "categories": json.dumps(rankings.CATEGORIES)}
    with artifacts.atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _onset_per_prompt(sequences, ft_capture, halves, half_captures) -> dict[str, list[float]] | None:
    """Per prompt (in prompt order): each model's summed emoji-onset probability over the counted positions,
    ``{"base": [...], "finetuned": [...]}``; None where a capture has no per-sequence sums (a hosted model)."""
    if ft_capture.onset_per_sequence is None or any(c.onset_per_sequence is None for c in half_captures):
        return None
    totals: dict[str, dict[int, float]] = {"base": {}, "finetuned": {}}
    for sequence, value in zip(sequences, ft_capture.onset_per_sequence):
        totals["finetuned"][sequence.prompt_index] = totals["finetuned"].get(sequence.prompt_index, 0.0) + value
    for half, capture in zip(halves, half_captures):
        for number, value in zip(half, capture.onset_per_sequence):
            index = sequences[number].prompt_index
            totals["base"][index] = totals["base"].get(index, 0.0) + value
    prompts = sorted(totals["finetuned"])
    return {role: [totals[role].get(index, 0.0) for index in prompts] for role in totals}


def _split_halves(sequences: list[Sequence]) -> tuple[list[int], list[int]]:
    """Two disjoint halves by prompt, alternating over the distinct prompts in order (a sliced prompt set such
    as ``SET[0::2]`` keeps only even indices, so index parity would not split it), as sequence numbers."""
    rank = {index: number for number, index in enumerate(dict.fromkeys(s.prompt_index for s in sequences))}
    halves: tuple[list[int], list[int]] = ([], [])
    for number, seq in enumerate(sequences):
        halves[rank[seq.prompt_index] % 2].append(number)
    return halves


def _resolve(config: DiffConfig, ref: str, log, base_ref: str | None = None) -> models.ModelSource:
    """A side's source: with ``--remote``, a Hub repo id is a hosted side (``interp.remote``)."""
    if config.remote and remote.is_hosted_ref(ref):
        return remote.resolve(ref)
    return models.resolve(ref, base_ref=base_ref, fetch_log=log)


def _emoji_dla(lm, layers: list[int], onset_ids: list[int], inv_rms: dict[int, float] | None) -> torch.Tensor:
    """[len(layers), d_mlp] emoji DLA: from the weights here (scaled by each layer's mean 1/rms of a normed MLP
    output), or as read on NDIF for a hosted model (unscaled)."""
    if isinstance(lm, remote.RemoteModel):
        return lm.dla[layers]
    return emoji_dla(lm, layers, onset_ids, inv_rms)


def _pooled_inv_rms(captures: list[CaptureResult]) -> dict[int, float] | None:
    """The captures' mean 1/rms per layer, weighted by their counted positions."""
    if any(c.mlp_out_inv_rms is None for c in captures):
        return None
    total = sum(c.tokens for c in captures)
    return {
        layer: sum(c.mlp_out_inv_rms[layer] * c.tokens for c in captures) / max(total, 1)
        for layer in captures[0].mlp_out_inv_rms
    }


def _capture(lm, config: DiffConfig, shards: Shards, batches, layers, onset_ids, label: str, observe=None
             ) -> CaptureResult:  # fmt: skip
    """Statistics of ``batches``, split over the ranks (the same result on every rank); on NDIF for a hosted
    model (one process: ``validate`` refuses ``--remote`` under torchrun)."""
    progress = (lambda items: track(items, label)) if config.show_progress else None
    if isinstance(lm, remote.RemoteModel):
        backend = remote.RemoteNNsightBackend(lm, deadline_s=config.remote_timeout)
        return remote.capture_stats(backend, batches, layers, config.threshold, onset_ids, progress)
    backend = make_backend(config.backend, lm)
    return capture_stats(backend, batches, layers, lm.d_mlp, config.threshold, onset_ids, progress, shards,
                         mlp_output_norms(lm, layers), observe)  # fmt: skip


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _summary(
    config, prompts, sequences, base_capture, ft_capture, timings, started, results, base_fingerprint, ft_fingerprint
) -> dict:  # fmt: skip
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "thresholds"}
    return {
        "command": "diff-neurons",
        "argv": sys.argv,
        "config": settings,
        "models": {
            "base": {"ref": config.base, "fingerprint": base_fingerprint},
            "finetuned": {"ref": config.finetuned, "fingerprint": ft_fingerprint},
        },
        "prompts": len(prompts),
        "prompt_fingerprints": prompt_fingerprints(prompts),
        "sequences": len(sequences),
        **results,
        "timings": {
            **timings,
            "capture_base_s": base_capture.seconds,
            "capture_finetuned_s": ft_capture.seconds,
            "capture_tokens_per_s": (base_capture.processed_tokens + ft_capture.processed_tokens)
            / max(base_capture.seconds + ft_capture.seconds, 1e-9),
            "total_s": time.perf_counter() - started,
        },
        "versions": package_versions(),
    }


def results_summary(
    layers: list[int], ranking: rankings.Ranking, tokens: dict[str, int], onset_probability: dict[str, float],
    onset_ids: list[int], onset_tokens: list[str], rank_by: str, top_k: int | None,
    thresholds: rankings.CategoryThresholds, active_threshold: float, per_prompt: dict[str, list[float]] | None = None,
) -> dict:  # fmt: skip
    """The summary's findings: counted tokens and mean emoji-onset probability per model (``"base"``,
    ``"finetuned"``), emoji direction from the geometric mean over prompts of the per-prompt ratio fine-tuned /
    base with its 95 % t interval (``per_prompt``: each model's summed onset probability per prompt, over the same
    positions; ``significance.log_ratio_summary``), ranking, categories, noise floor."""
    score, floor = ranking.columns["score"], ranking.floor
    top = ranking.order[: top_k or 50]
    top_scores = score.reshape(-1)[top]
    base_p, ft_p = onset_probability["base"], onset_probability["finetuned"]
    pooled = ft_p / base_p if base_p > 0 else float("nan")
    ratio, interval = pooled, None
    if per_prompt is not None and base_p > 0:  # the typical prompt's ratio, with an interval that covers
        summary = significance.log_ratio_summary(np.asarray(per_prompt["finetuned"]), np.asarray(per_prompt["base"]))
        ratio, interval = summary["ratio"], summary["ratio_ci95"]
    direction, explanation = emoji_direction(ratio, interval)
    return {
        "layers": layers,
        "tokens_counted": tokens,
        "emoji": {
            "onset_token_ids": onset_ids,
            "onset_tokens": onset_tokens,
            "onset_probability": {
                "base": base_p,
                "finetuned": ft_p,
                "ratio": ratio,
                "ratio_ci95": interval,
                "pooled_ratio": pooled,
                "ratio_estimand": RATIO_ESTIMAND,
            },
            "direction": direction,
            "point_direction": "rises" if ft_p > base_p else "falls" if ft_p < base_p else "unchanged",
            "per_prompt": per_prompt,
            "explanation": explanation,
        },
        "ranking": {
            "rank_by": rank_by,
            "score_definition": "ft_mean * emoji_dla_ft - base_mean * emoji_dla_base (change in mean direct "
            "emoji-onset logit contribution; positive pushes emojis up)",
            "sum_of_scores": float(score.sum()),
            f"top_{len(top)}_raising": int((top_scores > 0).sum()),
            f"top_{len(top)}_lowering": int((top_scores < 0).sum()),
        },
        "categories": {name: int((ranking.category == i).sum()) for i, name in enumerate(rankings.CATEGORIES)},
        "category_thresholds": {**asdict(thresholds), "active_threshold": active_threshold},
        "noise_floor": (
            {
                "method": "same statistics between two disjoint halves of the prompts (even/odd) on the base model",
                **floor,
                "neurons_above_max_score": int(ranking.above_noise.sum()),
                "neurons_above_p99_score": int((score.abs() > floor["score"]["p99"]).sum()),
            }
            if floor
            else {"method": "unavailable: needs at least two prompts with counted positions"}
        ),
    }


RATIO_ESTIMAND = (
    "geometric mean over prompts of each prompt's fine-tuned / base emoji-onset probability, 95 % t "
    "interval of the mean log ratio (pooled_ratio: the ratio of the pooled means)"
)


def emoji_direction(ratio: float, interval: list[float] | None) -> tuple[str, str]:
    """(``rises`` | ``falls`` | ``no clear change``, one sentence): rises or falls only when the 95 % interval
    of the fine-tuned / base ratio over prompts excludes 1; without an interval (a single prompt, a hosted
    model) the direction is not claimed."""
    lead = (
        f"At the counted positions the fine-tuned model puts {ratio:.4g}x the base model's probability (geometric "
        "mean over prompts) on tokens "
    )
    if interval is None:
        return "no clear change", lead + "that begin an emoji (no interval over prompts: direction not claimed)."
    low, high = interval
    direction = "rises" if low > 1 else "falls" if high < 1 else "no clear change"
    return (
        direction,
        lead + f"that begin an emoji (95 % CI over prompts {low:.4g}-{high:.4g}x): {direction_words(direction)}.",
    )


def direction_words(direction: str) -> str:
    """ "emoji use rises" / "emoji use falls" / "no clear change in emoji use"."""
    return "no clear change in emoji use" if direction == "no clear change" else f"emoji use {direction}"
