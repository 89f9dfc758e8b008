"""`interp pipeline --quick` on the embedded default model: every stage, the report, resuming after Ctrl-C."""

from __future__ import annotations

import json
import re
import shutil

from cli import main
from finetune.pipeline import CAUSAL, OPTIONAL, STAGES, Pipeline


def test_quick_pipeline_runs_every_stage_and_resumes(metric_models_dir, tmp_path, monkeypatch):
    config = tmp_path / "pipeline.toml"
    # --quick as users run it, made lighter through the config file (which this also tests): fewer training steps,
    # shorter answers, 4 control sets, sampled answers in restore only (for the report's generations; sampling in
    # ablate is tested on tiny models). Every stage still runs on the real model.
    tables = [f"[evaluate]\nmetric_models = {json.dumps(str(metric_models_dir))}\nmax_new_tokens = 16",
              "[finetune]\nmax_steps = 3", "[dose]\ncontrols = 2",
              *(f"[{stage}]\nsamples = {int(stage == 'restore')}\ncontrols = 4" for stage in CAUSAL)]  # fmt: skip
    config.write_text("\n".join(tables) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    argv = ["pipeline", "--quick", "--out", str(out), "--config", str(config), "--device", "cpu"]
    assert main(argv) == 0

    record = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    assert list(record["stages"]) == [stage for stage in STAGES if stage not in OPTIONAL]  # mend: tests/unit
    assert {entry["state"] for entry in record["stages"].values()} == {"done"}
    for artifact in ("finetune/merged/config.json", "evaluate/table.json", "diff/neurons.csv", "diff/profiles.json",
                     "restore/ablation.json", "necessity/ablation.json", "sufficiency/ablation.json",
                     "dose/ablation.json"):  # fmt: skip
        assert (out / artifact).is_file(), artifact
    assert re.search(r"emoji use (rises|falls)|no clear change in emoji use", record["headline"])
    assert "4 layer-matched and 4 selection-matched control sets" in record["headline"]
    assert "(held-out prompts)" in record["headline"]  # selected on even test questions, tested on odd ones
    tests = record["tests"]
    assert tests["method"] == "holm" and tests["family"] == ["restore", "necessity", "sufficiency"]
    for stage in tests["family"]:
        ablation = json.loads((out / stage / "ablation.json").read_text(encoding="utf-8"))
        comparison = next(iter(ablation["comparisons"].values()))
        assert ablation["selection_overlap"] == 0 and comparison["alternative_source"].startswith("predicted")
        assert tests[stage]["p_value_adjusted"] >= comparison["p_value"]
    report = (out / "report.html").read_text(encoding="utf-8")
    for section in ("overview", "landscape", "neurons", "causal", "generations"):
        assert f'<section id="{section}">' in report
    assert (out / "report.html").stat().st_size < 15e6

    # Ctrl-C during a stage: nothing of it is kept, the finished stages stay, a rerun does only what is left.
    shutil.rmtree(out / "dose")

    def interrupted(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Pipeline, "_dose", interrupted)
        assert main(argv) == 130
    assert not (out / "dose").exists()
    assert main(argv) == 0
    states = {
        stage: entry["state"] for stage, entry in json.loads((out / "pipeline.json").read_text())["stages"].items()
    }
    assert states == {
        **{stage: "skipped" for stage in STAGES if stage not in OPTIONAL},
        "dose": "done",
        "report": "done",
    }
    # `interp replicate` (a second training seed) is tested on a tiny model: tests/unit/test_pipeline.py.
