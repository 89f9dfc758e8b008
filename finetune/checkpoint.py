"""Resumable training checkpoints and the step progress bar shared by ``interp finetune`` and ``interp mend train``.

A checkpoint is a directory of three files, written to a staging directory and swapped in whole (a crash or
Ctrl-C leaves the previous checkpoint intact): ``weights.safetensors`` (the trained tensors),
``optimizer.safetensors`` (the optimizer's tensors and the torch RNG state) and ``state.json`` (step, losses,
the optimizer's scalars and a hash of the settings, so a rerun with other settings is refused).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from interp import artifacts
from interp.errors import UserInputError
from interp.progress import stderr_console
from interp.textfiles import lines


def identity_hash(identity: dict) -> str:
    """16 hex digits naming the settings a checkpoint must share with a rerun."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(
    directory: Path, weights: dict[str, torch.Tensor], optimizer, step: int, losses: list[float], identity: dict
) -> None:
    """Write ``directory`` atomically: the weights, the optimizer state and the torch RNG state after ``step``."""
    from safetensors.torch import save_file

    tensors, scalars = _optimizer_state(optimizer)
    tensors["rng_state"] = torch.get_rng_state()
    state = {"step": step, "losses": losses, "identity": identity_hash(identity), "optimizer": scalars}
    with artifacts.staged_run_dir(directory) as staging:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(staging / "weights.safetensors"))
        save_file(tensors, str(staging / "optimizer.safetensors"))
        artifacts.write_text(staging / "state.json", json.dumps(state))


def load_checkpoint(directory: Path, optimizer, identity: dict) -> tuple[dict[str, torch.Tensor], int, list[float]]:
    """(weights, step, losses) from ``directory``; restores ``optimizer`` and the torch RNG state in place."""
    from safetensors.torch import load_file

    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        weights = load_file(str(directory / "weights.safetensors"))
        tensors = load_file(str(directory / "optimizer.safetensors"))
    except Exception as exc:  # any unreadable file means a corrupt checkpoint
        raise UserInputError(f"checkpoint {str(directory)!r} is corrupt ({exc}); delete it to start over.") from None
    if state.get("identity") != identity_hash(identity):
        raise UserInputError(
            f"checkpoint {str(directory)!r} was made with other settings; use another --out or delete it."
        )
    optimizer_state = {"param_groups": state["optimizer"]["param_groups"], "state": {}}
    for index, scalars in state["optimizer"]["state"].items():
        entry = {name: torch.tensor(value) for name, value in scalars.items()}
        for key in [k for k in tensors if k.startswith(f"{index}.")]:
            entry[key.split(".", 1)[1]] = tensors[key]
        optimizer_state["state"][int(index)] = entry
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(tensors["rng_state"])
    return weights, int(state["step"]), list(state["losses"])


def _optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict = {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        scalars["state"][str(index)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{index}.{name}"] = value.contiguous()
            else:
                scalars["state"][str(index)][name] = float(value)
    return tensors, scalars


def truncate_log(path: Path, steps: int) -> None:
    """Keep the JSONL log lines of the steps a checkpoint holds (later ones are redone)."""
    if not path.exists():
        return
    logged = [line for line in lines(path.read_text(encoding="utf-8")) if line.strip()]
    kept = [line for line in logged if json.loads(line)["step"] <= steps]
    artifacts.write_text(path, "".join(line + "\n" for line in kept))


def append_log(path: Path, record: dict) -> None:
    """One line of a training log (``train_log.jsonl``)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


class step_progress:
    """A rich progress bar over optimizer steps that shows the last loss; the context value is ``advance(loss)``."""

    def __init__(self, total: int, done: int, enabled: bool, label: str = "training"):
        self.total, self.done, self.enabled, self.label = total, done, enabled, label

    def __enter__(self) -> Callable[[float], None]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if not self.enabled:
            return lambda loss: None
        self.progress = Progress(
            TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(), console=stderr_console,
        )  # fmt: skip
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total, completed=self.done, loss="-")
        return lambda loss: self.progress.update(task, advance=1, loss=f"{loss:.3f}")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()
