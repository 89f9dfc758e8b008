"""`interp pipeline` settings: defaults, --quick, the TOML config file, and refusing to mix runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli import main
from finetune.pipeline import DEFAULTS, QUICK, PipelineConfig, _stage_fields, load_config_file


@pytest.mark.parametrize("quick", [True, False])
def test_stage_settings_are_real_options(quick):
    """Every default and --quick setting names an option of its stage (a typo would fail only at run time)."""
    config = PipelineConfig(quick=quick)
    for stage in DEFAULTS:
        assert set(config.settings(stage)) <= _stage_fields(stage), stage


def test_config_file_overrides_quick_which_overrides_defaults(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[necessity]\ncontrols = 7\nmode = "mean"\n[finetune]\nrank = 8\n', encoding="utf-8")
    config = PipelineConfig(quick=True, stages=load_config_file(path))
    necessity = config.settings("necessity")
    assert necessity["controls"] == 7 and necessity["mode"] == "mean"  # the file wins
    assert necessity["top_k"] == QUICK["necessity"]["top_k"]  # --quick beats the default
    assert config.settings("finetune") == {"max_steps": QUICK["finetune"]["max_steps"], "rank": 8}
    assert PipelineConfig().settings("necessity")["controls"] == DEFAULTS["necessity"]["controls"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[diff]\nbogus = 1\n", "has no option 'bogus'"),
        ("[training]\nrank = 1\n", "[training] is not a stage table"),
        ("[diff\n", "is not valid TOML"),
        ("[diff]\nbase = 'other'\n", "has no option 'base'"),  # set by the pipeline itself
        ("[necessity]\ncontrols = 'many'\n", "controls should be a whole number, not 'many'"),
        ("[finetune]\nlr = true\n", "lr should be"),
    ],
)
def test_bad_config_files_exit_2(tmp_path, capsys, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    assert main(["pipeline", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_missing_config_file_and_bad_trait_exit_2(tmp_path, capsys):
    assert main(["pipeline", "--config", str(tmp_path / "none.toml")]) == 2
    assert main(["pipeline", "--trait", "grumpiness", "--out", str(tmp_path / "run")]) == 2
    assert "grumpiness" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_directory_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    other = {"command": "pipeline", "settings": PipelineConfig(quick=True).identity(), "stages": {}}
    (out / "pipeline.json").write_text(json.dumps(other), encoding="utf-8")
    assert main(["pipeline", "--out", str(out)]) == 2  # same directory, not --quick: refused before any work
    assert "other settings" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.json"]


def test_the_documented_config_example_is_valid(tmp_path):
    docs = (Path(__file__).parents[2] / "docs" / "pipeline.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", docs, re.S).group(1)
    path = tmp_path / "example.toml"
    path.write_text(example, encoding="utf-8")
    stages = load_config_file(path)
    assert stages["necessity"]["mode"] == "mean" and PipelineConfig(stages=stages).settings("dose")["alpha"]


def test_neurons_can_be_chosen_by_the_sign_of_their_score(tmp_path, capsys):
    from interp.neuron_set import NeuronSet

    table = tmp_path / "neurons.csv"
    table.write_text("rank,layer,neuron,score\n1,2,5,-3.0\n2,1,7,2.5\n3,0,9,-1.0\n4,2,1,0.5\n", encoding="utf-8")
    ranked = NeuronSet.read(table)
    assert ranked.top(2).addresses == [(2, 5), (1, 7)]
    assert ranked.with_sign("lowering").top(2).labels == ["2:5", "0:9"]
    assert ranked.with_sign("raising").top(None).addresses == [(1, 7), (2, 1)]
    assert ranked.to_csv() == table.read_text(encoding="utf-8")  # read and written back unchanged
    for direction, sign in (("falls", "lowering"), ("rises", "raising"), ("no clear change", "any")):
        (tmp_path / "summary.json").write_text(json.dumps({"emoji": {"direction": direction}}), encoding="utf-8")
        assert ranked.followed_sign() == sign  # "follow" reads the diff run beside the table
    (tmp_path / "summary.json").unlink()
    (tmp_path / "bad.csv").write_text("rank,layer,neuron\n1,x,5\n", encoding="utf-8")
    with pytest.raises(__import__("interp.errors").errors.UserInputError, match="not a number"):
        NeuronSet.read(tmp_path / "bad.csv")
    with pytest.raises(__import__("interp.errors").errors.UserInputError, match="needs the diff run's summary.json"):
        ranked.with_sign("follow")
    argv = ["ablate", "--model", "smollm2-135m", "--neurons-from", str(table), "--sign", "sideways",
            "--prompts", "persona-demo", "--out", str(tmp_path / "a")]  # fmt: skip
    assert main(argv) == 2
    assert "--sign must be one of any, raising, lowering, follow" in capsys.readouterr().err


def test_a_column_of_floats_is_written_as_value_by_value_formatting_would():
    from interp.neuron_set import NeuronSet, format_value

    floats = [0.1, -0.0, float("nan"), float("inf"), -1e-300, 123456789.123, 2.5e-7, 1 / 3]
    flags, mixed = [True, False] * 4, [1, 2.5, "a", True, 3, 4.0, 5, 6]
    words = ["new", "amplified", "suppressed", "unchanged"] * 2
    columns = {"layer": [0] * 8, "neuron": list(range(-3, 5)), "score": floats, "above_noise": flags, "mixed": mixed,
               "category": words}  # fmt: skip
    ranked = NeuronSet.from_columns(columns)
    for row, values in zip(ranked.rows, zip(*columns.values())):
        assert tuple(row.values()) == tuple(map(format_value, values))  # every column, whatever its type
    assert [row["score"] for row in ranked.rows][:4] == ["0.1", "-0", "nan", "inf"]


def test_causal_stages_are_holm_adjusted_as_one_family_per_claim(tmp_path):
    from finetune.pipeline import family_tests

    paths = {}
    claims = (("restore", 0.01, 0.001, 0.2), ("necessity", 0.03, 0.004, 0.01), ("sufficiency", 0.02, 0.5, None))
    for stage, p_value, specific_p, behaviour_p in claims:
        null = {"p_value": p_value, "min_p_value": 0.0099, "control_effects": [0.0] * 100, "effect_in_control_sd": 4.0}
        comparison = {
            "p_value": p_value, "min_p_value": 0.0099, "alternative": "less", "effect": -0.01, "relative_effect": -0.5,
            "prompts": 13, "nulls": {"layer": null},
            "specificity": {"p_value": specific_p, "sets": 1000, "emoji_relative_change": -0.5, "min_p_value": 0.001,
                            "matched_relative_change_5_95": [-0.1, 0.1], "share_of_sets_as_extreme": 0.0,
                            "entropy_change": {"mean_nats": 0.01}},
        }  # fmt: skip
        if behaviour_p is not None:
            comparison["behaviour"] = {"p_value": behaviour_p, "pairs": 13, "tested_with_emoji": 0,
                                       "agreement": "agree", "unedited_with_emoji": 3, "rate_difference": -0.2,
                                       "rate_difference_ci95": [-0.4, 0.0]}  # fmt: skip
        paths[stage] = tmp_path / stage / "ablation.json"
        paths[stage].parent.mkdir()
        paths[stage].write_text(json.dumps({"comparisons": {"x": comparison}}))
    paths["missing"] = tmp_path / "missing" / "ablation.json"  # a stage that did not run is left out
    tests = family_tests(paths)
    assert tests["family"] == ["restore", "necessity", "sufficiency"]
    assert [tests[s]["p_value_adjusted"] for s in tests["family"]] == pytest.approx([0.03, 0.04, 0.04])
    assert [tests[s]["significant"] for s in tests["family"]] == [True, True, True]
    specificity = [tests[s]["specificity"] for s in tests["family"]]  # its own family of three
    assert [c["p_value_adjusted"] for c in specificity] == pytest.approx([0.003, 0.008, 0.5])
    assert [c["specific"] for c in specificity] == [True, True, False]
    assert tests["sufficiency"]["behaviour"] is None  # not sampled: a family of the two that were
    assert [tests[s]["behaviour"]["p_value_adjusted"] for s in ("restore", "necessity")] == pytest.approx([0.2, 0.02])
    verdict = tests["necessity"]["verdict"]  # the words carry the family's adjusted p-values, one per claim
    assert "Holm-adjusted p = 0.04 over 3 tests" in verdict and "Holm-adjusted 0.008" in verdict
    assert "Holm-adjusted 0.02: significant" in verdict


def test_replicate_needs_a_pipeline_run(tmp_path, capsys):
    from finetune.replication import jaccard

    assert jaccard({"1:2", "3:4"}, {"3:4"}) == 0.5 and jaccard(set(), set()) == 1.0
    assert main(["replicate", str(tmp_path)]) == 2
    assert "is not a pipeline run directory" in capsys.readouterr().err


def test_a_run_directory_started_on_another_device_is_refused_unless_asked(tmp_path, capsys):
    from finetune.pipeline import Pipeline

    out = tmp_path / "run"
    out.mkdir()
    config = PipelineConfig(out=out, device="cpu")
    started = {"command": "pipeline", "settings": config.identity(), "stages": {},
               "placement": {"device": "cuda", "dtype": "bfloat16"}}  # fmt: skip
    (out / "pipeline.json").write_text(json.dumps(started), encoding="utf-8")
    assert main(["pipeline", "--out", str(out), "--device", "cpu"]) == 2
    assert "was started on cuda in bfloat16 and this run would continue on cpu in float32" in capsys.readouterr().err
    allowed = PipelineConfig(out=out, device="cpu", allow_device_change=True)
    assert Pipeline(allowed, log=lambda _: None)._start_record()["placement"] == started["placement"]
    assert config.placement() == {"device": "cpu", "dtype": "float32"}


def teacher_forced_answers(path: Path) -> Path:
    from interp.prompts import load_prompts

    lines = [json.dumps({"prompt_index": p.index, "response": "I love meeting new people!"})
             for p in load_prompts("opinionqa:test")]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_stage_interrupted_between_its_writes_is_redone(tmp_path, monkeypatch, tiny_llama_dir):
    """The diff stage is stopped after it wrote neurons.csv and stats.safetensors, while writing summary.json
    (its completion marker): nothing of it is kept, and the rerun runs it again instead of skipping it."""
    from finetune.pipeline import Pipeline
    from interp import artifacts

    config = PipelineConfig(model=str(tiny_llama_dir), out=tmp_path / "run", device="cpu", show_progress=False,
                            stages={"diff": {"profile_top": 0}})  # fmt: skip
    pipeline = Pipeline(config, log=lambda _: None, responses=teacher_forced_answers(tmp_path / "answers.jsonl"))
    __import__("shutil").copytree(tiny_llama_dir, tmp_path / "run" / "finetune" / "merged")  # the "fine-tune"
    real_write_json, written = artifacts.write_json, []

    def interrupted(path, data):
        written.append(Path(path).name)
        if Path(path).name == "summary.json":
            raise KeyboardInterrupt
        real_write_json(path, data)

    monkeypatch.setattr(artifacts, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(("diff",))
    assert "summary.json" in written and not (tmp_path / "run" / "diff").exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["finetune", "pipeline.json"]  # no leftovers
    monkeypatch.setattr(artifacts, "write_json", real_write_json)
    record = pipeline.run(("diff",))
    assert record["stages"]["diff"]["state"] == "done"
    written = {p.name for p in (tmp_path / "run" / "diff").iterdir()}
    assert {"neurons.csv", "stats.safetensors", "summary.json"} <= written
    again = pipeline.run(("diff",))["stages"]["diff"]
    assert again == {"state": "skipped", "seconds": record["stages"]["diff"]["seconds"]}  # the time it took is kept
    assert again["seconds"] > 0


def test_replicate_trains_a_second_seed_and_compares_the_findings(tmp_path, tiny_llama_dir):
    """`interp replicate` on a tiny model: the adapter trained again with another seed, diffed and tested on the
    same answers, compared with the first run, and shown in the report."""
    from finetune.pipeline import CAUSAL, Pipeline

    out = tmp_path / "run"
    (out / "evaluate").mkdir(parents=True)
    teacher_forced_answers(out / "evaluate" / "peft.extraversion.generations.jsonl")  # the evaluate stage's answers
    lighter = {stage: {"samples": 0, "controls": 3} for stage in CAUSAL} | {"diff": {"profile_top": 0}}  # replicate too
    config = PipelineConfig(model=str(tiny_llama_dir), out=out, quick=True, device="cpu", show_progress=False,
                            stages=lighter)  # fmt: skip
    Pipeline(config, log=lambda _: None).run(("fetch", "finetune", "diff", *CAUSAL))

    assert main(["replicate", str(out), "--seed", "1", "--device", "cpu"]) == 0
    replication = json.loads((out / "replication.json").read_text(encoding="utf-8"))
    assert replication["seeds"] == {"original": 0, "replicate": 1}
    assert set(replication["tests"]) == {"restore", "necessity", "sufficiency"}
    assert all(0 <= value <= 1 for value in replication["jaccard"].values())
    first = json.loads((out / "restore" / "ablation.json").read_text(encoding="utf-8"))
    second = json.loads((out / "replicate-seed1" / "restore" / "ablation.json").read_text(encoding="utf-8"))
    assert first["config"]["responses"] == second["config"]["responses"]  # the same answers, another seed
    assert first["model"]["fingerprint"] != second["model"]["fingerprint"]
    assert main(["report", str(out)]) == 0
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "with training seed 1" in report and "of the top 20 neurons by |score| (Jaccard)" in report
    assert main(["replicate", str(out), "--seed", "0"]) == 2  # the run's own seed


def test_the_optional_mend_stage_edits_the_trait_in_and_is_evaluated(tmp_path, tiny_llama_dir, metric_models_dir):
    """--mend: the editor is trained, the trait edited in, and the evaluate stage has a MEND row; without --mend
    the stage is not part of the run (nor of its settings, so earlier run directories still resume)."""
    from finetune.pipeline import Pipeline

    stages = {
        "mend": {"steps": 2, "rank": 8, "layers": "1-2", "edits": 2},
        "evaluate": {"metric_models": str(metric_models_dir), "questions": 2, "max_new_tokens": 4, "ike": 0},
    }
    config = PipelineConfig(model=str(tiny_llama_dir), out=tmp_path / "run", device="cpu", show_progress=False,
                            mend=True, stages=stages)  # fmt: skip
    __import__("shutil").copytree(tiny_llama_dir, tmp_path / "run" / "finetune" / "merged")  # the "fine-tune"
    record = Pipeline(config, log=lambda _: None).run(("mend", "evaluate"))
    assert [record["stages"][s]["state"] for s in ("mend", "evaluate")] == ["done", "done"]
    edit = json.loads((tmp_path / "run" / "mend" / "edit" / "edit.json").read_text())
    assert edit["trait"] == "extraversion" and len(edit["edits"]) == 2
    rows = {row["model"]: row for row in json.loads((tmp_path / "run" / "evaluate" / "table.json").read_text())["rows"]}
    assert set(rows) == {"base", "peft", "mend"}
    for row in rows.values():
        low, high = row["emoji_onset_ci_low"], row["emoji_onset_ci_high"]
        assert 0 < row["emoji_onset"] < 1 and low <= row["emoji_onset"] <= high
    assert rows["mend"]["emoji_onset"] != rows["base"]["emoji_onset"]  # the edited weights answer differently
    assert Pipeline(config, log=lambda _: None).run(("mend",))["stages"]["mend"]["state"] == "skipped"
    assert "mend" not in PipelineConfig().identity()["stages"] and "mend" in config.identity()["stages"]
