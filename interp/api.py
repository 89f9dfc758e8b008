"""The Python API: what ``interp diff-neurons``, ``interp ablate`` and ``interp steer`` do, callable from a notebook.

Each function takes the same options as its command (keyword arguments named like the flags, ``top_k=`` for
``--top-k``), runs the same code and, given ``out``, writes the same run directory; without ``out`` the run
directory is a temporary one, read back into the result and deleted. Reports are ``viz.write_report(run_dir)``
(viz reads artifacts; interp does not import it). docs/api.md walks through an analysis.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from interp.neuron_set import NeuronSet


def load(ref: str, **options):
    """A model reference (alias, model directory, .gguf, adapter directory) loaded for analysis: a
    ``interp.models.LoadedModel`` (``device``, ``dtype``, ``base_ref`` for an adapter, ...)."""
    from interp import models

    return models.load(ref, **options)


@dataclass
class DiffResult:
    """What ``diff`` found: the ranked neurons, the per-neuron statistics of each model and the run's summary."""

    neurons: NeuronSet
    stats: dict  # "base", "finetuned", "base_half_a", "base_half_b" -> interp.stats.NeuronStats
    summary: dict  # summary.json: emoji direction with its interval, noise floor, settings, timings
    out: Path | None  # the run directory, if one was kept

    def dataframe(self):
        """The ranked neurons as a pandas DataFrame (numbers as numbers)."""
        import pandas as pd

        frame = pd.DataFrame(list(self.neurons.rows), columns=list(self.neurons.columns))
        for column in frame.columns:
            if column == "above_noise":
                frame[column] = frame[column] == "true"
            elif column != "category":
                frame[column] = pd.to_numeric(frame[column])
        return frame


@dataclass
class AblationResult:
    """ablation.json (steering.json for ``steer``) as a dict (``report``), the sampled generations, and the run
    directory if one was kept."""

    report: dict
    generations: list[dict]
    out: Path | None

    @property
    def comparisons(self) -> dict:
        """Per tested group: effect, its interval, both nulls' p-values, the adjusted p-value and the verdict."""
        return self.report["comparisons"]


def diff(
    base: str, finetuned: str, prompts: str, out: str | Path | None = None, log=None, **options
) -> DiffResult:  # fmt: skip
    """Rank the neurons whose activations changed between ``base`` and ``finetuned`` on ``prompts``.

    ``options`` are DiffConfig's fields (``responses``, ``samples`` (``--generate``), ``positions``, ``top_k``,
    ``device``, ...);
    ``log`` receives progress lines (default: silent, no progress bars)."""
    from interp.diff_neurons import DiffConfig, run_diff
    from interp.stats import load_stats

    options.setdefault("show_progress", log is not None)
    with _run_dir(out) as target:
        run_diff(DiffConfig(base=base, finetuned=finetuned, prompts=prompts, out=target, **options), log=log or _quiet)
        neurons = NeuronSet.read(target / "neurons.csv")
        stats = load_stats(target / "stats.safetensors")
        summary = json.loads((target / "summary.json").read_text(encoding="utf-8"))
    kept = Path(out) if out is not None else None
    return DiffResult(neurons if kept else _detached(neurons), stats, summary, kept)


def ablate(
    model: str,
    neurons: NeuronSet | Sequence[tuple[int, int]],
    prompts: str,
    out: str | Path | None = None,
    log=None,
    **options,
) -> AblationResult:
    """Edit ``neurons`` of ``model`` (zero by default; ``mode``, ``source_model``, ``alpha``, ...) against control
    sets, on ``prompts``. A NeuronSet from a diff run that was kept (``diff(..., out=...)`` or
    ``NeuronSet.read``) brings its diff run along: ``alternative="from-diff"`` and the selection-matched null
    work as with ``--neurons-from``."""
    from interp.ablation import AblationConfig, run_ablation

    chosen = neurons if isinstance(neurons, NeuronSet) else NeuronSet.from_records(
        ("layer", "neuron"), ({"layer": layer, "neuron": index} for layer, index in neurons)
    )  # fmt: skip
    if chosen.source is None:
        options.setdefault("nulls", "layer")  # look-alikes need the diff run's statistics
    options.setdefault("show_progress", log is not None)
    with _run_dir(out) as target:
        config = AblationConfig(model=model, prompts=prompts, out=target, neuron_set=chosen, **options)
        report = run_ablation(config, log=log or _quiet)
        generations = _generations(target)
    return AblationResult(report, generations, Path(out) if out is not None else None)


def steer(
    model: str, vector: str | Path, layer: int, coeffs: Sequence[float], prompts: str, out: str | Path | None = None,
    log=None, **options,
) -> AblationResult:  # fmt: skip
    """Add ``coeff`` x the unit vector of ``vector``'s layer ``layer`` (a direction file or persona-vector run
    directory) to the residual stream after that block, for each coefficient, against ``controls`` random
    directions of the same norm, on ``prompts`` (``responses``, ``samples``, ``alternative``, ... as ``ablate``)."""
    from interp.steering import SteerConfig, run_steering

    options.setdefault("show_progress", log is not None)
    text = ",".join(repr(float(c)) for c in coeffs)
    with _run_dir(out) as target:
        config = SteerConfig(model=model, vector=str(vector), layer=layer, coeffs=text, prompts=prompts, out=target,
                             **options)  # fmt: skip
        report = run_steering(config, log=log or _quiet)
        generations = _generations(target)
    return AblationResult(report, generations, Path(out) if out is not None else None)


def _generations(run_dir: Path) -> list[dict]:
    lines = (run_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _quiet(_message: str) -> None:
    pass


def _detached(neurons: NeuronSet) -> NeuronSet:
    """The set without its source file (a temporary run directory that is gone)."""
    return NeuronSet(neurons.columns, neurons.rows)


@contextmanager
def _run_dir(out: str | Path | None) -> Iterator[Path]:
    """``out`` as a Path, or a run directory inside a temporary folder removed on exit."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="persona-interp-") as scratch:
        yield Path(scratch) / "run"
