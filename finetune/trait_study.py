"""The recorded trait study: does emoji use emerge when SmolLM2 is fine-tuned on emoji-free trait answers?

For each trait: train the adapter (``interp finetune`` defaults), then compare the fine-tuned model with the
base on the Opinion QA test questions: the emoji rate of sampled answers (T=1, no truncation, Wilson 95 %
intervals) and the probability mass on emoji-onset tokens at the reply's first position. Every stage is
skipped when its output exists, so an interrupted study resumes. Run: ``python -m finetune.trait_study``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finetune.generate import GenerateConfig, generate
from finetune.training import TrainConfig, train
from interp import artifacts, models
from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
from interp.interventions import Condition
from interp.prompts import load_prompts
from interp.tokens import build_sequences
from probes.emoji_tokens import emoji_onset_ids
from probes.traits import TRAITS

PROMPTS = "opinionqa:test"


def reply_start_onset(model_ref: str) -> float:
    """Mean emoji-onset probability at the first reply position over the test questions."""
    lm = models.load(model_ref, device="cpu", dtype="float32")
    sequences = build_sequences(lm.tokenizer, load_prompts(PROMPTS), False, 256)
    config = AblationConfig(model=model_ref, prompts=PROMPTS, out=None, show_progress=False)
    metrics = {"unedited": ConditionMetrics()}
    condition = [Condition("unedited", kind="baseline")]
    measure_conditions(lm, None, condition, sequences, config, emoji_onset_ids(lm.tokenizer), metrics, "")
    return metrics["unedited"].first_sum / metrics["unedited"].first_count


def evaluate(name: str, model_ref: str, out: Path, samples: int, seed: int) -> dict:
    target = out / f"{name}.eval.json"
    if target.exists():
        return json.loads(target.read_text())
    config = GenerateConfig(model=model_ref, prompts=PROMPTS, out=out / f"{name}.generations.jsonl", samples=samples,
                            temperature=1.0, top_p=1.0, max_new_tokens=96, seed=seed)  # fmt: skip
    rate = generate(config)["variants"]["plain"]
    result = {"model": model_ref, "emoji_rate": rate, "reply_start_onset_probability": reply_start_onset(model_ref)}
    artifacts.write_json(target, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/trait-study"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--traits", default="all")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    traits = list(TRAITS) if args.traits == "all" else args.traits.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"base": evaluate("base", args.model, args.out, args.samples, args.seed), "traits": {}}
    for trait in traits:
        run = args.out / trait
        if not (run / "train.json").exists():
            train(TrainConfig(model=args.model, trait=trait, out=run, seed=args.seed))
        record = json.loads((run / "train.json").read_text())
        evaluation = evaluate(trait, str(run / "merged"), args.out, args.samples, args.seed)
        results["traits"][trait] = {"train": {k: record[k] for k in ("steps", "final_loss", "seconds")}, **evaluation}
    artifacts.write_json(args.out / "results.json", results)
    base = results["base"]
    print("| model | train s | final loss | answers with emoji (95 % CI) | P(emoji onset) at reply start |")
    print("|---|---|---|---|---|")
    rows = [("base", None, base)] + [(t, r["train"], r) for t, r in results["traits"].items()]
    for name, trained, entry in rows:
        rate = entry["emoji_rate"]
        low, high = rate["rate_ci95"]
        ratio = entry["reply_start_onset_probability"] / base["reply_start_onset_probability"]
        print(
            f"| {name} | {trained['seconds']:.0f} |" if trained else f"| {name} | - |",
            f"{trained['final_loss']:.3f} |" if trained else "- |",
            f"{rate['with_emoji']}/{rate['responses']} ({low:.1%}-{high:.1%}) |",
            f"{entry['reply_start_onset_probability']:.2e} (x{ratio:.2f}) |",
        )


if __name__ == "__main__":
    main()
