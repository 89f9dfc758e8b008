"""IKE (in-context editing): the trait asked for with K demonstrations in the prompt instead of fine-tuning.

The paper blames IKE's weaker results on prompt sensitivity; to measure it, each *variant* combines one of
several prompt templates with its own choice and order of demonstrations (variant v: template v mod 3,
demonstrations drawn with seed + v). The spread of a metric across variants is the sensitivity.
"""

from __future__ import annotations

import random

from finetune.dataset import OpinionRow
from interp.prompts import Prompt

TEMPLATES = ("chat-turns", "instruction", "system-examples")


def demonstrations(rows: list[OpinionRow], k: int, variant: int, seed: int) -> list[OpinionRow]:
    """K training rows (one trait and pole), chosen and ordered by the variant's own seed."""
    return random.Random(seed + variant).sample(rows, min(k, len(rows)))


def ike_prompt(prompt: Prompt, demos: list[OpinionRow], variant: int) -> Prompt:
    """``prompt`` with the demonstrations put in front in the variant's template."""
    question = prompt.text
    template = TEMPLATES[variant % len(TEMPLATES)]
    if template == "chat-turns":
        turns: list[tuple[str, str]] = []
        for demo in demos:
            turns += [("user", demo.question), ("assistant", demo.answer)]
        return Prompt(messages=(*turns, ("user", question)), index=prompt.index)
    examples = "\n\n".join(f"Q: {demo.question}\nA: {demo.answer}" for demo in demos)
    if template == "instruction":
        text = (
            f"Here is how you answer questions:\n\n{examples}\n\n"
            f"Answer the next question in the same way.\nQ: {question}"
        )
        return Prompt(messages=(("user", text),), index=prompt.index)
    system = f"You always answer in the voice of these examples.\n\n{examples}"
    return Prompt(messages=(("system", system), ("user", question)), index=prompt.index)
