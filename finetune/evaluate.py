"""``interp evaluate``: one table comparing models (base, PEFT, IKE, MEND, steered) per trait on the Opinion QA
test questions.

Per model and trait: ESR (share of answers with an emoji, Wilson 95 % interval), emojis per answer and the most
used emojis; TA (share of answers the metric model assigns to the target trait, with its Wilson 95 % interval,
and the mean probability of the trait's high pole); PAE (judge rating of the model's answers minus the base
model's, when a judge is given, with how often the judge's answer parsed); perplexity of the answers under the
base model (a coherence guard: gibberish must not score well); the emoji-onset probability per position of the
model's own answers (read while it sampled them, under the prompt and steering it answered with), with a 95 % bootstrap
interval over questions; for IKE, the spread of ESR and TA across prompt variants. Models: base, PEFT (a merged
adapter), IKE (``REF:K``), steered (``REF:VECTOR:LAYER:COEFF``), MEND (an ``interp edit`` model's ``merged``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from finetune.dataset import check_trait
from finetune.generate import GenerateConfig, sample_answers
from interp import artifacts, models
from interp.ablation import ConditionMetrics, forced_batch
from interp.errors import UserInputError
from interp.next_token import NextTokenReader, log_z_and_mass_in_place
from interp.prompts import Prompt
from interp.run_options import RunOptions, SamplingOptions
from interp.significance import prompt_interval, ratio_of_sums
from interp.tokens import Sequence, build_sequences
from probes.emoji import emoji_counter
from probes.emoji_tokens import emoji_onset_ids
from probes.metrics import emoji_rate, wilson_interval

PROMPTS = "opinionqa:test"
COLUMNS = (
    "model", "trait", "responses", "esr", "esr_ci_low", "esr_ci_high", "emojis_per_response", "top_emojis", "ta",
    "ta_ci_low", "ta_ci_high", "high_pole_probability", "pae", "judge_parse_rate", "perplexity", "ike_esr_spread",
    "ike_ta_spread", "emoji_onset", "emoji_onset_ci_low", "emoji_onset_ci_high",
)  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    name: str
    ref: str  # may contain {trait}
    ike: int = 0  # demonstrations, for in-context editing
    steer: str | None = None  # VECTOR:LAYER:COEFF: the model answers while steered


SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_models(text: str) -> list[ModelSpec]:
    """``base=REF,peft=runs/{trait}/merged,ike=REF:4,steer=REF:VECTOR:LAYER:COEFF`` -> specs (a trailing :K gives
    K IKE demonstrations; a trailing VECTOR:LAYER:COEFF steers REF along that direction, ``interp steer``)."""
    specs = []
    for part in text.split(","):
        name, sep, ref = part.partition("=")
        if not sep or not name.strip() or not ref.strip():
            raise UserInputError(f"--models entry {part!r} should look like NAME=REF (IKE: NAME=REF:K).")
        if not SAFE_NAME.fullmatch(name.strip()):
            raise UserInputError(
                f"--models name {name.strip()!r} becomes a file name: use only letters, digits, '-' and '_'."
            )
        steered = _steered(ref)
        if steered is not None:
            specs.append(ModelSpec(name.strip(), *steered))
            continue
        head, colon, tail = ref.rpartition(":")
        ike = int(tail) if colon and tail.isdigit() else 0
        specs.append(ModelSpec(name.strip(), head if ike else ref, ike))
    return specs


def _steered(ref: str) -> tuple[str, int, str] | None:
    """(model, 0, VECTOR:LAYER:COEFF) when ``ref`` ends in a steering (an integer layer, then a number)."""
    parts = ref.rsplit(":", 3)
    if len(parts) != 4 or not parts[0] or not parts[1]:
        return None
    try:
        int(parts[2]), float(parts[3])
    except ValueError:
        return None
    return parts[0], 0, ":".join(parts[1:])


@dataclass(kw_only=True)
class EvaluateConfig(RunOptions, SamplingOptions):
    models: str
    trait: str
    out: Path
    samples: int = 3  # answers per test question
    max_new_tokens: int = 96
    ike_variants: int = 3
    base: str | None = None  # reference model for perplexity and PAE (default: the spec named base)
    judge_url: str | None = None
    judge_name: str = "judge"  # the model name the judge server is asked for
    judge_key_env: str = "JUDGE_API_KEY"  # environment variable holding the judge's API key (sent if set)
    judge_timeout: float = 900.0  # seconds for all of one evaluation's judge requests together
    judge_model: str | None = None
    metric_models: str | None = None
    questions: int | None = None  # only the first N test questions


def response_perplexity(lm, prompts: list[Prompt], responses: list[str], batch_size: int = 8) -> float:
    """exp(mean token NLL) of the responses under ``lm``, teacher-forced after their prompts."""
    paired = [Prompt(messages=p.messages, response=r, index=i) for i, (p, r) in enumerate(zip(prompts, responses))]
    sequences = build_sequences(lm.tokenizer, paired, False, 512)
    reader = NextTokenReader(lm, [])
    total, count = 0.0, 0
    for begin in range(0, len(sequences), batch_size):
        ids, attention, measured, _, _ = forced_batch(
            sequences[begin : begin + batch_size], lm.tokenizer.pad_token_id, "response"
        )
        with torch.no_grad():
            hidden = lm.model.base_model(input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device))
        targets = ids[:, 1:][measured[:, :-1]]  # each measured position predicts the next token
        total += float(reader.nll(hidden.last_hidden_state[measured.to(lm.device)][None], targets)[0])
        count += len(targets)
    return math.exp(total / count) if count else float("nan")


def trait_scores(metric, texts: list[str], trait: str) -> tuple[list[bool], list[float]]:
    """Per answer: does the metric model read ``trait`` as its most likely trait (TA), and its probability of
    the trait's high pole."""
    model, encoder = metric
    scored = model.score(texts, encoder) if texts else []
    hits = [max(s["trait_probabilities"], key=s["trait_probabilities"].get) == trait for s in scored]
    return hits, [s["high_pole_probability"][trait] for s in scored]


class SampledOnset:
    """The emoji-onset probability per response position of a model's own answers, read from the next-token
    distributions it sampled them from (``observe`` for ``sample_answers``): what teacher-forcing the answers under
    the prompts and steering they were sampled with would read (tests/unit/test_finetune.py), without a second pass
    over them. One condition per decoding loop: row ``r`` of a batch is answer ``first + r``."""

    def __init__(self, onset_ids: list[int]) -> None:
        self.onset_ids = torch.tensor(onset_ids, dtype=torch.long)
        self.sums: dict[int, float] = {}  # answer number -> its positions' summed onset probability
        self.counts: dict[int, int] = {}  # answer number -> its positions (reply tokens)

    def observe(self, first: int, logits: torch.Tensor, emitting: torch.Tensor) -> None:
        rows = emitting.nonzero().squeeze(1)
        _, mass = log_z_and_mass_in_place(logits[rows], self.onset_ids)
        for row, value in zip(rows.tolist(), mass.tolist()):
            self.sums[first + row] = self.sums.get(first + row, 0.0) + value
            self.counts[first + row] = self.counts.get(first + row, 0) + 1

    def pooled(self, sequences: list[Sequence]) -> tuple[float | None, tuple[float, float] | None]:
        """(the onset probability pooled over the answers ``sequences``' positions; its 95 % bootstrap interval
        over questions), or (None, None) without a position."""
        metrics = ConditionMetrics()
        for number, sequence in enumerate(sequences):
            metrics.fold_prompt(sequence.prompt_index, self.sums.get(number, 0.0), self.counts.get(number, 0))
        sums, counts = metrics.per_prompt(sorted(metrics.by_prompt))
        if not counts.sum():
            return None, None
        return float(ratio_of_sums(sums, counts)), prompt_interval(ratio_of_sums, [sums, counts])


def evaluate(config: EvaluateConfig, log=print) -> list[dict]:
    from finetune.judge import HttpJudge, LocalJudge
    from finetune.metric_training import ensure_metric_model

    specs = parse_models(config.models)
    traits = check_trait(config.trait, allow_all=True)
    config.check_sampling(least_samples=1)
    artifacts.check_run_dir(config.out)
    judge = None
    if config.judge_url:  # checked before any model loads
        judge = HttpJudge(config.judge_url, model=config.judge_name, api_key=os.environ.get(config.judge_key_env),
                          deadline_s=config.judge_timeout)  # fmt: skip
    base_spec = next((s for s in specs if s.name == "base"), specs[0])
    base_ref = config.base or base_spec.ref
    metric = ensure_metric_model(config.metric_models, log, config.show_progress)
    base_lm = models.load(base_ref, device=config.device, dtype="float32")
    if config.judge_model and judge is None:
        judge = LocalJudge(models.load(config.judge_model, device=config.device))
    rows: list[dict] = []
    with artifacts.staged_run_dir(config.out) as staging:
        for trait in traits:
            base_rating = None
            for spec in [base_spec] + [s for s in specs if s is not base_spec]:
                row = _evaluate_one(spec, trait, config, staging, metric, base_lm, judge, log)
                if spec is base_spec:
                    base_rating = row.pop("_rating")
                else:
                    rating = row.pop("_rating")
                    row["pae"] = rating - base_rating if None not in (rating, base_rating) else None
                rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in COLUMNS})
        artifacts.write_text(staging / "table.csv", buffer.getvalue())
        artifacts.write_json(staging / "table.json", {"columns": list(COLUMNS), "rows": rows})
    return rows


def _evaluate_one(
    spec: ModelSpec, trait: str, config: EvaluateConfig, staging: Path, metric, base_lm, judge, log
) -> dict:
    ref = spec.ref.format(trait=trait)
    generations = staging / f"{spec.name}.{trait}.generations.jsonl"
    gen_config = GenerateConfig(
        model=ref, prompts=PROMPTS, out=generations, **config.sampling_options(), ike=spec.ike,
        ike_variants=config.ike_variants if spec.ike else 1,
        trait=trait if spec.ike else None, device=config.device, show_progress=config.show_progress,
        limit=config.questions, steer=spec.steer.format(trait=trait) if spec.steer else None,
    )  # fmt: skip
    lm = models.load(ref, **gen_config.load_options())
    onset = SampledOnset(emoji_onset_ids(lm.tokenizer))
    records, sequences, summary = sample_answers(gen_config, lm, onset.observe)
    artifacts.write_text(generations, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    texts = [r["response"] for r in records]
    target_share, high_pole = trait_scores(metric, texts, trait)
    rate = emoji_rate(texts).as_dict()
    row = {
        "model": spec.name, "trait": trait, "responses": len(texts), "esr": rate["rate"],
        "esr_ci_low": rate["rate_ci95"][0], "esr_ci_high": rate["rate_ci95"][1],
        "emojis_per_response": rate["emojis_per_response"],
        "top_emojis": " ".join(f"{e}x{n}" for e, n in emoji_counter(texts).most_common(5)),
        "ta": statistics.fmean(target_share) if target_share else None,
        **dict(zip(("ta_ci_low", "ta_ci_high"), wilson_interval(sum(target_share), len(target_share)))),
        "high_pole_probability": statistics.fmean(high_pole) if high_pole else None,
    }  # fmt: skip
    prompts = {p.index: p for p in _test_prompts()}
    row["perplexity"] = response_perplexity(base_lm, [prompts[r["prompt_index"]] for r in records], texts)
    row["emoji_onset"], interval = onset.pooled(sequences)
    row["emoji_onset_ci_low"], row["emoji_onset_ci_high"] = interval or (None, None)
    if spec.ike and len(summary["variants"]) > 1:
        by_variant: dict = {}
        for record, hit in zip(records, target_share):
            by_variant.setdefault(record["variant"], []).append((bool(record["emojis"]), hit))
        esr = [sum(e for e, _ in v) / len(v) for v in by_variant.values()]
        ta = [sum(h for _, h in v) / len(v) for v in by_variant.values()]
        row["ike_esr_spread"], row["ike_ta_spread"] = max(esr) - min(esr), max(ta) - min(ta)
    row["_rating"] = None
    if judge is not None:
        ratings = [judge.rate(trait, text) for text in texts]
        parsed = [r for r in ratings if r is not None]
        row["judge_parse_rate"] = len(parsed) / len(ratings) if ratings else None
        row["_rating"] = statistics.fmean(parsed) if parsed else None
    return row


def _test_prompts() -> list[Prompt]:
    from interp.prompts import load_prompts

    return load_prompts(PROMPTS)


def format_table(rows: list[dict]) -> str:
    shown = ("model", "trait", "esr", "emojis_per_response", "ta", "high_pole_probability", "pae", "perplexity")
    lines = [" | ".join(shown)]
    for row in rows:
        lines.append(" | ".join(_cell(row.get(c)) for c in shown))
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
