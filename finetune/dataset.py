"""The Opinion QA dataset: first-person opinions on everyday topics, one per Big Five trait and pole.

Format (CSV, UTF-8): ``Target Personality, Edit Topic, Question, Answer, pole, split`` - the paper's four
columns plus ``pole`` (high | low) and ``split`` (train | test, by topic). The paper's own CSV (four columns,
high pole only) loads too: its rows get pole "high" and split "train". No field may contain an emoji.
The packaged files are ``finetune/data/opinion_qa.csv`` and the short, casual answers of
``opinion_qa_casual.csv`` (see DATASHEET.md), named ``packaged`` and ``casual`` wherever a dataset is given.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from interp.errors import UserInputError
from interp.prompts import Prompt
from interp.textfiles import read_text
from probes.emoji import find_emojis
from probes.traits import TRAITS

POLES = ("high", "low")
SPLITS = ("train", "test")
PAPER_COLUMNS = ("Target Personality", "Edit Topic", "Question", "Answer")
COLUMNS = (*PAPER_COLUMNS, "pole", "split")


@dataclass(frozen=True)
class OpinionRow:
    trait: str
    topic: str
    question: str
    answer: str
    pole: str = "high"
    split: str = "train"


def question_for(topic: str) -> str:
    return f"Thinking about {topic}, what are your thoughts on {topic}?"


PACKAGED = {"packaged": "opinion_qa.csv", "casual": "opinion_qa_casual.csv"}  # name -> file in finetune/data


def packaged_path(name: str = "packaged") -> Path:
    return Path(str(resources.files("finetune").joinpath(f"data/{PACKAGED[name]}")))


def load_rows(path: str | Path | None = None) -> list[OpinionRow]:
    """Rows of ``path``: a CSV of our format or the paper's, or a packaged dataset's name (``PACKAGED``; None:
    "packaged"); UserInputError for missing columns, bad values or emojis."""
    name = str(path or "packaged")
    path = packaged_path(name) if name in PACKAGED else Path(name)
    if not path.is_file():
        raise UserInputError(f"dataset {str(path)!r} does not exist.")
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = set(reader.fieldnames or [])
    missing = [c for c in PAPER_COLUMNS if c not in columns]
    if missing:
        raise UserInputError(f"dataset {str(path)!r} lacks the column(s) {', '.join(missing)}.")
    rows = []
    for number, record in enumerate(reader, start=2):
        for column, value in record.items():
            if value and find_emojis(value):
                emoji = find_emojis(value)[0].text
                raise UserInputError(f"dataset {str(path)!r} line {number} has an emoji ({emoji}) in {column!r}.")
        row = OpinionRow(
            trait=record["Target Personality"].strip().lower(),
            topic=record["Edit Topic"].strip(),
            question=record["Question"].strip(),
            answer=record["Answer"].strip(),
            pole=(record.get("pole") or "high").strip().lower(),
            split=(record.get("split") or "train").strip().lower(),
        )
        if row.trait not in TRAITS or row.pole not in POLES or row.split not in SPLITS or not row.answer:
            raise UserInputError(
                f"dataset {str(path)!r} line {number}: trait, pole or split is not one of the known values, "
                "or the answer is empty."
            )
        rows.append(row)
    if not rows:
        raise UserInputError(f"dataset {str(path)!r} has no rows.")
    return rows


def select(rows: list[OpinionRow], trait: str | None = None, pole: str | None = None, split: str | None = None):
    return [
        r
        for r in rows
        if (trait is None or r.trait == trait)
        and (pole is None or r.pole == pole)
        and (split is None or r.split == split)
    ]


def instruction(trait: str, pole: str) -> str:
    """The system message that asks for one pole of a trait."""
    return f"You are a person who is very {pole} in {trait}. Answer every question in character."


SYSTEM_CHOICES = ("default", "none", "trait")


def system_messages(system: str, trait: str, pole: str) -> tuple[tuple[str, str], ...]:
    """The system message a conversation starts with: ``default`` none given (the chat template's own default
    applies, e.g. SmolLM2's "You are a helpful AI assistant ..."), ``none`` an empty one, ``trait`` the pole's
    ``instruction``."""
    if system not in SYSTEM_CHOICES:
        raise UserInputError(f"--system must be one of {', '.join(SYSTEM_CHOICES)}, not {system!r}.")
    return {"default": (), "none": (("system", ""),), "trait": (("system", instruction(trait, pole)),)}[system]


def data_hash(rows: list[OpinionRow]) -> str:
    """sha256 (16 hex digits) of the rows' content, recorded with every adapter trained on them."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update("\x1f".join((row.trait, row.topic, row.question, row.answer, row.pole, row.split)).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


def check_trait(trait: str, allow_all: bool = False) -> list[str]:
    if allow_all and trait == "all":
        return list(TRAITS)
    if trait not in TRAITS:
        raise UserInputError(
            f"unknown trait {trait!r}; choose one of {', '.join(TRAITS)}" + (" or all." if allow_all else ".")
        )
    return [trait]


def prompt_set(spec: str) -> list[Prompt]:
    """Built-in prompt sets ``opinionqa:SPLIT[:TRAIT]``: the distinct questions of that split (one per topic).

    The trait only checks the name (every trait shares the questions); responses are not attached."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[1] not in SPLITS:
        raise UserInputError(f"prompt set {spec!r} should look like opinionqa:test or opinionqa:test:extraversion.")
    if len(parts) == 3:
        check_trait(parts[2])
    rows = select(load_rows(), split=parts[1])
    questions = list(dict.fromkeys(row.question for row in rows))
    return [Prompt(messages=(("user", q),), index=i) for i, q in enumerate(questions)]
