"""Prompt sets (``--prompts``) and teacher-forced responses (``--responses``).

A prompt set is a ``.txt`` file (one user message per line), a ``.jsonl`` file (``{"prompt": ...}`` or
``{"messages": [...]}``, optionally ``"response"`` to teacher-force), the name of a built-in set
(``persona-demo``; files in ``probes/prompt_sets``), or ``PREFIX:...`` served by a package that declares a
``persona_interp.prompt_sets`` entry point named PREFIX (``opinionqa:test:extraversion`` comes from finetune/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from interp.errors import UserInputError
from interp.textfiles import jsonl_objects, lines, read_jsonl, read_text

BUILTIN_PACKAGE = "probes.prompt_sets"


@dataclass(frozen=True)
class Prompt:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs, the last one from the user
    response: str | None = None
    index: int = 0  # position in its prompt set; responses to one prompt share it

    @property
    def text(self) -> str:
        """The last user message (what identifies the prompt in outputs)."""
        return self.messages[-1][1]

    def as_chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


def builtin_prompt_sets() -> list[str]:
    return sorted(
        p.name.removesuffix(".txt") for p in resources.files(BUILTIN_PACKAGE).iterdir() if p.name.endswith(".txt")
    )


SLICE = re.compile(r"^(?P<spec>.+)\[(?P<start>-?\d*):(?P<stop>-?\d*)(?::(?P<step>-?\d*))?\]$")


def load_prompts(spec: str) -> list[Prompt]:
    """Load a prompt set from a file path or a built-in name; UserInputError on anything unusable.

    ``SPEC[start:stop:step]`` takes a Python slice of the set (``opinionqa:test[0::2]``: every other question);
    the prompts keep their index in the whole set, so responses and fingerprints still match."""
    match = SLICE.match(spec)
    if match and not Path(spec).exists():
        return _sliced(load_prompts(match["spec"]), match, spec)
    path = Path(spec)
    if not path.exists():
        provider = _provider(spec.split(":", 1)[0]) if ":" in spec else None
        if provider is not None:
            return provider(spec)
        if spec in builtin_prompt_sets():
            text = resources.files(BUILTIN_PACKAGE).joinpath(f"{spec}.txt").read_text(encoding="utf-8")
            return _parse_txt(text, spec)
        raise UserInputError(
            f"prompts {spec!r} is neither an existing file nor a built-in set ({', '.join(builtin_prompt_sets())})."
        )
    if path.is_dir():
        raise UserInputError(f"prompts {spec!r} is a directory; pass a .txt or .jsonl file.")
    text = read_text(path)
    prompts = _parse_jsonl(text, spec) if path.suffix == ".jsonl" else _parse_txt(text, spec)
    return prompts


def _sliced(prompts: list[Prompt], match: re.Match, spec: str) -> list[Prompt]:
    start, stop, step = (int(match[k]) if match[k] else None for k in ("start", "stop", "step"))
    if step == 0:
        raise UserInputError(f"prompts {spec!r}: a slice step cannot be 0.")
    chosen = prompts[slice(start, stop, step)]
    if not chosen:
        raise UserInputError(f"prompts {spec!r} selects no prompt (the set has {len(prompts)}).")
    return chosen


def _provider(prefix: str):
    """The prompt-set function a package registered for ``prefix`` (entry point group persona_interp.prompt_sets)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="persona_interp.prompt_sets"):
        if entry.name == prefix:
            return entry.load()
    return None


def _parse_txt(text: str, name: str) -> list[Prompt]:
    texts = [line.strip() for line in lines(text) if line.strip()]
    prompts = [Prompt(messages=(("user", line),), index=index) for index, line in enumerate(texts)]
    if not prompts:
        raise UserInputError(f"prompts {name!r} contains no prompts.")
    return prompts


def _parse_jsonl(text: str, name: str) -> list[Prompt]:
    prompts = [
        replace(_record_to_prompt(record, f"{name!r} line {number}"), index=index)
        for index, (number, record) in enumerate(jsonl_objects(text, name))
    ]
    if not prompts:
        raise UserInputError(f"prompts {name!r} contains no prompts.")
    return prompts


def _record_to_prompt(record, where: str) -> Prompt:
    response = record.get("response")
    if response is not None and not isinstance(response, str):
        raise UserInputError(f'{where}: "response" must be a string.')
    if isinstance(record.get("prompt"), str) and record["prompt"].strip():
        return Prompt(messages=(("user", record["prompt"]),), response=response)
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        pairs = []
        for message in messages:
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise UserInputError(f'{where}: every message needs string "role" and "content".')
            pairs.append((message["role"], message["content"]))
        if pairs[-1][0] != "user":
            raise UserInputError(f"{where}: the last message must come from the user.")
        return Prompt(messages=tuple(pairs), response=response)
    raise UserInputError(f'{where} has neither a non-empty "prompt" string nor a "messages" list.')


def attach_responses(prompts: list[Prompt], responses_file: str) -> list[Prompt]:
    """Pair prompts with responses from a JSONL file of ``{"prompt_index" | "prompt", "response"}`` records.

    A prompt may get several responses (one teacher-forced sequence each); prompts without one are dropped.
    ``prompt_index`` is the prompt's index in its whole set (``Prompt.index``); records of prompts outside a
    sliced set are skipped.
    """
    if not Path(responses_file).is_file():
        raise UserInputError(f"responses file {responses_file!r} does not exist.")
    by_text = {prompt.text: prompt for prompt in prompts}
    by_index = {prompt.index: prompt for prompt in prompts}
    paired = []
    for number, record in read_jsonl(responses_file):
        where = f"{responses_file!r} line {number}"
        if not isinstance(record.get("response"), str):
            raise UserInputError(f'{where} needs a string "response".')
        index = record.get("prompt_index")
        if index is None:
            prompt = by_text.get(record.get("prompt"))
        elif isinstance(index, int) and not isinstance(index, bool) and index >= 0:
            prompt = by_index.get(index)
            if prompt is None:  # a prompt outside this (sliced) set
                continue
        else:
            prompt = None
        if prompt is None:
            raise UserInputError(f'{where} matches no prompt (give "prompt_index" or the exact "prompt" text).')
        paired.append(replace(prompt, response=record["response"]))
    if not paired:
        raise UserInputError(f"responses file {responses_file!r} contains no responses.")
    return paired
