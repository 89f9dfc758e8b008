"""``interp steer``: steering along a residual direction as a manipulation method, tested like a neuron edit.

The tested condition adds ``coeff`` x the unit vector of a direction file's layer L (a persona vector, or any
``DirectionSet``) to the residual stream after decoder block L, at the response positions (or all positions),
for each coefficient of a dose curve. Its null: ``controls`` random unit directions (Gaussian, normalised; the
same directions for every coefficient), added with the same coefficient, so each control has the tested norm.
Everything else is ``interp ablate``'s (``interp.ablation``): the emoji-onset probability per prompt with a t
interval of the mean log ratio, the specificity and behavioural readouts, KL from the unedited model and
neutral-text perplexity as side effects, sampled answers, one comparison per coefficient against the null, each
claim Holm-adjusted across the coefficients. A coefficient of 0 is
the unedited model (its effect is exactly 0). The run directory holds ``steering.json`` (the report, shaped like
ablation.json) and ``generations.jsonl``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from interp import artifacts, models, significance
from interp.ablation import (
    PRIMARY_METRIC,
    CausalOptions,
    causal_prompts,
    condition_table,
    fixed_alternatives,
    measure_all,
    tested_comparisons,
    write_run,
)
from interp.directions import DirectionSet
from interp.distributed import Shards
from interp.errors import UserInputError, parse_floats
from interp.interventions import STEER, Condition, Steering

REPORT = "steering.json"


@dataclass(kw_only=True)
class SteerConfig(CausalOptions):
    model: str
    vector: str  # a direction file, or a persona-vector run directory
    layer: int
    coeffs: str = "4"  # comma-separated coefficients (residual-stream units); several give a dose curve


def parse_coeffs(text: str) -> list[float]:
    coeffs = parse_floats("--coeff", text)
    if len(set(coeffs)) != len(coeffs):
        raise UserInputError(f"--coeff {text!r} repeats a coefficient.")
    return coeffs


def parse_steering(text: str) -> tuple[str, int, float]:
    """``VECTOR:LAYER:COEFF`` (a direction file or persona-vector run directory, a layer, a coefficient)."""
    parts = text.rsplit(":", 2)
    try:
        if len(parts) != 3 or not parts[0]:
            raise ValueError
        layer, coeff = int(parts[1]), float(parts[2])
    except ValueError:
        raise UserInputError(f"steering {text!r} should look like VECTOR:LAYER:COEFF (e.g. runs/pv:20:8).") from None
    if not math.isfinite(coeff):
        raise UserInputError(f"steering {text!r}: the coefficient must be a finite number.")
    return parts[0], layer, coeff


def steering_condition(text: str, lm) -> Condition:
    """The condition that steers ``lm`` as ``VECTOR:LAYER:COEFF`` says (checked against the model)."""
    vector, layer, coeff = parse_steering(text)
    directions = DirectionSet.load(vector)
    directions.check_model(lm)
    return Condition(
        f"steered[{text}]", mode=STEER, kind="tested", steering=Steering(layer, directions.unit(layer), coeff)
    )


def random_directions(d_model: int, count: int, seed: int) -> torch.Tensor:
    """[count, d_model] unit vectors, uniform on the sphere (normalised Gaussians), from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(count, d_model, generator=generator, dtype=torch.float64)
    return (vectors / vectors.norm(dim=1, keepdim=True)).float()


def steering_conditions(layer: int, direction: torch.Tensor, coeffs: list[float], controls: torch.Tensor
                        ) -> list[Condition]:  # fmt: skip
    """The unedited model, then per coefficient the tested direction and each control direction."""
    conditions = [Condition("unedited", kind="baseline")]
    for coeff in coeffs:
        group = f"coeff={coeff:g}"
        conditions.append(Condition(f"tested[{group}]", mode=STEER, kind="tested", group=group,
                                    steering=Steering(layer, direction, coeff)))  # fmt: skip
        for number, control in enumerate(controls):
            conditions.append(Condition(f"direction{number:02d}[{group}]", mode=STEER, kind="direction", group=group,
                                        steering=Steering(layer, control, coeff)))  # fmt: skip
    return conditions


def run_steering(config: SteerConfig, log=print) -> dict | None:
    """Steer, measure and test every coefficient; rank 0 writes the run directory and returns the report."""
    coeffs = parse_coeffs(config.coeffs)
    config.check_causal_options()
    if config.alternative not in significance.ALTERNATIVES:
        raise UserInputError(
            f"--alternative must be one of {', '.join(significance.ALTERNATIVES)}, not {config.alternative!r}."
        )
    artifacts.check_run_dir(config.out)
    directions = DirectionSet.load(config.vector)
    shards = Shards.from_env(models.pick_device(config.device))
    if not shards.is_main:
        config = replace(config, show_progress=False)
    started = time.perf_counter()
    prompts = causal_prompts(config)
    lm = models.load(config.model, **config.load_options())
    config = replace(config, max_length=models.fit_max_length(lm.model.config, config.max_length, log))
    directions.check_model(lm)
    direction = directions.unit(config.layer)
    controls = random_directions(lm.d_model, config.controls, config.seed)
    conditions = steering_conditions(config.layer, direction, coeffs, controls)
    phases: dict[str, float] = {}
    metrics, generations, rates = measure_all(lm, None, conditions, prompts, config, shards, phases)
    if not shards.is_main:
        return None
    alternatives = fixed_alternatives(config.alternative, conditions)
    comparisons = tested_comparisons(conditions, metrics, alternatives, config.seed, subject="the tested direction",
                                     generations=generations, tokenizer=lm.tokenizer)  # fmt: skip
    report = {
        "command": "steer",
        "argv": sys.argv,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "model": {"ref": config.model, "fingerprint": lm.fingerprint()},
        "vector": {
            "file": str(config.vector),
            "layer": config.layer,
            "metadata": directions.metadata,
            "norm": float(directions.vector(config.layer).norm()),
        },  # fmt: skip
        "coeffs": coeffs,
        "primary_metric": PRIMARY_METRIC,
        "nulls": {
            "direction": {
                "description": "random unit directions (normalised Gaussians) with the tested "
                "coefficient: the same norm as the tested push"
            }
        },  # fmt: skip
        "comparisons": comparisons,
        "conditions": condition_table(conditions, metrics, rates),
        "timings": {**phases, "total_s": time.perf_counter() - started},
    }
    write_run(config.out, REPORT, report, generations)
    return report
