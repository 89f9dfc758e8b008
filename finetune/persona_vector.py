"""``interp persona-vector``: per-layer trait directions (the persona vectors of Chen et al. 2025) from Opinion QA,
and how far a fine-tune moved the model along them.

For every training question of the trait, each pole's packaged answer is teacher-forced under that pole's
instruction as the system message (``instruction``); the direction of layer L is the mean residual activation
after block L over the high pole's response positions minus the same mean over the low pole's (positions that
predict an answer token, as ``--positions response`` counts them). Teacher-forcing the dataset's answers replaces
Chen et al.'s generate-then-filter step: the answers were written to express their pole, nothing is sampled, and
the vectors are deterministic. ``--no-instruction`` drops the instructions (the answers alone differ).

Stability: the same vectors from the even- and from the odd-numbered questions, and their cosine per layer.
Scale: the residual stream's root-mean-square norm per layer, so a steering coefficient can be read against it.

With ``finetuned`` (monitoring, issue 16 part 3): the fine-tune's activation shift (fine-tuned minus base mean
residual over the same positions, both poles' answers) is projected on the unit persona vector per layer, with a
95 % bootstrap interval over questions; its cosine with the vector is tested against random directions (for a
uniformly random unit direction in d dimensions, cos^2 ~ Beta(1/2, (d - 1)/2): ``scipy.stats.beta``), Holm-adjusted
over the layers; and compared with its cosines with the other four traits' vectors. With ``neurons_from``: the
cosine of each listed neuron's write direction with the persona vector after its layer, against the same null.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats as scipy_stats

from finetune.dataset import POLES, SPLITS, check_trait, data_hash, instruction, load_rows, select
from interp import artifacts, models, significance
from interp.directions import FILE_NAME, DirectionSet, ResidualSums, residual_sums
from interp.errors import UserInputError, check_at_least
from interp.layers import check_neurons, parse_layers
from interp.neuron_set import NeuronSet
from interp.progress import track
from interp.prompts import Prompt
from interp.run_options import RunOptions
from interp.selection import prompt_fingerprints
from interp.tokens import build_sequences, make_batches, position_mask
from probes.traits import TRAITS

SHIFT_FILE = "finetune_shift.safetensors"


@dataclass(kw_only=True)
class PersonaVectorConfig(RunOptions):
    trait: str
    out: Path
    model: str = "smollm2-135m"
    layers: str | None = None  # e.g. "10-29" [default: all]
    dataset: str | None = None  # Opinion QA CSV [default: packaged]
    split: str = "train"
    instruction: bool = True  # each pole's instruction as the system message
    batch_size: int = 8
    finetuned: str | None = None  # a fine-tune of ``model``: project its activation shift on the vectors
    alternative: str = "two-sided"  # the shift's expected sign along the vector (greater: towards the high pole)
    neurons_from: str | None = None  # a neurons.csv: cosines of its neurons' write directions with the vectors
    top_k: int = 20


def pole_prompts(config: PersonaVectorConfig, trait: str | None = None) -> dict[str, list[Prompt]]:
    """pole -> the prompts (question with the pole's answer as the response) of the questions both poles answer,
    in the same question order for both poles."""
    trait = trait or config.trait
    check_trait(trait)
    if config.split not in SPLITS:
        raise UserInputError(f"--split must be one of {', '.join(SPLITS)}, not {config.split!r}.")
    rows = load_rows(config.dataset)
    answers = {pole: {r.question: r.answer for r in select(rows, trait, pole, config.split)} for pole in POLES}
    questions = [q for q in answers["high"] if q in answers["low"]]
    if not questions:
        raise UserInputError(f"the dataset has no {config.split} question with answers of both {trait} poles.")
    prompts = {}
    for pole in POLES:
        system = (("system", instruction(trait, pole)),) if config.instruction else ()
        prompts[pole] = [Prompt(messages=(*system, ("user", q)), response=answers[pole][q], index=i)
                         for i, q in enumerate(questions)]  # fmt: skip
    return prompts


def run_persona_vector(config: PersonaVectorConfig, log=print) -> dict:
    """Compute the trait's per-layer directions (and, with ``finetuned``, the fine-tune's shift along them) and
    write ``persona_vector.safetensors`` and ``summary.json`` (and ``finetune_shift.safetensors``)."""
    check_at_least("--batch-size", config.batch_size, 1)
    check_at_least("--top-k", config.top_k, 1)
    if config.alternative not in significance.ALTERNATIVES:
        raise UserInputError(f"--alternative must be one of {', '.join(significance.ALTERNATIVES)}.")
    prompts = pole_prompts(config)
    chosen = NeuronSet.read(config.neurons_from).top(config.top_k) if config.neurons_from else None
    artifacts.check_run_dir(config.out)
    started = time.perf_counter()
    lm = models.load(config.model, **config.load_options())
    finetuned = None
    if config.finetuned:  # checked before any work
        finetuned = models.load(config.finetuned, base_ref=config.model, **config.load_options())
        models.check_compatible(lm, finetuned)
    layers = parse_layers(config.layers, lm.n_layers)
    if chosen is not None:
        check_neurons(chosen.addresses, lm.n_layers, lm.d_mlp, f"--neurons-from {config.neurons_from!r}")
        if {layer for layer, _ in chosen.addresses} - set(layers):
            raise UserInputError("--neurons-from lists neurons in layers outside --layers.")
    max_length = models.fit_max_length(lm.model.config, config.max_length, log)

    def sums_of(model, pole_set: dict[str, list[Prompt]], label: str) -> dict[str, ResidualSums]:
        result = {}
        for pole, chosen_prompts in pole_set.items():
            sequences = build_sequences(model.tokenizer, chosen_prompts, config.raw, max_length)
            masks = [position_mask(sequence, "response", []) for sequence in sequences]
            batches = make_batches(sequences, masks, config.batch_size, model.tokenizer.pad_token_id)
            result[pole] = residual_sums(model, batches, layers, lambda b, text=f"{label}, {pole} pole": track(
                b, text, enabled=config.show_progress))  # fmt: skip
        return result

    base = sums_of(lm, prompts, config.trait)
    vectors = (base["high"].mean() - base["low"].mean()).float()
    halves = [(base["high"].mean(slice(h, None, 2)) - base["low"].mean(slice(h, None, 2))).float() for h in (0, 1)]
    split_half = torch.nn.functional.cosine_similarity(halves[0], halves[1], dim=1)
    squares = torch.cat([base[pole].squares for pole in POLES])
    residual_rms = (squares.sum(0) / torch.cat([base[pole].counts for pole in POLES]).sum()).sqrt()
    fingerprints = prompt_fingerprints([p for pole in POLES for p in prompts[pole]])
    metadata = {
        "method": "persona-vector: mean residual after each block, high-pole minus low-pole answers (response "
        "positions)", "trait": config.trait, "model_ref": config.model, "model_fingerprint": lm.fingerprint(),
        "prompt_fingerprints": json.dumps(fingerprints),
    }  # fmt: skip
    summary = {
        "command": "persona-vector",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "model": {"ref": config.model, "fingerprint": lm.fingerprint()},
        "trait": config.trait,
        "d_model": lm.d_model,
        "instructions": {pole: instruction(config.trait, pole) if config.instruction else None for pole in POLES},
        "questions": len(prompts["high"]),
        "data_hash": data_hash(load_rows(config.dataset)),
        "prompt_fingerprints": fingerprints,
        "positions": {pole: int(base[pole].counts.sum()) for pole in POLES},
        "layers": [
            {
                "layer": layer,
                "norm": float(vectors[slot].norm()),
                "residual_rms": float(residual_rms[slot]),
                "split_half_cosine": float(split_half[slot]),
            }
            for slot, layer in enumerate(layers)
        ],  # fmt: skip
    }
    shift = None
    if finetuned is not None:
        others = {}
        for trait in (t for t in TRAITS if t != config.trait):
            try:
                other_prompts = pole_prompts(config, trait)
            except UserInputError:  # a dataset without both poles of this trait: nothing to compare with
                continue
            other = sums_of(lm, other_prompts, trait)
            others[trait] = (other["high"].mean() - other["low"].mean()).float()
        tuned = sums_of(finetuned, prompts, f"{config.trait} (fine-tuned)")
        shift_sums = sum(tuned[pole].sums - base[pole].sums for pole in POLES)  # [questions, L, d]
        counts = sum(base[pole].counts for pole in POLES)  # [questions]
        shift = (shift_sums.sum(0) / counts.sum()).float()
        summary["finetune_shift"] = shift_summary(shift_sums, counts, vectors, others, layers, config.alternative)
        summary["finetune_shift"]["finetuned"] = {"ref": config.finetuned, "fingerprint": finetuned.fingerprint()}
    if chosen is not None:
        summary["neurons"] = neuron_cosines(lm, chosen.addresses, vectors, layers)
    summary["timings"] = {"total_s": time.perf_counter() - started}
    with artifacts.staged_run_dir(config.out) as staging:
        DirectionSet(layers, vectors, metadata).save(staging / FILE_NAME)
        if shift is not None:
            shift_metadata = metadata | {"method": "fine-tune shift: fine-tuned minus base mean residual after each "
                                         "block, both poles' answers (response positions)",
                                         "finetuned_ref": config.finetuned}  # fmt: skip
            DirectionSet(layers, shift, shift_metadata).save(staging / SHIFT_FILE)
        artifacts.write_json(staging / "summary.json", summary)
    return summary


def random_cosine_p_value(cosine: float, dimensions: int, alternative: str = "two-sided") -> float:
    """p-value of ``cosine`` between a fixed vector and a uniformly random unit direction in ``dimensions``
    dimensions (cos^2 ~ Beta(1/2, (d - 1)/2), symmetric in sign) for ``alternative``."""
    two_sided = float(scipy_stats.beta.sf(cosine * cosine, 0.5, (dimensions - 1) / 2))
    if alternative == "two-sided":
        return two_sided
    towards = cosine > 0 if alternative == "greater" else cosine < 0
    return two_sided / 2 if towards else 1 - two_sided / 2


def shift_summary(shift_sums: torch.Tensor, counts: torch.Tensor, vectors: torch.Tensor, others: dict,
                  layers: list[int], alternative: str) -> dict:  # fmt: skip
    """Per layer: the fine-tune's shift projected on the unit persona vector (with a bootstrap interval over
    questions), its cosine with the vector against random directions (Holm over the layers), and its cosines with
    the other traits' vectors (those the dataset has both poles of; ``largest_of_the_traits`` is None without any)."""
    d_model = vectors.shape[1]
    units = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)
    projections = torch.einsum("qld,ld->ql", shift_sums, units.double()).numpy()  # [questions, L]
    shift = shift_sums.sum(0) / counts.sum()
    entries = []
    for slot, layer in enumerate(layers):
        cosine = float(torch.nn.functional.cosine_similarity(shift[slot].float(), vectors[slot], dim=0))
        entries.append({
            "layer": layer, "shift_norm": float(shift[slot].norm()),
            "projection": float(projections[:, slot].sum() / counts.sum()),
            "projection_ci95": significance.prompt_interval(
                significance.ratio_of_sums, [projections[:, slot], counts.numpy()]),
            "cosine": cosine, "p_value": random_cosine_p_value(cosine, d_model, alternative),
            "other_traits_cosine": {
                trait: float(torch.nn.functional.cosine_similarity(shift[slot].float(), other[slot], dim=0))
                for trait, other in others.items()
            },
        })  # fmt: skip
    for entry, adjusted in zip(entries, significance.holm([e["p_value"] for e in entries])):
        entry["p_value_adjusted"] = adjusted
        entry["significant"] = adjusted < significance.SIGNIFICANCE
        others_cosines = [abs(c) for c in entry["other_traits_cosine"].values()]
        entry["largest_of_the_traits"] = abs(entry["cosine"]) > max(others_cosines) if others_cosines else None
    return {
        "alternative": alternative,
        "questions": len(counts),
        "null": "uniformly random unit directions: cos^2 ~ Beta(1/2, (d - 1)/2) (scipy.stats.beta); Holm over layers",
        "layers": entries,
    }


def neuron_cosines(lm, neurons: list[tuple[int, int]], vectors: torch.Tensor, layers: list[int]) -> dict:
    """Per neuron: the cosine of its write direction (``residual_write_weight`` column) with the persona vector
    after its layer, its two-sided p-value against random directions, Holm-adjusted over the neurons; and the
    mean |cosine| a random direction would have."""
    rows = []
    for layer, index in neurons:
        write = lm.residual_write_weight(layer)[:, index].detach().float().cpu()
        cosine = float(torch.nn.functional.cosine_similarity(write, vectors[layers.index(layer)], dim=0))
        rows.append({"neuron": f"{layer}:{index}", "cosine": cosine,
                     "p_value": random_cosine_p_value(cosine, vectors.shape[1])})  # fmt: skip
    for row, adjusted in zip(rows, significance.holm([r["p_value"] for r in rows])):
        row["p_value_adjusted"] = adjusted
    expected = float(np.sqrt(2 / (np.pi * vectors.shape[1])))  # E|cos| of random directions, large d
    return {"neurons": rows, "random_direction_mean_abs_cosine": expected}
