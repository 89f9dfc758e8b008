"""Read a run directory's artifacts for the report (no model code: files only).

A run directory is a pipeline run (stages in subdirectories), or the output of one command
(``diff-neurons``, ``ablate``, ``evaluate``, ``persona-vector``, ``steer``, ``lens``), or a folder holding such
outputs one level down.
Which ablation run is which (restore / necessity / sufficiency / dose) comes from its recorded role, or for
runs without one from its settings, not its folder's name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from interp.errors import UserInputError
from interp.neuron_set import NeuronSet

ROLES = ("restore", "necessity", "sufficiency", "dose")


@dataclass
class Landscape:
    layers: list[int]
    score: np.ndarray  # [len(layers), d_mlp] float32
    category: np.ndarray  # [len(layers), d_mlp] int8 index into categories
    categories: list[str]


@dataclass
class DiffRun:
    path: Path
    summary: dict
    neurons: NeuronSet  # neurons.csv, ranked
    landscape: Landscape | None
    profiles: dict | None  # profiles.json: {"neurons": [...], "models": {model: {address: profile}}}


@dataclass
class AblationRun:
    path: Path
    report: dict  # ablation.json
    generations: list[dict]

    @property
    def role(self) -> str:
        """restore (base values into the fine-tune), necessity (edits the fine-tune), sufficiency (fine-tuned
        values into the base) or dose (scaling)."""
        if self.report.get("role") in ROLES:
            return self.report["role"]
        mode = self.report["config"].get("mode")
        return {"patch": "sufficiency", "scale": "dose"}.get(mode, "necessity")

    def dose_points(self, identity: float = 1.0) -> list[tuple[float, float, float, float]]:
        """A scaling (or steering) run as (alpha, tested probability, controls' mean probability, controls' sd), by
        alpha (coefficient); ``identity``, the alpha of the unedited model (1 for scaling, 0 for steering), is
        added."""
        unedited = self.report["conditions"]["unedited"]["emoji_onset_probability"]
        points = [(identity, unedited, unedited, 0.0)] if identity not in self._alphas() else []
        for name, comparison in self.report["comparisons"].items():
            alpha = float(name.split("=")[1])
            null = next(iter(comparison.get("nulls", {}).values()), {"control_mean": math.nan, "control_std": 0.0})
            points.append((alpha, unedited + comparison["effect"], unedited + null["control_mean"],
                           null["control_std"] or 0.0))  # fmt: skip
        return sorted(points)

    def _alphas(self) -> list[float]:
        return [float(name.split("=")[1]) for name in self.report["comparisons"]]


@dataclass
class RunArtifacts:
    root: Path
    pipeline: dict | None = None
    evaluate: dict | None = None  # table.json
    diff: DiffRun | None = None
    ablations: list[AblationRun] = field(default_factory=list)
    replication: dict | None = None  # replication.json (``interp replicate``)
    persona: dict | None = None  # summary.json of ``interp persona-vector``
    lens: dict | None = None  # lens.json of ``interp lens``
    steerings: list[AblationRun] = field(default_factory=list)  # steering.json runs (``interp steer``)
    sweep: dict | None = None  # sweep.json of ``interp sweep``

    def ablation(self, role: str) -> AblationRun | None:
        return next((run for run in self.ablations if run.role == role), None)


def load_run(root: Path) -> RunArtifacts:
    """Everything the report can show from ``root``; UserInputError if it holds no artifacts at all."""
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"run directory {str(root)!r} does not exist.")
    run = RunArtifacts(root)
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        if folder.name.startswith("replicate-seed"):  # a second seed's stages: summarised by replication.json
            continue
        if (folder / "pipeline.json").is_file():
            run.pipeline = _json(folder / "pipeline.json")
        if (folder / "replication.json").is_file():
            run.replication = _json(folder / "replication.json")
        if (folder / "table.json").is_file() and run.evaluate is None:
            run.evaluate = _json(folder / "table.json")
        if (folder / "neurons.csv").is_file() and run.diff is None:
            run.diff = _diff_run(folder)
        summary = _json(folder / "summary.json") if (folder / "summary.json").is_file() else {}
        if summary.get("command") == "persona-vector" and run.persona is None:
            run.persona = summary
        if (folder / "sweep.json").is_file() and run.sweep is None:
            run.sweep = _json(folder / "sweep.json")
        if (folder / "lens.json").is_file() and run.lens is None:
            run.lens = _json(folder / "lens.json")
        if (folder / "steering.json").is_file():
            run.steerings.append(
                AblationRun(folder, _json(folder / "steering.json"), _jsonl(folder / "generations.jsonl"))
            )
        if (folder / "ablation.json").is_file():
            run.ablations.append(
                AblationRun(folder, _json(folder / "ablation.json"), _jsonl(folder / "generations.jsonl"))
            )
    run.ablations.sort(key=lambda a: ROLES.index(a.role))
    if not (run.evaluate or run.diff or run.ablations or run.persona or run.lens or run.steerings or run.sweep):
        raise UserInputError(
            f"{str(root)!r} holds no run artifacts (neurons.csv, ablation.json, table.json, steering.json, lens.json, "
            "sweep.json or a persona vector, here or one level down)."
        )
    return run


def _diff_run(folder: Path) -> DiffRun:
    neurons = NeuronSet.read(folder / "neurons.csv", flag="run file")
    summary = _json(folder / "summary.json") if (folder / "summary.json").is_file() else {}
    profiles = _json(folder / "profiles.json") if (folder / "profiles.json").is_file() else None
    landscape = _landscape(folder / "landscape.safetensors") if (folder / "landscape.safetensors").is_file() else None
    return DiffRun(folder, summary, neurons, landscape, profiles)


def _landscape(path: Path) -> Landscape:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            return Landscape(
                json.loads(metadata["layers"]), handle.get_tensor("score"), handle.get_tensor("category"),
                json.loads(metadata["categories"]),
            )  # fmt: skip
    except (SafetensorError, KeyError, ValueError) as exc:
        raise UserInputError(f"{str(path)!r} is not a landscape file: {exc}.") from None


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{str(path)!r} is not valid JSON: {exc}.") from None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise UserInputError(f"{str(path)!r} line {number} is not valid JSON.") from None
    return records
