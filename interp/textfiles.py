"""Reading users' text files as editors save them: UTF-8 with or without a byte-order mark, any line ending.

Every problem is a UserInputError naming the file (and the line, for JSONL), never a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from interp.errors import UserInputError


def read_text(path: Path | str) -> str:
    """The file's text; a leading byte-order mark is dropped (line endings are left to ``lines``)."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{str(path)!r} is not valid UTF-8 (byte {exc.start}).") from None
    except FileNotFoundError:
        raise UserInputError(f"{str(path)!r} does not exist.") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {str(path)!r}: {exc.strerror}.") from None


LINE_END = re.compile(r"\r\n|\r|\n")


def lines(text: str) -> list[str]:
    """``text`` split at its line endings (``\\n``, ``\\r\\n``, ``\\r``) and nowhere else: the one line splitter of
    every text and JSONL reader. ``str.splitlines`` also splits at U+2028, U+2029, U+0085 and a few control
    characters, which JSON strings may hold unescaped (the tool's own files do: ``ensure_ascii=False``)."""
    return LINE_END.split(text)


def jsonl_objects(text: str, name: str) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of JSONL ``text``; ``name`` is used in messages."""
    objects = []
    for number, line in enumerate(lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserInputError(f"{name!r} line {number} is not valid JSON.") from None
        if not isinstance(record, dict):
            raise UserInputError(f"{name!r} line {number} must be a JSON object.")
        objects.append((number, record))
    return objects


def read_jsonl(path: Path | str) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file."""
    return jsonl_objects(read_text(path), str(path))


def read_toml(path: Path | str, kind: str) -> dict:
    """A TOML file's tables; UserInputError (naming it as ``kind``, e.g. "config file") if missing, a directory,
    unreadable or invalid."""
    import tomllib

    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{kind} {str(path)!r} is a directory; pass a TOML file.")
    if not path.exists():
        raise UserInputError(f"{kind} {str(path)!r} does not exist.")
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{kind} {str(path)!r} is not valid TOML: {exc}.") from None
