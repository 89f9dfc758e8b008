"""diff-neurons end to end on tiny models: planted neurons ranked first, determinism, artifacts."""

from __future__ import annotations

import csv
import json
import weakref

import pytest

from cli import main
from interp import models
from interp.stats import load_stats


def _diff(base, finetuned, out, *extra) -> int:
    return main(["diff-neurons", "--base", str(base), "--finetuned", str(finetuned), "--prompts", "persona-demo",
                 "--out", str(out), "--device", "cpu", *extra])  # fmt: skip


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("base, planted_model", [("tiny_llama_dir", "planted_tiny"),
                                                  ("tiny_gemma3_dir", "planted_tiny_gemma3")])  # fmt: skip
def test_planted_neurons_rank_first(base, planted_model, request, tmp_path):
    base_dir = request.getfixturevalue(base)
    planted_dir, planted = request.getfixturevalue(planted_model)
    assert _diff(base_dir, planted_dir, tmp_path / "run") == 0
    rows = _rows(tmp_path / "run" / "neurons.csv")
    top = {(int(r["layer"]), int(r["neuron"])) for r in rows[: len(planted)]}
    assert top == set(planted)
    assert all(float(r["score"]) > 0 for r in rows[: len(planted)])  # each planted neuron pushes emojis up
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["emoji"]["direction"] == "rises"
    assert summary["emoji"]["onset_probability"]["finetuned"] > summary["emoji"]["onset_probability"]["base"]
    assert summary["noise_floor"]["neurons_above_max_score"] >= len(planted)


def test_reverse_direction_is_reported_as_falling(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, planted = planted_tiny
    assert _diff(planted_dir, tiny_llama_dir, tmp_path / "run") == 0
    rows = _rows(tmp_path / "run" / "neurons.csv")
    assert {(int(r["layer"]), int(r["neuron"])) for r in rows[: len(planted)]} == set(planted)
    assert all(float(r["score"]) < 0 for r in rows[: len(planted)])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["emoji"]["direction"] == "falls"


def test_artifacts_match_design(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, _ = planted_tiny
    assert _diff(tiny_llama_dir, planted_dir, tmp_path / "run", "--top-k", "10", "--layers", "1-2") == 0
    rows = _rows(tmp_path / "run" / "neurons.csv")
    assert len(rows) == 10
    for column in ("rank", "layer", "neuron", "score", "base_mean", "ft_mean", "mean_diff", "ratio", "cohens_d",
                   "base_freq", "ft_freq", "category", "emoji_dla"):  # fmt: skip
        assert column in rows[0]
    assert {int(r["layer"]) for r in rows} <= {1, 2}
    assert {r["category"] for r in rows} <= {"new", "amplified", "suppressed", "unchanged"}
    stats = load_stats(tmp_path / "run" / "stats.safetensors")
    assert set(stats) == {"base", "finetuned", "base_half_a", "base_half_b"}
    assert stats["base"].layers == [1, 2]
    merged = stats["base_half_a"].merge(stats["base_half_b"])
    assert float((merged.mean - stats["base"].mean).abs().max()) < 1e-12
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["models"]["base"]["fingerprint"] != summary["models"]["finetuned"]["fingerprint"]
    assert summary["tokens_counted"]["base"] == summary["tokens_counted"]["finetuned"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_same_inputs_give_identical_csv(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, _ = planted_tiny
    for name in ("a", "b"):
        assert _diff(tiny_llama_dir, planted_dir, tmp_path / name, "--generate", "1", "--max-new-tokens", "8",
                     "--positions", "response", "--seed", "3") == 0  # fmt: skip
    assert (tmp_path / "a" / "neurons.csv").read_bytes() == (tmp_path / "b" / "neurons.csv").read_bytes()


def test_rank_by_generic_column(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, _ = planted_tiny
    assert _diff(tiny_llama_dir, planted_dir, tmp_path / "run", "--rank-by", "cohens_d") == 0
    values = [abs(float(r["cohens_d"])) for r in _rows(tmp_path / "run" / "neurons.csv")]
    assert values == sorted(values, reverse=True)


def test_teacher_forced_responses_at_pre_emoji_positions(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, _ = planted_tiny
    responses = tmp_path / "responses.jsonl"
    records = [
        {"prompt_index": 0, "response": "What a day 🎉 so much fun 😊"},
        {"prompt_index": 1, "response": "Beach time 🌊"},
        {"prompt_index": 1, "response": "No emoji here."},
    ]
    responses.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    code = _diff(
        tiny_llama_dir, planted_dir, tmp_path / "run", "--responses", str(responses), "--positions", "pre-emoji"
    )
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tokens_counted"] == {"base": 3, "finetuned": 3}  # one position before each emoji
    assert summary["sequences"] == 3


@pytest.mark.parametrize("backend", ["nnsight", "transformer-lens"])
def test_backends_give_the_same_diff(tiny_llama_dir, planted_tiny, tmp_path, backend):
    planted_dir, planted = planted_tiny
    assert _diff(tiny_llama_dir, planted_dir, tmp_path / "torch", "--top-k", "20") == 0
    assert _diff(tiny_llama_dir, planted_dir, tmp_path / backend, "--top-k", "20", "--backend", backend) == 0
    reference, other = _rows(tmp_path / "torch" / "neurons.csv"), _rows(tmp_path / backend / "neurons.csv")
    assert [(r["layer"], r["neuron"]) for r in reference] == [(r["layer"], r["neuron"]) for r in other]
    for a, b in zip(reference, other):
        assert abs(float(a["score"]) - float(b["score"])) <= 1e-4 * max(1.0, abs(float(a["score"])))


def test_each_model_is_freed_before_the_next_loads(tiny_llama_dir, planted_tiny, tmp_path, monkeypatch):
    """Memory holds one model at a time: when the base model loads, the fine-tuned one's modules are gone."""
    loaded, real_load = [], models.load

    def load(*args, **kwargs):
        assert all(module() is None for module in loaded), "a model was still alive when the next one loaded"
        lm = real_load(*args, **kwargs)
        loaded.append(weakref.ref(lm.model))
        return lm

    monkeypatch.setattr(models, "load", load)
    assert _diff(tiny_llama_dir, planted_tiny[0], tmp_path / "run") == 0
    assert len(loaded) == 2 and all(module() is None for module in loaded)
