"""Planted emoji neurons: a copy of a model with known neurons made into emoji causes (ground truth).

For each chosen neuron (layer, i) of a gated MLP:
- its up-projection row is multiplied by ``gain``, which multiplies the neuron's activation by exactly ``gain``;
- its output column ``W_out[:, i]`` is replaced by a vector of the same norm times ``push``, pointing
  (through the final norm's scale) at the emoji-onset tokens' mean unembedding, signed so that the neuron's
  typical (mean) activation raises emoji-onset logits.
With ``keep_columns`` only the activations are amplified, and the neurons are chosen among those whose
existing output already pushes emojis (largest positive mean activation x emoji_dla): then the planted
model differs from its base only in those neurons' values, so patching the values into the base must
recreate the effect exactly (sufficiency), as a fine-tune that leaves MLP weights alone would.
``diff-neurons`` must rank these neurons first; ablating them must remove the planted emoji effect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.errors import UserInputError
from interp.models import LoadedModel
from interp.textfiles import read_text

RECORD = "planted.json"


@dataclass(frozen=True)
class PlantSpec:
    neurons: tuple[tuple[int, int], ...]
    gain: float = 3.0
    push: float = 1.0
    keep_columns: bool = False  # amplify only: the neurons' own output columns already push emojis


@torch.no_grad()
def emoji_write_direction(lm: LoadedModel, onset_ids: list[int]) -> torch.Tensor:
    """[d_model] unit vector whose addition to the last residual stream most raises emoji-onset logits."""
    unembed = lm.spec.unembedding(lm.model).float()
    readout = (unembed[onset_ids].mean(0) - unembed.mean(0)) * lm.spec.final_norm_scale(lm.model).float()
    return readout / readout.norm()


@torch.no_grad()
def plant(
    lm: LoadedModel, spec: PlantSpec, onset_ids: list[int], mean_activation: dict[tuple[int, int], float]
) -> None:
    """Edit ``lm`` in place. ``mean_activation`` gives each neuron's mean activation (for the sign)."""
    if lm.spec.neuron_site != "mlp.down_proj":
        raise UserInputError(f"planting needs a gated MLP (up and down projections); {lm.spec.family} has none.")
    direction = emoji_write_direction(lm, onset_ids)
    for layer, index in spec.neurons:
        lm.spec.up_rows(lm.model, layer)[index, :] *= spec.gain
        if spec.keep_columns:
            continue
        down = lm.spec.site_module(lm.model, layer).weight
        column = down[:, index]
        sign = 1.0 if mean_activation.get((layer, index), 1.0) >= 0 else -1.0
        # Where a norm scales the MLP output (Gemma 2/3), the column is divided by its gain so that what
        # reaches the residual stream points along ``direction``.
        gain = lm.spec.post_mlp_norm_scale(lm.model, layer)
        if gain is not None:
            gain = gain.to(direction.dtype)
            gain = torch.where(gain.abs() < 1e-3, torch.full_like(gain, 1e-3), gain)  # a dead norm dimension
        target = direction if gain is None else direction / gain
        target = target / target.norm()
        down[:, index] = sign * spec.push * column.norm() * target.to(column.dtype)


def strongest_neurons(
    values: torch.Tensor, layers: list[int], per_layer: int, signed: bool = False
) -> list[tuple[int, int]]:
    """The ``per_layer`` neurons with the largest |value| (or largest value, ``signed``) in each of ``layers``.

    ``values`` is [L_all, D], e.g. mean activations: a large mean makes the planted push on emoji logits a
    steady one, not one that cancels over tokens."""
    scores = values if signed else values.abs()
    return [(layer, int(i)) for layer in layers for i in scores[layer].topk(per_layer).indices.tolist()]


def make_planted_model(
    model_ref: str,
    out,
    *,
    neurons: str | None = None,
    layers: str | None = None,
    per_layer: int = 2,
    gain: float = 3.0,
    push: float = 1.0,
    keep_columns: bool = False,
    prompts: str = "persona-demo",
    batch_size: int = 8,
    max_length: int = 256,
    show_progress: bool = True,
    log=print,
) -> dict:
    """Write a planted copy of ``model_ref`` to ``out`` (safetensors + tokenizer + planted.json).

    ``neurons`` is ``"L:I,..."``; without it, plants the ``per_layer`` strongest (|mean| over the prompt
    set) neurons of each of ``layers`` (default: three layers at 1/3, 1/2 and 3/4 depth).
    Returns the planted.json record.
    """
    from interp import artifacts, models
    from interp.backends import TorchBackend
    from interp.capture import capture_stats
    from interp.dla import emoji_dla
    from interp.layers import parse_layers, parse_neurons
    from interp.progress import track
    from interp.prompts import load_prompts
    from interp.tokens import build_sequences, make_batches, position_mask
    from probes.emoji_tokens import emoji_onset_ids

    if gain <= 0:
        raise UserInputError(f"--gain must be positive, not {gain}.")
    artifacts.check_run_dir(out)
    lm = models.load(model_ref, device="cpu", dtype="float32")
    given = parse_neurons(neurons, lm.n_layers, lm.d_mlp) if neurons else None
    default_layers = sorted({lm.n_layers // 3, lm.n_layers // 2, (3 * lm.n_layers) // 4})
    chosen_layers = parse_layers(layers, lm.n_layers) if layers else default_layers
    max_length = models.fit_max_length(lm.model.config, max_length, log)
    sequences = build_sequences(lm.tokenizer, load_prompts(prompts), False, max_length)
    masks = [position_mask(seq, "all", []) for seq in sequences]
    batches = make_batches(sequences, masks, batch_size, lm.tokenizer.pad_token_id)
    progress = (lambda items: track(items, "measuring activations", total=len(batches))) if show_progress else None
    stats = capture_stats(TorchBackend(lm), batches, list(range(lm.n_layers)), lm.d_mlp, 0.1, None, progress).stats
    onset_ids = emoji_onset_ids(lm.tokenizer)
    if given:
        chosen = given
    elif keep_columns:
        chosen = strongest_neurons(stats.mean * emoji_dla(lm, list(range(lm.n_layers)), onset_ids), chosen_layers,
                                   per_layer, signed=True)  # fmt: skip
    else:
        chosen = strongest_neurons(stats.mean, chosen_layers, per_layer)
    means = {(layer, index): float(stats.mean[layer, index]) for layer, index in chosen}
    base_fingerprint = lm.fingerprint()
    plant(lm, PlantSpec(tuple(chosen), gain, push, keep_columns), onset_ids, means)
    record = {
        "base": model_ref,
        "base_fingerprint": base_fingerprint,
        "neurons": [f"{layer}:{index}" for layer, index in chosen],
        "gain": gain,
        "push": None if keep_columns else push,
        "keep_columns": keep_columns,
        "calibration_prompts": prompts,
        "mean_activation": {f"{layer}:{index}": value for (layer, index), value in means.items()},
    }
    log(f"planting {len(chosen)} neurons: {', '.join(record['neurons'])}")
    with artifacts.staged_run_dir(out) as staging:
        lm.model.save_pretrained(staging, safe_serialization=True)
        lm.tokenizer.save_pretrained(staging)
        artifacts.write_json(staging / RECORD, record)
    return record


def read_planted_neurons(directory: Path, log=print) -> list[tuple[int, int]] | None:
    """The ``(layer, index)`` neurons named by the planted.json that `interp plant` wrote into ``directory``.

    None when there is no such file; a planted.json of another schema (another tool's record) is ignored with
    one warning line, never an error."""
    path = Path(directory) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(read_text(path))
        neurons = [_address(a) for a in record["neurons"]]
        ours = isinstance(record.get("base_fingerprint"), str) and bool(neurons)
    except (UserInputError, ValueError, KeyError, TypeError, AttributeError):
        ours = False
    if not ours:
        log(f"warning: ignoring {path}: it is not a record written by `interp plant`.")
        return None
    return neurons


def _address(text: str) -> tuple[int, int]:
    layer, index = (int(part) for part in text.split(":"))
    if layer < 0 or index < 0:
        raise ValueError(text)
    return layer, index
