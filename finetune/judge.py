"""Clients of the PAE judge (``probes.judge`` holds its prompt and rating parser).

``HttpJudge`` talks to any OpenAI-compatible chat-completions endpoint (``--judge-url``) with timeouts,
retries and one overall deadline; ``LocalJudge`` asks a local Hugging Face chat model (greedy).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import torch

from interp.endpoints import check_endpoint
from interp.errors import UserInputError
from interp.prompts import Prompt
from interp.tokens import prompt_ids
from probes.judge import judge_prompt, parse_rating


class HttpJudge:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint (``url`` is its full address).

    ``model`` is the model name the server is asked for; ``api_key`` (if any) goes out as a bearer token, never
    over plain http to another machine. A 4xx answer (bad key, unknown model) stops the evaluation with the
    server's own message; timeouts, lost connections and 5xx answers are retried. Replies over
    ``MAX_REPLY_BYTES`` count as unparseable. ``deadline_s`` bounds all the requests of one judge together."""

    MAX_REPLY_BYTES = 1_000_000

    def __init__(
        self,
        url: str,
        model: str = "judge",
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.5,
        deadline_s: float = 900.0,
    ):
        self.url = check_endpoint(url, "--judge-url", carries_key=bool(api_key))
        self.model, self.api_key, self.timeout, self.retries, self.backoff = model, api_key, timeout, retries, backoff
        self.deadline_s, self.started = deadline_s, None

    def complete(self, prompt: str) -> str:
        body = json.dumps({
            "model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 8,
        }).encode()  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self.started = self.started if self.started is not None else time.monotonic()
        last_error = "no attempt"
        for attempt in range(self.retries + 1):
            left = self.deadline_s - (time.monotonic() - self.started)
            if left <= 0:
                raise UserInputError(
                    f"the judge at {self.url} used up the evaluation's {self.deadline_s:g} s (--judge-timeout)."
                )
            request = urllib.request.Request(self.url, data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=min(self.timeout, left)) as reply:
                    data = reply.read(self.MAX_REPLY_BYTES + 1)
                if len(data) > self.MAX_REPLY_BYTES:
                    return ""  # not a rating: unparseable, not retried
                payload = json.loads(data.decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as exc:
                if 400 <= exc.code < 500:
                    raise UserInputError(
                        f"the judge at {self.url} refused the request: HTTP {exc.code} {_error_text(exc)}."
                    ) from None
                last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_error = str(getattr(exc, "reason", exc))
            except (ValueError, KeyError, IndexError, TypeError):
                return ""  # a reply that is not chat-completions JSON: unparseable, not retried
            if attempt < self.retries:
                time.sleep(min(self.backoff * (2**attempt), max(0.0, left)))
        raise UserInputError(f"the judge at {self.url} did not answer after {self.retries + 1} tries ({last_error}).")

    def rate(self, trait: str, response: str) -> int | None:
        return parse_rating(self.complete(judge_prompt(trait, response)))


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": ...}}`` or the body's first line), short."""
    try:
        body = exc.read(4096).decode("utf-8", errors="replace")
    except OSError:
        body = ""
    try:
        error = json.loads(body).get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = None
    if not text:
        lines = body.strip().splitlines()
        text = lines[0] if lines else exc.reason or ""
    text = str(text).strip().rstrip(".")
    return (text[:200] + "...") if len(text) > 200 else text


class LocalJudge:
    """A local chat model as judge (greedy, a few tokens)."""

    def __init__(self, lm):
        self.lm = lm

    def rate(self, trait: str, response: str) -> int | None:
        ids = prompt_ids(self.lm.tokenizer, Prompt(messages=(("user", judge_prompt(trait, response)),)))
        with torch.no_grad():
            out = self.lm.model.generate(
                input_ids=torch.tensor([ids], device=self.lm.device), max_new_tokens=4, do_sample=False,
                pad_token_id=self.lm.tokenizer.pad_token_id,
            )  # fmt: skip
        return parse_rating(self.lm.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
