"""The neuron set: a ranked ``neurons.csv`` (written by diff-neurons, merge-stats or attribute) and what is
chosen from it. The one type that reads and writes the table; ablate, the pipeline, the report, replication
and the CLI all go through it, with neurons as ``(layer, index)`` tuples.

Rows keep the CSV's text values (what the file says, to the digit); ``values(column)`` gives numbers. A set
read from a file knows its ``source``; ``selection`` is the diff run beside it (its prompts and models).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from interp.errors import UserInputError
from interp.textfiles import read_text

SIGNS = ("any", "raising", "lowering", "follow")  # which scores to keep (``with_sign``)
FOLLOW = {"rises": "raising", "falls": "lowering"}  # the diff's emoji direction -> the sign that follows it


def format_value(value) -> str:
    """How neurons.csv writes a value: ints as they are, floats to 8 significant digits, booleans lower-case."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return "nan"
    return format(value, ".8g")


def _format_column(values: Sequence) -> list[str]:
    """``format_value`` of every value; a column of one type (floats, NaN too: ``format`` writes "nan"; ints;
    strings) without ``format_value``'s checks per value."""
    kinds = set(map(type, values))
    if kinds == {float}:
        return [format(value, ".8g") for value in values]
    if kinds == {int}:
        return list(map(str, values))
    if kinds == {str}:
        return list(values)
    return [format_value(value) for value in values]


@dataclass(frozen=True)
class NeuronSet:
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]  # in rank order; every row has "layer" and "neuron"
    source: Path | None = None  # the neurons.csv it was read from

    @classmethod
    def from_records(cls, columns: Iterable[str], records: Iterable[Mapping]) -> NeuronSet:
        """A set from records of Python values (formatted as the file will hold them)."""
        columns, records = tuple(columns), list(records)
        return cls.from_columns({c: [record[c] for record in records] for c in columns})

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence]) -> NeuronSet:
        """A set from equally long columns of Python values, in row order (formatted as the file will hold them;
        a column of floats is formatted in one sweep, which matters for a whole model's 46,080 rows)."""
        texts = [_format_column(values) for values in columns.values()]
        return cls(tuple(columns), tuple(dict(zip(columns, row)) for row in zip(*texts)))

    @classmethod
    def read(cls, path: str | Path, flag: str = "--neurons-from") -> NeuronSet:
        """The set in a neurons.csv; UserInputError (naming ``flag``) for a missing, unreadable or foreign file."""
        path = Path(path)
        if not path.is_file():
            raise UserInputError(f"cannot read {flag} {str(path)!r}: no such file.")
        try:
            reader = csv.DictReader(io.StringIO(read_text(path)))
            rows = tuple(reader)
        except csv.Error as exc:
            raise UserInputError(f"{flag} {str(path)!r} is not a readable CSV: {exc}.") from None
        columns = tuple(reader.fieldnames or ())
        if not {"layer", "neuron"} <= set(columns):
            raise UserInputError(f"{flag} {str(path)!r} needs a neurons.csv with columns layer and neuron.")
        ranked = cls(columns, rows, path)
        try:
            ranked.addresses  # noqa: B018 (parsed once here so that later reads cannot fail)
        except (TypeError, ValueError):
            raise UserInputError(f"{flag} {str(path)!r} has a layer or neuron that is not a number.") from None
        return ranked

    def write(self, path: Path) -> None:
        """Write neurons.csv atomically."""
        from interp import artifacts

        artifacts.write_text(Path(path), self.to_csv())

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([row[c] for c in self.columns] for row in self.rows)
        return buffer.getvalue()

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, str]]:
        return iter(self.rows)

    @property
    def addresses(self) -> list[tuple[int, int]]:
        """``(layer, index)`` of every row, in rank order."""
        return [(int(row["layer"]), int(row["neuron"])) for row in self.rows]

    @property
    def labels(self) -> list[str]:
        """``"layer:index"`` of every row (how ablation.json and the report name neurons)."""
        return [f"{layer}:{index}" for layer, index in self.addresses]

    def by_label(self) -> dict[str, dict[str, str]]:
        return dict(zip(self.labels, self.rows))

    def values(self, column: str) -> list[float]:
        return [float(row[column]) for row in self.rows]

    def top(self, k: int | None) -> NeuronSet:
        """The first ``k`` rows (all when ``k`` is None)."""
        return self if k is None else replace(self, rows=self.rows[:k])

    def with_sign(self, sign: str) -> NeuronSet:
        """The rows whose score raises (> 0) or lowers (< 0) emoji-onset logits; ``follow``: the sign the diff run
        beside the file measured (emoji use rises: raising; falls: lowering; no clear change: any)."""
        if sign not in SIGNS:
            raise UserInputError(f"--sign must be one of {', '.join(SIGNS)}, not {sign!r}.")
        if sign == "follow":
            sign = self.followed_sign()
        if sign == "any":
            return self
        if "score" not in self.columns:
            raise UserInputError(f"--sign {sign} needs a score column in {self._name()}.")
        kept = tuple(r for r in self.rows if float(r["score"]) != 0 and (float(r["score"]) > 0) == (sign == "raising"))
        if not kept:
            raise UserInputError(f"{self._name()} has no neuron with a {sign} score.")
        return replace(self, rows=kept)

    def followed_sign(self) -> str:
        """``raising`` / ``lowering`` / ``any``: the sign that follows the emoji direction of the diff beside."""
        from interp.selection import diff_summary

        summary = diff_summary(self.source.parent) if self.source else None
        if summary is None:
            raise UserInputError(f"--sign follow needs the diff run's summary.json beside {self._name()}.")
        return FOLLOW.get((summary.get("emoji") or {}).get("direction"), "any")

    def _name(self) -> str:
        return f"--neurons-from {str(self.source)!r}" if self.source else "the neuron set"
