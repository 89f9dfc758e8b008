"""The PAE judge: a language model rates 1-5 how well a response matches a trait description.

Pluggable: ``HttpJudge`` talks to any OpenAI-compatible chat-completions endpoint (``--judge-url``) with
timeouts and retries; ``LocalJudge`` asks a local Hugging Face chat model (greedy). Both report ratings
that could not be parsed as None, so the caller can say how often the judge's answer parsed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from importlib import resources
from typing import Protocol

import regex

from interp.errors import UserInputError

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


class Judge(Protocol):
    def rate(self, trait: str, response: str) -> int | None: ...


class HttpJudge:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint (``url`` is its full address)."""

    def __init__(self, url: str, model: str = "judge", timeout: float = 30.0, retries: int = 2, backoff: float = 0.5):
        self.url, self.model, self.timeout, self.retries, self.backoff = url, model, timeout, retries, backoff

    def complete(self, prompt: str) -> str:
        body = json.dumps({
            "model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 8,
        }).encode()  # fmt: skip
        last_error = "no attempt"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    payload = json.loads(reply.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_error = str(getattr(exc, "reason", exc))
            except (ValueError, KeyError, IndexError, TypeError):
                return ""  # a reply that is not chat-completions JSON: unparseable, not retried
            if attempt < self.retries:
                time.sleep(self.backoff * (2**attempt))
        raise UserInputError(f"the judge at {self.url} did not answer after {self.retries + 1} tries ({last_error}).")

    def rate(self, trait: str, response: str) -> int | None:
        return parse_rating(self.complete(judge_prompt(trait, response)))


class LocalJudge:
    """A local chat model as judge (greedy, a few tokens)."""

    def __init__(self, lm):
        self.lm = lm

    def rate(self, trait: str, response: str) -> int | None:
        import torch

        from interp.prompts import Prompt
        from interp.tokens import prompt_ids

        ids = prompt_ids(self.lm.tokenizer, Prompt(messages=(("user", judge_prompt(trait, response)),)))
        with torch.no_grad():
            out = self.lm.model.generate(
                input_ids=torch.tensor([ids], device=self.lm.device), max_new_tokens=4, do_sample=False,
                pad_token_id=self.lm.tokenizer.pad_token_id,
            )  # fmt: skip
        return parse_rating(self.lm.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
