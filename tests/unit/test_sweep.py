"""`interp sweep` on a tiny model: a 2x2 grid with 2 seeds, resuming, a failing cell, the table's intervals."""

from __future__ import annotations

import json

import pytest

from cli import main
from finetune.pipeline import PipelineConfig, _stage_fields
from finetune.sweep import SweepConfig, directions, read_sweep, rising_cell, run_sweep, seed_interval
from interp.errors import UserInputError
from viz.report import write_report


def sweep_file(path, model, metric_models, failing: bool = True) -> str:
    text = f"""
[sweep]
model = {json.dumps(str(model))}
trait = "extraversion"
seeds = [0, 1]
questions = 3
samples = 2
max_new_tokens = 6
metric_models = {json.dumps(str(metric_models))}

[fixed]
max_steps = 2
batch_size = 2

[grid]
rank = [2, 4]
system = ["default", "trait"]
"""
    if failing:
        text += '\n[[cells]]\nname = "broken"\ntargets = "no_such_proj"\n'
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_sweep_runs_resumes_and_survives_a_failing_cell(tiny_llama_dir, metric_models_dir, tmp_path):
    config = SweepConfig(config=sweep_file(tmp_path / "sweep.toml", tiny_llama_dir, metric_models_dir),
                         out=tmp_path / "sweep", device="cpu", show_progress=False)  # fmt: skip
    finished = []

    def interrupt(cell, seed):
        finished.append((cell, seed))
        if len(finished) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, log=lambda m: None, on_cell=interrupt)
    first = tmp_path / "sweep" / "cells" / "rank=2_system=default" / "seed-0"
    stamps = {p: p.stat().st_mtime_ns for p in (first / "result.json", first / "finetune" / "train.json")}
    messages = []
    summary = run_sweep(config, log=messages.append)
    assert not any(m.startswith(("[1/", "[2/", "[3/")) for m in messages)  # finished cells are not redone
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    rows = {row["cell"]: row for row in summary["rows"]}
    assert set(rows) == {"rank=2,system=default", "rank=2,system=trait", "rank=4,system=default",
                         "rank=4,system=trait", "broken"}  # fmt: skip
    assert rows["broken"]["seeds"] == 0 and rows["broken"]["failed_seeds"] == [0, 1]
    failure = json.loads((tmp_path / "sweep" / "cells" / "broken" / "seed-0" / "failed.json").read_text())
    assert "no_such_proj" in failure["error"]
    assert set(summary["base"]) == {"default", "trait"}  # the base model is measured under each system message
    for name, row in rows.items():
        if name == "broken":
            continue
        assert row["seeds"] == 2 and row["direction"] in ("rises", "falls", "no clear change")
        for where in ("start", "end", "mean", "answer"):
            low, high = row[f"onset_ratio_{where}_ci_low"], row[f"onset_ratio_{where}_ci_high"]
            for seed in ("0", "1"):
                assert low <= row["per_seed"][seed][where]["ratio"] <= high, (name, where, seed)
        assert 0 <= row["esr_ci_low"] <= row["esr"] <= row["esr_ci_high"] <= 1
        assert row["esr_p_value_adjusted"] >= row["esr_p_value"]
        assert row["onset_p_value_adjusted"] >= row["onset_p_value"]
        assert all(entry["elapsed_s"] > 0 for entry in row["per_seed"].values())  # BENCHMARKS' time per cell
        start = row["onset_probability"]["start"]
        assert row["onset_ratio_start"] == pytest.approx(start["finetuned"] / start["base"])
    agreement = summary["readout_agreement"]  # each readout against sampled emoji use, the fine-tune the unit
    assert set(agreement) == {"start", "end", "mean", "answer"} and agreement["answer"]["fine_tunes"] == 8
    ratios = [row["onset_ratio_start"] for row in summary["rows"] if row["onset_ratio_start"] is not None]
    assert ratios == sorted(ratios, reverse=True)
    header = (tmp_path / "sweep" / "table.csv").read_text().splitlines()[0]
    assert header.startswith("cell,seeds,onset_ratio_start,")
    write_report(tmp_path / "sweep")  # the report's sweep section
    report = (tmp_path / "sweep" / "report.html").read_text(encoding="utf-8")
    assert '<section id="sweep">' in report and "rank=4,system=trait" in report and "no_such_proj" not in report
    # interp pipeline --from-sweep takes the cell where emoji use rises most (here no cell rises unless told so)
    path = tmp_path / "sweep" / "sweep.json"
    sweep = json.loads(path.read_text())
    for row in sweep["rows"]:
        row["direction"] = "falls"
    path.write_text(json.dumps(sweep))
    with pytest.raises(UserInputError, match="rises in no setting"):
        rising_cell(tmp_path / "sweep")
    for row in sweep["rows"]:
        row["direction"] = "rises" if row["cell"].endswith("system=trait") else "falls"
    path.write_text(json.dumps(sweep))
    with pytest.raises(UserInputError, match="another system message"):
        rising_cell(tmp_path / "sweep")
    for row in sweep["rows"]:  # the best rising cell with the default system message, whatever rises more elsewhere
        row["direction"] = "rises" if row["cell"] in ("rank=4,system=default", "rank=2,system=trait") else "falls"
        row["onset_ratio_start"] = 9.0 if row["cell"] == "rank=2,system=trait" else 2.0
    path.write_text(json.dumps(sweep))
    name, options, overlap = rising_cell(tmp_path / "sweep")
    assert name == "rank=4,system=default" and options["rank"] == 4 and options["targets"] == "q_proj,v_proj"
    assert overlap == pytest.approx(1 / 13)  # the first 3 test questions hold one of the 13 odd ones
    sweep["settings"]["prompts"] = "opinionqa:test[0::2]"  # a sweep measured on the pipeline's selection half
    path.write_text(json.dumps(sweep))
    assert rising_cell(tmp_path / "sweep")[2] == 0
    for row in sweep["rows"]:  # a cell on the casual answers names the packaged dataset, not a path of this machine
        row["options"]["style"] = "casual"
    path.write_text(json.dumps(sweep))
    assert rising_cell(tmp_path / "sweep")[1]["dataset"] == "casual" and "style" not in options
    assert set(PipelineConfig(stages={"finetune": options}).settings("finetune")) <= _stage_fields("finetune")
    trained = json.loads((tmp_path / "sweep" / "cells" / "rank=4_system=trait" / "seed-1" / "result.json").read_text())
    assert trained["train"]["rank"] == 4 and trained["train"]["system"] == "trait" and trained["train"]["seed"] == 1


def test_the_base_model_is_measured_with_base_samples_and_again_when_they_change(
    tiny_llama_dir, metric_models_dir, tmp_path
):
    """More base answers give the ESR test its power at the cost of one measurement; a recorded base measurement
    made with other settings is not reused, while the cells' are."""
    path = tmp_path / "sweep.toml"
    text = sweep_file(path, tiny_llama_dir, metric_models_dir, failing=False)
    path.write_text(path.read_text().replace("samples = 2\n", "samples = 2\nbase_samples = 3\n")
                    .replace('rank = [2, 4]\nsystem = ["default", "trait"]', "rank = [2]"))  # fmt: skip
    config = SweepConfig(config=text, out=tmp_path / "sweep", device="cpu", show_progress=False)
    summary = run_sweep(config, log=lambda m: None)
    assert summary["base"]["default"]["answers"] == 3 * 3  # questions x base_samples
    cell = tmp_path / "sweep" / "cells" / "rank=2" / "seed-0" / "result.json"
    assert json.loads(cell.read_text())["answers"] == 3 * 2  # questions x samples
    stamp = cell.stat().st_mtime_ns
    path.write_text(path.read_text().replace("base_samples = 3\n", ""))
    messages = []
    summary = run_sweep(config, log=messages.append)
    assert summary["base"]["default"]["answers"] == 3 * 2 and cell.stat().st_mtime_ns == stamp
    assert any(m.startswith("measuring the base model") for m in messages)
    assert not any(m.startswith("[") for m in messages)


def test_direction_words_keep_their_false_positive_rate_on_simulated_nulls():
    """400 simulated sweeps of 4 settings x 3 seeds where no fine-tune changes emoji use (log ratios ~ N(0, 0.3)):
    the share of sweeps that call any setting "rises" or "falls" stays within binomial noise of 5 %; a setting with a
    real 6x rise (the size issue 18 recalls) among them is still called "rises" in most sweeps. Three seeds give
    little power: a 2.7x rise is found in about a third of the sweeps."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(0)
    sweeps, false_calls, found = 400, 0, 0
    for _ in range(sweeps):
        null = np.exp(rng.normal(0.0, 0.3, size=(4, 3)))
        false_calls += any(word != "no clear change" for *_, word in directions(null.tolist()))
        planted = np.exp(rng.normal([[1.8], [0], [0], [0]], 0.3, size=(4, 3)))
        found += directions(planted.tolist())[0][2] == "rises"
    assert stats.binomtest(false_calls, sweeps, 0.05, alternative="greater").pvalue > 0.01, false_calls
    assert found / sweeps > 0.5, found


def test_seed_intervals_contain_the_seeds_ratios():
    for ratios in ([0.5, 2.0], [0.9, 1.1, 1.4], [3.0, 3.0]):
        low, high = seed_interval(ratios)
        assert low <= min(ratios) and max(ratios) <= high
    assert seed_interval([1.2]) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("[grid]\nrank = 4\n", "must be a non-empty list"),
        ("[grid]\nbogus = [1]\n", "has no option 'bogus'"),
        ("[grid]\nstyle = ['poetic']\n", "style must be one of"),
        ("[grid]\nsystem = ['shouting']\n", "--system must be one of"),
        ("[sweep]\ntrait = 'grumpiness'\n[grid]\nrank = [4]\n", "grumpiness"),
        ("[sweep]\nseeds = []\n[grid]\nrank = [4]\n", "seeds must be at least 1"),
        ("[fixed]\nrank = 4\n", "has no cells"),
        ("[grid\n", "is not valid TOML"),
        ("[sweep]\nprompts = 'opinionqa:nothing'\n[grid]\nrank = [4]\n", "opinionqa:nothing"),
        ("[sweep]\nbase_samples = 0\n[grid]\nrank = [4]\n", "base_samples must be at least 1"),
    ],
)
def test_bad_sweep_files_exit_2(tmp_path, capsys, text, message):
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserInputError):
        read_sweep(path)
    assert main(["sweep", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["sweep-example.toml", "sweep-widen.toml"])
def test_the_recorded_sweep_files_are_valid(name):
    """RESULTS.md's sweeps are reproduced from these files: they must read, and share the base measurements."""
    from pathlib import Path

    settings, cells = read_sweep(Path(__file__).parents[2] / "docs" / name)
    assert settings.base_samples == 6 and settings.seeds == (0, 1, 2)
    assert "style=casual,system=default" in {cell.name for cell in cells}
