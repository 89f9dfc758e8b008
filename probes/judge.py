"""The PAE judge's question and how its answer is read: a language model rates 1-5 how well a response
matches a trait description. The clients that ask it (an HTTP endpoint, a local model) are in
``finetune.judge``; a rating that cannot be parsed is None, so callers can say how often the judge's answer parsed.
"""

from __future__ import annotations

import json
from importlib import resources

import regex

_RATING = regex.compile(r"(?<!\d)([1-5])(?!\d)")


def templates() -> dict:
    return json.loads(resources.files("probes").joinpath("prompt_templates.json").read_text(encoding="utf-8"))


def judge_prompt(trait: str, response: str) -> str:
    data = templates()
    return data["judge"].format(description=data["trait_descriptions"][trait], response=response)


def parse_rating(text: str) -> int | None:
    """The first standalone digit 1-5 in the judge's answer, or None."""
    match = _RATING.search(text or "")
    return int(match.group(1)) if match else None
