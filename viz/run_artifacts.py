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

from interp import artifacts
from interp.errors import UserInputError
from interp.neuron_set import NeuronSet
from interp.verdicts import as_family

ROLES = ("restore", "necessity", "sufficiency", "dose")
CAUSAL_FORMAT = ("conditions.*.kind", "conditions.*.group", "conditions.*.emoji_onset_probability",
                 "comparisons.*.verdict", "comparisons.*.nulls", "comparisons.*.prompts")  # fmt: skip
# What the report reads from each JSON artifact: a file without one of these keys predates a format change the
# report needs, and is refused naming the file and the release that wrote it (``artifacts.read_json``).
NEEDS = {
    "ablation.json": ("config", "neurons", *CAUSAL_FORMAT),
    "steering.json": ("vector.layer", *CAUSAL_FORMAT),
    "lens.json": ("lens", "steering.comparisons.*.verdict"),
    "table.json": ("columns", "rows"),
    "replication.json": ("seeds", "jaccard", "tests"),
    "sweep.json": ("settings", "rows"),
}
PRIMARY = ROLES[:3]  # a pipeline's primary causal tests, corrected as one family (the dose curve is descriptive)


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
        alpha (coefficient), read from the conditions' pooled emoji-onset probabilities; ``identity``, the alpha of
        the unedited model (1 for scaling, 0 for steering), is added."""
        conditions = self.report["conditions"]
        unedited = conditions["unedited"]["emoji_onset_probability"]
        points = [(identity, unedited, unedited, 0.0)] if identity not in self._alphas() else []
        for name in self.report["comparisons"]:
            alpha = float(name.split("=")[1])
            group = [c for c in conditions.values() if c["group"] == name]
            tested = next(c["emoji_onset_probability"] for c in group if c["kind"] == "tested")
            first_null = next((c["kind"] for c in group if c["kind"] != "tested"), None)
            controls = [c["emoji_onset_probability"] for c in group if c["kind"] == first_null]
            points.append((alpha, tested, float(np.mean(controls)) if controls else math.nan,
                           float(np.std(controls)) if controls else 0.0))  # fmt: skip
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

    def printed_comparisons(self, run: AblationRun) -> dict[str, dict]:
        """``run``'s comparisons as the report prints them: a pipeline's primary tests corrected as one family per
        claim (the p-values its headline uses), any other run's with its own correction."""
        if self.pipeline is None or run.role not in PRIMARY:
            return run.report["comparisons"]
        primary = {}
        for role in PRIMARY:
            other = self.ablation(role)
            comparison = next(iter(other.report["comparisons"].values()), None) if other else None
            if comparison and "p_value" in comparison:
                primary[role] = comparison
        if run.role not in primary:
            return run.report["comparisons"]
        name = next(iter(run.report["comparisons"]))
        return {name: as_family(primary)[run.role]}


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
    tensors, metadata = artifacts.read_tensors(path, framework="np")
    try:
        return Landscape(json.loads(metadata["layers"]), tensors["score"], tensors["category"],
                         json.loads(metadata["categories"]))  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise UserInputError(f"{str(path)!r} is not a landscape file: {exc}.") from None


def _json(path: Path) -> dict:
    """A JSON artifact, checked to hold what the report reads from it (``NEEDS``)."""
    return artifacts.read_json(path, NEEDS.get(path.name, ()))


def _jsonl(path: Path) -> list[dict]:
    return artifacts.read_jsonl(path) if path.is_file() else []
