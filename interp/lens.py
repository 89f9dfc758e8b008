"""``interp lens``: the activation-difference lens (Minder et al. 2025, diffing-toolkit's ADL) between two models.

1. **The difference.** Per layer, the mean residual stream after the block of the fine-tuned model minus the base
   model's, over the first ``first_positions`` positions (after the first, attention-sink token) of neutral text
   (``--text``, default the built-in ``neutral-text``): a narrow fine-tune leaves its trace there even on text
   that has nothing to do with it. Saved as ``activation_difference.safetensors`` (a ``DirectionSet``, so
   ``interp steer`` takes it too).
2. **Read through the logit lens.** The difference, passed through the base model's final norm and unembedding:
   the most promoted and most suppressed tokens, and the probability mass on emoji-onset tokens, tested against
   ``lens_controls`` random directions of the same norm through the same lens (Monte Carlo p-value, two-sided,
   Holm over the layers: 2,000 directions let 30 layers reach an adjusted p of 0.03).
3. **Added to the base model.** At ``steer_layer`` (default: the middle layer, as Minder et al.), the difference
   itself (its unit direction x its norm) is added to the base model's residual stream at ``positions`` of
   ``--prompts``, with ``interp steer``'s measurements and null (random directions of the same norm); the
   fine-tuned model's own emoji-onset probability on the same prompts is the target, so the comparison says
   which share of the base-to-fine-tuned change the difference reproduces (``gap_closed``, interval over prompts).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from interp import artifacts, models, significance
from interp.ablation import (
    SOURCE,
    CausalOptions,
    ConditionMetrics,
    causal_prompts,
    condition_table,
    fixed_alternatives,
    measure_all,
    measure_conditions,
    tested_comparisons,
    write_run,
)
from interp.directions import DirectionSet, residual_sums
from interp.distributed import Shards
from interp.errors import UserInputError, check_at_least
from interp.generation import UNEDITED
from interp.layers import parse_layers
from interp.prompts import load_prompts
from interp.steering import random_directions, steering_conditions
from interp.tokens import build_sequences, make_batches, make_sequence
from probes.emoji_tokens import emoji_onset_ids

REPORT = "lens.json"
DIFFERENCE_FILE = "activation_difference.safetensors"


@dataclass(kw_only=True)
class LensConfig(CausalOptions):
    base: str
    finetuned: str
    prompts: str = "opinionqa:test"  # where adding the difference to the base model is tested
    text: str = "neutral-text"  # where the difference is read
    first_positions: int = 5
    layers: str | None = None  # layers whose difference is read [default: all]
    steer_layer: int | None = None  # where the difference is added [default: the middle layer]
    top: int = 20  # promoted and suppressed tokens listed per layer
    lens_controls: int = 2000  # random directions through the lens (cheap: one unembedding each per layer)
    positions: str = "all"  # where the difference is added: all | response


def run_lens(config: LensConfig, log=print) -> dict:
    """Read the difference, lens it, add it to the base model; write lens.json, the difference and generations."""
    check_at_least("--first-positions", config.first_positions, 1)
    check_at_least("--top", config.top, 1)
    check_at_least("--lens-controls", config.lens_controls, 0)
    config.check_causal_options()
    if config.alternative not in significance.ALTERNATIVES:
        raise UserInputError(f"--alternative must be one of {', '.join(significance.ALTERNATIVES)}.")
    artifacts.check_run_dir(config.out)
    started = time.perf_counter()
    texts = load_prompts(config.text)
    prompts = causal_prompts(config)
    base = models.load(config.base, **config.load_options())
    finetuned = models.load(config.finetuned, base_ref=config.base, **config.load_options())
    models.check_compatible(base, finetuned)
    config = replace(config, max_length=models.fit_max_length(base.model.config, config.max_length, log))
    layers = parse_layers(config.layers, base.n_layers)
    steer_layer = base.n_layers // 2 if config.steer_layer is None else config.steer_layer
    if not 0 <= steer_layer < base.n_layers:
        raise UserInputError(f"--steer-layer {steer_layer} is not a layer of the model (0-{base.n_layers - 1}).")
    sequences = [make_sequence(base.tokenizer(t.text).input_ids, None, t.index, config.first_positions + 1)
                 for t in texts]  # fmt: skip
    masks = [[0 < i <= config.first_positions for i in range(len(s.ids))] for s in sequences]
    batches = make_batches(sequences, masks, config.batch_size, base.tokenizer.pad_token_id)
    every_layer = sorted(set(layers) | {steer_layer})
    sums = {name: residual_sums(lm, batches, every_layer) for name, lm in (("base", base), ("finetuned", finetuned))}
    difference = (sums["finetuned"].mean() - sums["base"].mean()).float()  # [layers, d_model]
    onset_ids = emoji_onset_ids(base.tokenizer)
    lens = logit_lens(base, difference, every_layer, layers, onset_ids, config)

    vector = difference[every_layer.index(steer_layer)]
    if not float(vector.norm()) > 0:
        raise UserInputError(f"the two models' activations do not differ at layer {steer_layer}.")
    controls = random_directions(base.d_model, config.controls, config.seed)
    conditions = steering_conditions(steer_layer, vector / vector.norm(), [float(vector.norm())], controls)
    metrics, generations, rates = measure_all(base, None, conditions, prompts, config, Shards())
    target = {"unedited": ConditionMetrics()}
    measure_conditions(finetuned, None, [UNEDITED], build_sequences(finetuned.tokenizer, prompts, config.raw,
                       config.max_length), config, onset_ids, target, "the fine-tuned model")  # fmt: skip
    metrics[SOURCE] = target["unedited"]
    alternatives = fixed_alternatives(config.alternative, conditions)
    comparisons = tested_comparisons(conditions, metrics, alternatives, config.seed,
                                     subject="the activation difference", generations=generations,
                                     tokenizer=base.tokenizer)  # fmt: skip
    metadata = {"method": f"activation difference: fine-tuned minus base mean residual after each block, positions "
                f"1-{config.first_positions} of {config.text}", "base_ref": config.base,
                "finetuned_ref": config.finetuned, "model_fingerprint": base.fingerprint()}  # fmt: skip
    report = {
        "command": "lens",
        "argv": sys.argv,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "base": {"ref": config.base, "fingerprint": base.fingerprint()},
        "finetuned": {"ref": config.finetuned, "fingerprint": finetuned.fingerprint()},
        "text_positions": int(sums["base"].counts.sum()),
        "lens": lens,
        "steering": {"layer": steer_layer, "coeff": float(vector.norm()),
                     "finetuned_onset_probability": metrics[SOURCE].as_dict()["emoji_onset_probability"],
                     "comparisons": comparisons, "conditions": condition_table(conditions, metrics, rates)},
        "timings": {"total_s": time.perf_counter() - started},
    }  # fmt: skip

    def extra(staging: Path) -> None:
        DirectionSet(every_layer, difference, metadata).save(staging / DIFFERENCE_FILE)

    write_run(config.out, REPORT, report, generations, extra)
    return report


def logit_lens(lm, difference: torch.Tensor, every_layer: list[int], layers: list[int], onset_ids: list[int],
               config: LensConfig) -> list[dict]:  # fmt: skip
    """Per layer of ``layers``: the difference through the final norm and unembedding (top promoted and
    suppressed tokens, emoji-onset probability mass) against random directions of its norm through the same lens."""
    norm = lm.spec.final_norm(lm.model)
    random = random_directions(lm.d_model, config.lens_controls, config.seed + 1)

    def lens_onset(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([N] emoji-onset probability mass, [vocab] log-probabilities of the first vector) through the lens,
        in chunks (a [N, vocab] matrix of 2,000 directions would take gigabytes)."""
        masses, first = [], None
        with torch.no_grad():
            for chunk in vectors.split(256):
                hidden = norm(chunk.to(lm.device, next(lm.model.parameters()).dtype).unsqueeze(0)).squeeze(0)
                logp = torch.log_softmax(lm.logits_from_hidden(hidden).float(), dim=-1).cpu()
                first = logp[0] if first is None else first
                masses.append(logp[:, onset_ids].exp().sum(-1).double())
        return torch.cat(masses), first

    entries = []
    for layer in layers:
        vector = difference[every_layer.index(layer)]
        onset, logp = lens_onset(torch.cat([vector.unsqueeze(0), random * vector.norm()]))
        promoted, suppressed = logp.topk(config.top).indices.tolist(), (-logp).topk(config.top).indices.tolist()
        entries.append({
            "layer": layer, "norm": float(vector.norm()),
            "promoted": [lm.tokenizer.decode([t]) for t in promoted],
            "suppressed": [lm.tokenizer.decode([t]) for t in suppressed],
            "onset_probability": float(onset[0]),
            "random_onset_probability_median": float(onset[1:].median()) if len(onset) > 1 else None,
            "p_value": significance.control_p_value(float(onset[0]), onset[1:].tolist(), "two-sided")
            if len(onset) > 1 else None,
        })  # fmt: skip
    tested = [e for e in entries if e["p_value"] is not None]
    for entry, adjusted in zip(tested, significance.holm([e["p_value"] for e in tested])):
        entry["p_value_adjusted"] = adjusted
    return entries
