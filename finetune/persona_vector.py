"""``interp persona-vector``: per-layer trait directions (the persona vectors of Chen et al. 2025) from Opinion QA.

For every training question of the trait, each pole's packaged answer is teacher-forced under that pole's
instruction as the system message (``instruction``); the direction of layer L is the mean residual activation
after block L over the high pole's response positions minus the same mean over the low pole's (positions that
predict an answer token, as ``--positions response`` counts them). Teacher-forcing the dataset's answers replaces
Chen et al.'s generate-then-filter step: the answers were written to express their pole, nothing is sampled, and
the vectors are deterministic. ``--no-instruction`` drops the instructions (the answers alone differ).

Stability: the same vectors from the even- and from the odd-numbered questions, and their cosine per layer.
Scale: the residual stream's root-mean-square norm per layer (over both poles' counted positions), so a steering
coefficient can be read as a share of it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from finetune.dataset import POLES, SPLITS, check_trait, data_hash, load_rows, select
from interp import artifacts, models
from interp.directions import FILE_NAME, DirectionSet, residual_means
from interp.errors import UserInputError, check_at_least
from interp.layers import parse_layers
from interp.progress import track
from interp.prompts import Prompt
from interp.run_options import RunOptions
from interp.selection import prompt_fingerprints
from interp.stats import NeuronStats
from interp.tokens import build_sequences, make_batches, position_mask


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


def instruction(trait: str, pole: str) -> str:
    """The system message that asks for one pole of a trait."""
    return f"You are a person who is very {pole} in {trait}. Answer every question in character."


def pole_prompts(config: PersonaVectorConfig) -> dict[str, list[Prompt]]:
    """pole -> the prompts (question with the pole's answer as the response) of the questions both poles answer."""
    check_trait(config.trait)
    if config.split not in SPLITS:
        raise UserInputError(f"--split must be one of {', '.join(SPLITS)}, not {config.split!r}.")
    rows = load_rows(config.dataset)
    answers = {pole: {r.question: r.answer for r in select(rows, config.trait, pole, config.split)} for pole in POLES}
    questions = [q for q in answers["high"] if q in answers["low"]]
    if not questions:
        raise UserInputError(f"the dataset has no {config.split} question with answers of both {config.trait} poles.")
    prompts = {}
    for pole in POLES:
        system = (("system", instruction(config.trait, pole)),) if config.instruction else ()
        prompts[pole] = [Prompt(messages=(*system, ("user", q)), response=answers[pole][q], index=i)
                         for i, q in enumerate(questions)]  # fmt: skip
    return prompts


def run_persona_vector(config: PersonaVectorConfig, log=print) -> dict:
    """Compute the trait's per-layer directions and write ``persona_vector.safetensors`` and ``summary.json``."""
    check_at_least("--batch-size", config.batch_size, 1)
    prompts = pole_prompts(config)
    artifacts.check_run_dir(config.out)
    started = time.perf_counter()
    lm = models.load(config.model, **config.load_options())
    layers = parse_layers(config.layers, lm.n_layers)
    max_length = models.fit_max_length(lm.model.config, config.max_length, log)
    stats: dict[tuple[str, int], NeuronStats] = {}  # (pole, half) -> residual statistics
    for pole, pole_set in prompts.items():
        for half in (0, 1):
            chosen = pole_set[half::2]
            sequences = build_sequences(lm.tokenizer, chosen, config.raw, max_length)
            masks = [position_mask(sequence, "response", []) for sequence in sequences]
            batches = make_batches(sequences, masks, config.batch_size, lm.tokenizer.pad_token_id)
            label = f"{pole} pole, {'even' if half == 0 else 'odd'} questions"
            stats[pole, half] = residual_means(lm, batches, layers, lambda b, label=label: track(
                b, label, enabled=config.show_progress))  # fmt: skip
    pooled = {pole: stats[pole, 0].merge(stats[pole, 1]) for pole in POLES}
    vectors = (pooled["high"].mean - pooled["low"].mean).float()
    halves = [(stats["high", h].mean - stats["low", h].mean).float() for h in (0, 1)]
    split_half = torch.nn.functional.cosine_similarity(halves[0], halves[1], dim=1)
    both = pooled["high"].merge(pooled["low"])
    residual_rms = (both.mean.pow(2) + both.m2 / both.count.unsqueeze(1)).sum(1).sqrt()
    metadata = {
        "method": "persona-vector: mean residual after each block, high-pole minus low-pole answers (response "
        "positions)", "trait": config.trait, "model_ref": config.model, "model_fingerprint": lm.fingerprint(),
    }  # fmt: skip
    summary = {
        "command": "persona-vector",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "model": {"ref": config.model, "fingerprint": lm.fingerprint()},
        "trait": config.trait,
        "instructions": {pole: instruction(config.trait, pole) if config.instruction else None for pole in POLES},
        "questions": len(prompts["high"]),
        "data_hash": data_hash(load_rows(config.dataset)),
        "prompt_fingerprints": prompt_fingerprints([p for pole in POLES for p in prompts[pole]]),
        "positions": {pole: int(pooled[pole].count[0]) for pole in POLES},
        "layers": [
            {
                "layer": layer,
                "norm": float(vectors[slot].norm()),
                "residual_rms": float(residual_rms[slot]),
                "split_half_cosine": float(split_half[slot]),
            }
            for slot, layer in enumerate(layers)
        ],  # fmt: skip
        "timings": {"total_s": time.perf_counter() - started},
    }
    with artifacts.staged_run_dir(config.out) as staging:
        DirectionSet(layers, vectors, metadata).save(staging / FILE_NAME)
        artifacts.write_json(staging / "summary.json", summary)
    return summary
