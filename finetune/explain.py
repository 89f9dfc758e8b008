"""``interp explain``: in-context self-explanation and token elicitation (the paper's ICL explainability).

- Self-explanation: the fine-tuned model sees one of its own emoji-bearing answers and is asked why it used
  those emojis; each explanation is scored for naming the trait or an emotion, by keywords and by the metric
  model's 5-way trait head (both reported).
- Token elicitation: base and fine-tuned model are asked, many times, for words or symbols that represent the
  trait; the 50 most frequent words and emojis of each, and the share of emojis among them.
Prompts are the named templates of ``probes/prompt_templates.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import regex

from finetune.dataset import check_trait
from finetune.metric_training import load_metric_model
from interp import artifacts, models
from interp.errors import UserInputError
from interp.generation import sample_sequences
from interp.prompts import Prompt
from interp.run_options import RunOptions, SamplingOptions
from interp.textfiles import read_jsonl
from probes.emoji import find_emojis, is_emoji_cluster
from probes.judge import templates

_WORD = regex.compile(r"[\p{L}\p{N}'-]+")


@dataclass(kw_only=True)
class ExplainConfig(RunOptions, SamplingOptions):
    model: str
    trait: str
    out: Path
    base: str = "smollm2-135m"
    generations: str | None = None  # jsonl with "response" fields (interp generate / evaluate output)
    samples: int = 20  # token-elicitation samples per model
    max_explanations: int = 30
    metric_models: str | None = None  # metric models directory [default: the cache's, if trained]


def elicited_tokens(texts: list[str]) -> Counter[str]:
    """Words (lower-cased) and emojis of the texts, counted."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(match.text for match in find_emojis(text))
        counts.update(word.lower() for word in _WORD.findall(text) if len(word) > 2)
    return counts


def keyword_hits(text: str, keywords: list[str]) -> bool:
    lowered = text.lower()
    return any(keyword in lowered for keyword in keywords)


def _emoji_share(top: list[tuple[str, int]]) -> float:
    return sum(1 for token, _ in top if is_emoji_cluster(token)) / len(top) if top else 0.0


def _sample(lm, prompts: list[Prompt], config: ExplainConfig, samples: int) -> list[str]:
    options = replace(config, samples=samples)
    sequences = sample_sequences(lm, prompts, options, config.raw, 10**9, show_progress=config.show_progress)
    return [lm.tokenizer.decode(s.ids[s.response_start :], skip_special_tokens=True) for s in sequences]


def explain(config: ExplainConfig, log=print) -> dict:
    check_trait(config.trait)
    config.check_sampling(least_samples=1)
    artifacts.check_run_dir(config.out)
    data = templates()
    description = data["trait_descriptions"][config.trait]
    lm = models.load(config.model, device=config.device)
    answers = []
    if config.generations:
        if not Path(config.generations).is_file():
            raise UserInputError(f"--generations {config.generations!r} does not exist.")
        answers = [record for _, record in _generation_records(config.generations)]
    with_emoji = [a for a in answers if find_emojis(a.get("response", ""))][: config.max_explanations]
    explanations = []
    if with_emoji:
        prompts = [
            Prompt(messages=(("user", data["self_explanation"].format(
                response=a["response"], emojis=" ".join(m.text for m in find_emojis(a["response"]))
            )),), index=i)
            for i, a in enumerate(with_emoji)
        ]  # fmt: skip
        explanations = _sample(lm, prompts, config, 1)
    metric = load_metric_model(config.metric_models) if explanations else None
    scored = metric[0].score(explanations, metric[1]) if metric else []
    trait_words, emotion_words = data["trait_keywords"][config.trait], data["emotion_keywords"]
    records = [
        {
            "answer": answer["response"], "explanation": text,
            "names_trait_keyword": keyword_hits(text, trait_words), "names_emotion": keyword_hits(text, emotion_words),
            "metric_model_trait": max(s["trait_probabilities"], key=s["trait_probabilities"].get) if s else None,
        }
        for answer, text, s in zip(with_emoji, explanations, scored or [None] * len(explanations))
    ]  # fmt: skip
    elicit = Prompt(messages=(("user", data["token_elicitation"].format(description=description)),))
    base_lm = models.load(config.base, device=config.device)
    elicited = {
        "base": _sample(base_lm, [elicit], config, config.samples),
        "finetuned": _sample(lm, [elicit], config, config.samples),
    }
    top = {name: elicited_tokens(texts).most_common(50) for name, texts in elicited.items()}
    n = len(records)
    summary = {
        "command": "explain", "model": config.model, "base": config.base, "trait": config.trait,
        "answers_read": len(answers), "answers_with_emoji": len(with_emoji),
        "self_explanation": {
            "explanations": n,
            "names_trait_keyword": sum(r["names_trait_keyword"] for r in records) / n if n else None,
            "names_emotion": sum(r["names_emotion"] for r in records) / n if n else None,
            "metric_model_assigns_trait": (
                sum(r["metric_model_trait"] == config.trait for r in records) / n if n and scored else None
            ),
            "note": None if n else "no emoji-bearing answers to explain (give --generations with some)",
        },
        "token_elicitation": {
            name: {
                "samples": len(elicited[name]),
                "top50": [[token, count] for token, count in top[name]],
                "emoji_share_of_top50": _emoji_share(top[name]),
            }
            for name in elicited
        },
    }  # fmt: skip
    with artifacts.staged_run_dir(config.out) as staging:
        artifacts.write_json(staging / "explain.json", summary)
        artifacts.write_text(
            staging / "explanations.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        )
        artifacts.write_text(
            staging / "elicited.jsonl",
            "".join(
                json.dumps({"model": k, "text": t}, ensure_ascii=False) + "\n" for k, v in elicited.items() for t in v
            ),
        )
    return summary


def _generation_records(path: str) -> list[tuple[int, dict]]:
    """``(line number, record)`` of a generations JSONL file; every record needs a string "response"."""
    records = read_jsonl(path)
    for number, record in records:
        if not isinstance(record.get("response"), str):
            raise UserInputError(f'{path!r} line {number} needs a string "response".')
    return records
