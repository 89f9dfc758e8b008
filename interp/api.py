"""The Python API: what ``interp diff-neurons``, ``interp ablate`` and ``interp steer`` do, callable from a notebook.

Each function takes the same options as its command (keyword arguments named like the flags, ``top_k=`` for
``--top-k``), runs the same code and, given ``out``, writes the same run directory; without ``out`` the run
directory is a temporary one, read back into the result and deleted. Every argument is checked against the type
its command's config declares before any work (a ``pathlib.Path`` works wherever a file or model is named); a
bad one raises ``interp.errors.UserInputError`` with one sentence. Reports are ``viz.write_report(run_dir)``
(viz reads artifacts; interp does not import it). docs/api.md walks through an analysis.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from interp.artifacts import read_json, read_jsonl
from interp.errors import UserInputError
from interp.neuron_set import NeuronSet
from interp.options import check_options, declared_types, fits


def load(ref: str | os.PathLike, **options):
    """A model reference (alias, model directory, .gguf, adapter directory) loaded for analysis: a
    ``interp.models.LoadedModel`` (``device``, ``dtype``, ``base_ref`` for an adapter, ...)."""
    from interp import models

    if not isinstance(ref, str | os.PathLike):
        raise UserInputError(f"interp.load() takes a model reference (text or a path), not {ref!r}.")
    return models.load(os.fspath(ref), **options)


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
    base: str | os.PathLike, finetuned: str | os.PathLike, prompts: str | os.PathLike, out: str | Path | None = None,
    log=None, **options,
) -> DiffResult:  # fmt: skip
    """Rank the neurons whose activations changed between ``base`` and ``finetuned`` on ``prompts``.

    ``options`` are DiffConfig's fields (``responses``, ``samples`` (``--generate``), ``positions``, ``top_k``,
    ``device``, ...);
    ``log`` receives progress lines (default: silent, no progress bars)."""
    from interp.diff_neurons import DiffConfig, run_diff
    from interp.stats import load_stats

    options.setdefault("show_progress", log is not None)
    options = _checked(DiffConfig, "diff", out, base=base, finetuned=finetuned, prompts=prompts, **options)
    with _run_dir(out) as target:
        run_diff(DiffConfig(out=target, **options), log=log or _quiet)
        neurons = NeuronSet.read(target / "neurons.csv")
        stats = load_stats(target / "stats.safetensors")
        summary = read_json(target / "summary.json")
    kept = Path(out) if out is not None else None
    return DiffResult(neurons if kept else _detached(neurons), stats, summary, kept)


def ablate(
    model: str | os.PathLike,
    neurons: NeuronSet | Sequence[tuple[int, int]],
    prompts: str | os.PathLike,
    out: str | Path | None = None,
    log=None,
    **options,
) -> AblationResult:
    """Edit ``neurons`` of ``model`` (zero by default; ``mode``, ``source_model``, ``alpha``, ...) against control
    sets, on ``prompts``. A NeuronSet from a diff run that was kept (``diff(..., out=...)`` or
    ``NeuronSet.read``) brings its diff run along: ``alternative="from-diff"`` and the selection-matched null
    work as with ``--neurons-from``."""
    from interp.ablation import AblationConfig, run_ablation

    if not fits(neurons, NeuronSet | list[tuple[int, int]]):
        raise UserInputError(f"interp.ablate() takes a NeuronSet or (layer, index) pairs as neurons, not {neurons!r}.")
    chosen = neurons if isinstance(neurons, NeuronSet) else NeuronSet.from_records(
        ("layer", "neuron"), ({"layer": layer, "neuron": index} for layer, index in neurons)
    )  # fmt: skip
    if chosen.source is None:
        options.setdefault("nulls", "layer")  # look-alikes need the diff run's statistics
    options.setdefault("show_progress", log is not None)
    options = _checked(AblationConfig, "ablate", out, model=model, prompts=prompts, neuron_set=chosen, **options)
    with _run_dir(out) as target:
        config = AblationConfig(out=target, **options)
        report = run_ablation(config, log=log or _quiet)
        generations = _generations(target)
    return AblationResult(report, generations, Path(out) if out is not None else None)


def steer(
    model: str | os.PathLike, vector: str | os.PathLike, layer: int, coeffs: Sequence[float],
    prompts: str | os.PathLike, out: str | Path | None = None, log=None, **options,
) -> AblationResult:  # fmt: skip
    """Add ``coeff`` x the unit vector of ``vector``'s layer ``layer`` (a direction file or persona-vector run
    directory) to the residual stream after that block, for each coefficient, against ``controls`` random
    directions of the same norm, on ``prompts`` (``responses``, ``samples``, ``alternative``, ... as ``ablate``)."""
    from interp.steering import SteerConfig, run_steering

    if isinstance(coeffs, str) or not fits(coeffs, list[float]):
        raise UserInputError(f"interp.steer() takes a list of numbers as coeffs, not {coeffs!r}.")
    options.setdefault("show_progress", log is not None)
    text = ",".join(repr(float(c)) for c in coeffs)
    options = _checked(SteerConfig, "steer", out, model=model, vector=vector, layer=layer, coeffs=text,
                       prompts=prompts, **options)  # fmt: skip
    with _run_dir(out) as target:
        config = SteerConfig(out=target, **options)
        report = run_steering(config, log=log or _quiet)
        generations = _generations(target)
    return AblationResult(report, generations, Path(out) if out is not None else None)


def _generations(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "generations.jsonl")


def _checked(cls: type, function: str, out, **values) -> dict:
    """``values`` for ``cls`` (and ``out``), checked against its declared types before any work: a
    ``pathlib.Path`` is taken as its text where text is declared; a list of prompts is refused with what to pass
    instead."""
    if isinstance(values.get("prompts"), list | tuple):
        raise UserInputError(
            f"interp.{function}() takes prompts as a prompt set (a .txt or .jsonl file, or a built-in set such as "
            "'persona-demo'), not a list; write the prompts to a .txt file, one per line."
        )
    types = declared_types(cls)
    values = {k: os.fspath(v) if isinstance(v, os.PathLike) and types.get(k) is not Path else v
              for k, v in values.items()}  # fmt: skip
    check_options({**values, "out": out}, {**types, "out": Path | None}, f"interp.{function}()")
    return values


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
