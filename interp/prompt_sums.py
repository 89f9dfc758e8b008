"""Per-prompt sums: the prompt is the unit that replicates, so measurements are folded per prompt and the
intervals resample prompts (``interp.significance``)."""

from __future__ import annotations

import numpy as np


class PromptSums(dict[int, list[float]]):
    """prompt index -> [summed value, count] (positions or answers), folded in any order and merged across shards."""

    def fold(self, index: int, total: float, count: int) -> None:
        entry = self.setdefault(index, [0.0, 0])
        entry[0] += total
        entry[1] += count

    def add(self, other: PromptSums) -> None:
        """Fold in another shard's sums."""
        for index, (total, count) in other.items():
            self.fold(index, total, count)

    def arrays(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """([P] summed values, [P] counts) of the prompts ``indices`` (zeros for a prompt never folded)."""
        rows = [self.get(i, [0.0, 0]) for i in indices]
        return np.array([r[0] for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float)

    def total(self) -> float:
        return sum(total for total, _ in self.values())

    def count(self) -> int:
        return int(sum(count for _, count in self.values()))

    def mean(self) -> float | None:
        """The pooled mean (over every position or answer of every prompt); None when nothing was folded."""
        count = self.count()
        return self.total() / count if count else None
