"""A sweep file's tables checked against the types their options declare (``interp.options``), before
``finetune.sweep.read_sweep`` builds the cells from them: ``[sweep]`` against ``SweepSettings``, every cell
option (``[fixed]``, each ``[grid]`` value, each ``[[cells]]`` table) against ``interp finetune``'s
``TrainConfig`` plus ``style`` (and a cell's ``name``)."""

from __future__ import annotations

from pathlib import Path

from finetune.sweep import SweepSettings
from finetune.training import TrainConfig
from interp.errors import UserInputError
from interp.options import check_options, declared_types
from interp.textfiles import read_toml

SWEEP_OWNED = {"model", "trait", "out", "seed", "show_progress"}  # set by the sweep itself, per cell and seed


def check_sweep_file(path: Path) -> None:
    """UserInputError (one sentence naming the table and option) for a sweep file of the wrong shape or types."""
    data = read_toml(path, "sweep file")
    where = f"sweep file {str(path)!r}"
    cell_types = {name: hint for name, hint in declared_types(TrainConfig).items() if name not in SWEEP_OWNED}
    cell_types["style"] = str
    settings, fixed, grid = (_table(data, name, where) for name in ("sweep", "fixed", "grid"))
    check_options(settings, declared_types(SweepSettings), f"{where}: [sweep]")
    check_options(fixed, cell_types, f"{where}: [fixed]")
    for option, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserInputError(f"{where}: [grid] {option} must be a non-empty list of values, not {values!r}.")
        for value in values:
            check_options({option: value}, cell_types, f"{where}: [grid]")
    cells = data.get("cells", [])
    if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
        raise UserInputError(f"{where}: cells must be [[cells]] tables, one per cell.")
    for number, cell in enumerate(cells, start=1):
        check_options(cell, {**cell_types, "name": str}, f"{where}: [[cells]] number {number}")


def _table(data: dict, name: str, where: str) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise UserInputError(f"{where}: {name} must be a [{name}] table, not {table!r}.")
    return table
