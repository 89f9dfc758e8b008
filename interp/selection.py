"""Where a causal test's neurons were selected: the diff run behind a ``neurons.csv``.

A diff run directory records what the selection saw, so that ``ablate`` can
- say whether it tests on the prompts the neurons were selected on (``selection_overlap``: the share of its
  prompts whose fingerprint is among the diff's, from ``summary.json["prompt_fingerprints"]``), and
- draw selection-matched controls (``interp.controls``) from the features the ranking used
  (``landscape.safetensors``: both models' signed emoji_dla; ``stats.safetensors``: both models' activations).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from interp.controls import ROLES, NeuronValues, SelectionFeatures
from interp.prompts import Prompt


def prompt_fingerprint(prompt: Prompt) -> str:
    """sha256 (first 16 hex digits) of a prompt's messages (not its response)."""
    text = json.dumps([list(message) for message in prompt.messages], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prompt_fingerprints(prompts: list[Prompt]) -> list[str]:
    """The distinct prompts' fingerprints, in order of first appearance."""
    return list(dict.fromkeys(prompt_fingerprint(p) for p in prompts))


def overlap(prompts: list[Prompt], selected_on: list[str]) -> float:
    """Share (0-1) of the distinct ``prompts`` that are among the fingerprints ``selected_on``."""
    mine = prompt_fingerprints(prompts)
    chosen = set(selected_on)
    return sum(f in chosen for f in mine) / len(mine) if mine else 0.0


@dataclass
class DiffSelection:
    """The diff run a neurons.csv came from: its prompts' fingerprints and the features its ranking used."""

    path: Path
    prompt_fingerprints: list[str] | None  # None for diff runs written before fingerprints were recorded
    features: SelectionFeatures | None  # None without landscape.safetensors and stats.safetensors
    model_fingerprints: dict[str, str | None]  # "base" / "finetuned" -> weights fingerprint

    @classmethod
    def beside(cls, neurons_csv: str | Path) -> DiffSelection | None:
        """The diff run in the folder of ``neurons_csv``, or None if that folder holds no summary.json."""
        folder = Path(neurons_csv).parent
        summary = diff_summary(folder)
        if summary is None:
            return None
        models = summary.get("models") or {}
        fingerprints = {role: (models.get(role) or {}).get("fingerprint") for role in ("base", "finetuned")}
        return cls(folder, summary.get("prompt_fingerprints"), _features(folder), fingerprints)

    def role_of(self, fingerprint: str) -> str | None:
        """ "base" or "finetuned" if ``fingerprint`` is one of the diff's models, else None."""
        return next((role for role, value in self.model_fingerprints.items() if value == fingerprint), None)


def diff_summary(folder: Path) -> dict | None:
    """The summary.json of the diff run in ``folder``; None when there is none or it is not readable JSON."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def _features(folder: Path) -> SelectionFeatures | None:
    """What the diff in ``folder`` measured per neuron ([len(layers), d_mlp] each: both models' means and signed
    emoji_dla, the activation rms); None without both files or with a damaged or foreign one."""
    from safetensors import SafetensorError, safe_open

    from interp.stats import load_stats

    landscape, stats_path = folder / "landscape.safetensors", folder / "stats.safetensors"
    if not (landscape.is_file() and stats_path.is_file()):
        return None
    try:
        with safe_open(str(landscape), "pt") as handle:
            layers = json.loads((handle.metadata() or {})["layers"])
            dla = {role: handle.get_tensor(f"emoji_dla_{role}").double() for role in ROLES}
        entries = load_stats(stats_path)
        slots = {role: [entries[role].slot(layer) for layer in layers] for role in ROLES}
        mean = {role: entries[role].mean[slots[role]].double() for role in ROLES}
        rms = sum((entries[role].mean[slots[role]] ** 2 + entries[role].var[slots[role]]).sqrt() for role in ROLES)
    except (KeyError, ValueError, OSError, SafetensorError):  # a damaged or foreign file: no matched null
        return None
    return SelectionFeatures(layers, NeuronValues(mean, dla), (rms / len(ROLES)).double())
