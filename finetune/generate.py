"""``interp generate``: sampled responses for a prompt set, batched and reproducible, with emojis recorded.

With ``ike`` > 0 every prompt is wrapped in K demonstrations of the target trait (``finetune.ike``), once
per variant; each record names its variant and template so prompt sensitivity can be measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from finetune.dataset import check_trait, load_rows, select
from finetune.ike import TEMPLATES, demonstrations, ike_prompt
from interp import artifacts, models
from interp.errors import UserInputError, check_at_least
from interp.generation import SAMPLING_ROWS, UNEDITED, StepObserver, sample_sequences
from interp.prompts import load_prompts
from interp.run_options import RunOptions, SamplingOptions
from interp.steering import parse_steering, steering_condition
from interp.tokens import Sequence
from probes.emoji import find_emojis
from probes.metrics import emoji_rate


@dataclass(kw_only=True)
class GenerateConfig(RunOptions, SamplingOptions):
    model: str
    prompts: str
    out: Path  # a .jsonl file
    samples: int = 3
    max_new_tokens: int = 96
    batch_size: int = SAMPLING_ROWS  # answers sampled together (answers do not depend on it)
    ike: int = 0
    ike_variants: int = 1
    trait: str | None = None  # the trait IKE demonstrates
    pole: str = "high"
    dataset: str | None = None
    limit: int | None = None  # only the first N prompts
    steer: str | None = None  # VECTOR:LAYER:COEFF: answer while steered (interp.steering.parse_steering)


def validate(config: GenerateConfig) -> None:
    config.check_sampling(least_samples=1)
    check_at_least("--batch-size", config.batch_size, 1)
    check_at_least("--limit", config.limit, 1)
    if config.ike < 0 or config.ike_variants < 1:
        raise UserInputError("--ike must be 0 or more and --ike-variants at least 1.")
    if config.ike and not config.trait:
        raise UserInputError("--ike needs --trait (which trait the demonstrations show).")
    if config.trait:
        check_trait(config.trait)
    if config.steer:
        parse_steering(config.steer)
    out = Path(config.out)
    if out.suffix != ".jsonl":
        raise UserInputError(f"--out {str(out)!r} should be a .jsonl file.")
    artifacts.check_output_dir(out.parent)


def generate(config: GenerateConfig, log=print, lm=None) -> dict:
    """Write the generations to ``config.out`` and return a summary (emoji rate per variant)."""
    validate(config)
    lm = lm or models.load(config.model, **config.load_options())
    records, _, summary = sample_answers(config, lm)
    Path(config.out).parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(Path(config.out), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return summary


def sample_answers(
    config: GenerateConfig, lm, observe: StepObserver | None = None
) -> tuple[list[dict], list[Sequence], dict]:
    """(one record per answer, the answers as prompt + response token sequences under the prompts the model saw,
    the summary): what ``generate`` writes, for callers that measure the answers further, also while they are
    sampled (``observe``: see ``interp.generation.generate_edited``; answers numbered as the sequences)."""
    prompts = load_prompts(config.prompts)[: config.limit]
    demo_rows = select(load_rows(config.dataset), config.trait, config.pole, "train") if config.ike else []
    variants = range(config.ike_variants) if config.ike else [None]
    records, summary = [], {"model": config.model, "prompts": config.prompts, "steer": config.steer, "variants": {}}
    by_index = {p.index: p for p in prompts}
    shown_sets = []  # (variant, the prompts as the model sees them)
    for variant in variants:
        shown = prompts
        if variant is not None:
            demos = demonstrations(demo_rows, config.ike, variant, config.seed)
            shown = [ike_prompt(p, demos, variant) for p in prompts]
        shown_sets.append((variant, shown))
    everything = [p for _, shown in shown_sets for p in shown]  # all variants sampled together
    condition = steering_condition(config.steer, lm) if config.steer else UNEDITED
    per_variant = len(prompts) * config.samples
    batch_size = config.batch_size
    if config.ike and per_variant < batch_size:  # whole variants per batch: their demonstrations run once per batch
        batch_size -= batch_size % per_variant
    sequences = sample_sequences(lm, everything, config, config.raw, 10**9, batch_size, config.show_progress,
                                 condition=condition, observe=observe)  # fmt: skip
    for number, (variant, _) in enumerate(shown_sets):
        texts = []
        for answer, seq in enumerate(sequences[number * per_variant : (number + 1) * per_variant]):
            text = lm.tokenizer.decode(seq.ids[seq.response_start :], skip_special_tokens=True)
            texts.append(text)
            records.append({
                "prompt_index": seq.prompt_index, "prompt": by_index[seq.prompt_index].text,
                "sample": answer % config.samples, "variant": variant,
                "template": TEMPLATES[variant % len(TEMPLATES)] if variant is not None else None,
                "response": text, "emojis": [m.text for m in find_emojis(text)],
            })  # fmt: skip
        summary["variants"][str(variant) if variant is not None else "plain"] = emoji_rate(texts).as_dict()
    return records, sequences, summary
