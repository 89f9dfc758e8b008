"""Prompt sets (``--prompts``) and teacher-forced responses (``--responses``).

A prompt set is a ``.txt`` file (one user message per line), a ``.jsonl`` file (``{"prompt": ...}`` or
``{"messages": [...]}``, optionally ``"response"`` to teacher-force), the name of a built-in set
(``persona-demo``; files in ``probes/prompt_sets``), or ``PREFIX:...`` served by a package that declares a
``persona_interp.prompt_sets`` entry point named PREFIX (``opinionqa:test:extraversion`` comes from finetune/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from interp.errors import UserInputError

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


def load_prompts(spec: str) -> list[Prompt]:
    """Load a prompt set from a file path or a built-in name; UserInputError on anything unusable."""
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
    text = _read_utf8(path)
    prompts = _parse_jsonl(text, spec) if path.suffix == ".jsonl" else _parse_txt(text, spec)
    return prompts


def _provider(prefix: str):
    """The prompt-set function a package registered for ``prefix`` (entry point group persona_interp.prompt_sets)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="persona_interp.prompt_sets"):
        if entry.name == prefix:
            return entry.load()
    return None


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{str(path)!r} is not valid UTF-8 (byte {exc.start}).") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {str(path)!r}: {exc.strerror}.") from None


def _parse_txt(text: str, name: str) -> list[Prompt]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    prompts = [Prompt(messages=(("user", line),), index=index) for index, line in enumerate(lines)]
    if not prompts:
        raise UserInputError(f"prompts {name!r} contains no prompts.")
    return prompts


def _parse_jsonl(text: str, name: str) -> list[Prompt]:
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserInputError(f"{name!r} line {number} is not valid JSON.") from None
        prompt = _record_to_prompt(record, f"{name!r} line {number}")
        prompts.append(replace(prompt, index=len(prompts)))
    if not prompts:
        raise UserInputError(f"prompts {name!r} contains no prompts.")
    return prompts


def _record_to_prompt(record, where: str) -> Prompt:
    if not isinstance(record, dict):
        raise UserInputError(f"{where} must be a JSON object.")
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
    """
    text = _read_utf8(Path(responses_file)) if Path(responses_file).is_file() else None
    if text is None:
        raise UserInputError(f"responses file {responses_file!r} does not exist.")
    by_text = {prompt.text: index for index, prompt in enumerate(prompts)}
    paired = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{responses_file!r} line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            raise UserInputError(f"{where} is not valid JSON.") from None
        if not isinstance(record, dict) or not isinstance(record.get("response"), str):
            raise UserInputError(f'{where} needs a string "response".')
        index = record.get("prompt_index")
        if index is None:
            index = by_text.get(record.get("prompt"))
        if not isinstance(index, int) or not 0 <= index < len(prompts):
            raise UserInputError(f'{where} matches no prompt (give "prompt_index" or the exact "prompt" text).')
        paired.append(replace(prompts[index], response=record["response"]))
    if not paired:
        raise UserInputError(f"responses file {responses_file!r} contains no responses.")
    return paired
