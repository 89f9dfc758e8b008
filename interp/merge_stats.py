"""``interp merge-stats``: combine diff runs made on separate prompt shards into one, without the models.

Each input is a ``diff-neurons`` run directory of the same model pair, layers, positions and threshold (on a
different slice of the prompts: separate jobs or machines). Their statistics are Chan-merged in the order
given, the per-neuron emoji_dla comes from the inputs' landscape files (equal in all of them: same weights),
and the ranking, categories and noise floor are recomputed from the merged statistics. The result equals one
``diff-neurons`` over all the shards' prompts up to the float32 rounding of each batch's sums (the batches
differ; about 1e-6 relative), and its noise-floor halves are the even / odd prompts of each shard.
Profiles are not merged (they need the models): rerun ``diff-neurons --profile-top`` for those.
"""

from __future__ import annotations

import json
import sys
from functools import reduce
from pathlib import Path

import torch

from interp import artifacts, rankings
from interp.diff_neurons import package_versions, results_summary, write_run
from interp.errors import UserInputError, check_at_least
from interp.stats import NeuronStats, load_stats

ENTRIES = ("base_half_a", "base_half_b", "finetuned")
SAME = ("base_fingerprint", "finetuned_fingerprint", "positions")


def _read_run(path: Path) -> tuple[dict[str, NeuronStats], dict, dict[str, torch.Tensor], dict]:
    """(statistics, stats metadata, landscape tensors, summary) of one diff run directory."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    names = ("stats.safetensors", "landscape.safetensors", "summary.json")
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise UserInputError(f"{str(path)!r} is not a diff-neurons run directory (missing {', '.join(missing)}).")
    try:
        stats = load_stats(path / "stats.safetensors")
        with safe_open(str(path / "stats.safetensors"), framework="pt") as handle:
            metadata = handle.metadata() or {}
        landscape = load_file(str(path / "landscape.safetensors"))
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    except (SafetensorError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{str(path)!r} holds unreadable artifacts: {exc}.") from None
    if not set(ENTRIES) <= set(stats) or "emoji_dla_base" not in landscape:
        raise UserInputError(f"{str(path)!r} was written by an older diff-neurons; rerun it to merge.")
    return stats, metadata, landscape, summary


def merge_runs(inputs: list[Path], out: Path, top_k: int | None = None) -> dict:
    """Merge the runs into ``out`` (written atomically); return its summary."""
    if len(inputs) < 2:
        raise UserInputError("merge-stats needs at least two run directories.")
    check_at_least("--top-k", top_k, 1)
    artifacts.check_run_dir(out)
    runs = [_read_run(Path(path)) for path in inputs]
    first_stats, first_meta, first_land, first_summary = runs[0]
    for path, (stats, metadata, landscape, _) in zip(inputs[1:], runs[1:]):
        for key in SAME:
            if metadata.get(key) != first_meta.get(key):
                raise UserInputError(f"{str(path)!r} differs from {str(inputs[0])!r} in {key}: they cannot be merged.")
        first = first_stats["finetuned"]
        if stats["finetuned"].layers != first.layers or stats["finetuned"].threshold != first.threshold:
            raise UserInputError(f"{str(path)!r} has other layers or another threshold than {str(inputs[0])!r}.")
        if not torch.equal(landscape["emoji_dla_finetuned"], first_land["emoji_dla_finetuned"]):
            raise UserInputError(f"{str(path)!r} was made with other weights than {str(inputs[0])!r}.")

    merged = {name: reduce(NeuronStats.merge, [stats[name] for stats, *_ in runs]) for name in ENTRIES}
    config = first_summary.get("config", {})
    thresholds = rankings.CategoryThresholds(
        **{k: v for k, v in first_summary.get("category_thresholds", {}).items() if k != "active_threshold"}
    )
    rank_by = config.get("rank_by", "score")
    dla_base, dla_ft = first_land["emoji_dla_base"], first_land["emoji_dla_finetuned"]
    ranking = rankings.rank_neurons(merged["base_half_a"], merged["base_half_b"], merged["finetuned"], dla_base, dla_ft,
                                thresholds, rank_by)  # fmt: skip
    merged["base"] = ranking.base
    summaries = [summary for *_, summary in runs]
    tokens = {role: int(merged[role].count[0]) for role in ("base", "finetuned")}
    onset = {  # token-weighted mean over the inputs
        role: sum(s["emoji"]["onset_probability"][role] * s["tokens_counted"][role] for s in summaries) / tokens[role]
        for role in ("base", "finetuned")
    }
    emoji = first_summary["emoji"]
    layers = merged["finetuned"].layers
    per_prompt = None  # the inputs' prompts side by side (shards hold disjoint prompts)
    if all(s["emoji"].get("per_prompt") for s in summaries):
        per_prompt = {
            role: [v for s in summaries for v in s["emoji"]["per_prompt"][role]] for role in ("base", "finetuned")
        }
    results = results_summary(layers, ranking, tokens, onset, emoji["onset_token_ids"], emoji["onset_tokens"],
                              rank_by, top_k, thresholds, merged["finetuned"].threshold, per_prompt)  # fmt: skip
    summary = {
        "command": "merge-stats",
        "argv": sys.argv,
        "inputs": [str(path) for path in inputs],
        "config": {**config, "top_k": top_k},
        "models": first_summary.get("models"),
        "prompts": sum(s.get("prompts", 0) for s in summaries),
        "prompt_fingerprints": [f for s in summaries for f in s.get("prompt_fingerprints", [])],
        "sequences": sum(s.get("sequences", 0) for s in summaries),
        **results,
        "versions": package_versions(),
    }
    write_run(Path(out), layers, merged, first_meta, ranking, dla_base, dla_ft, summary, top_k, {})
    return summary
