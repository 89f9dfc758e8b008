"""`interp pipeline --quick` on the embedded default model: every stage, the report, resuming after Ctrl-C."""

from __future__ import annotations

import json
import re
import shutil

from cli import main
from finetune.pipeline import STAGES, Pipeline


def test_quick_pipeline_runs_every_stage_and_resumes(metric_models_dir, tmp_path, monkeypatch):
    config = tmp_path / "pipeline.toml"
    config.write_text(f"[evaluate]\nmetric_models = {json.dumps(str(metric_models_dir))}\n", encoding="utf-8")
    out = tmp_path / "run"
    argv = ["pipeline", "--quick", "--out", str(out), "--config", str(config), "--device", "cpu"]
    assert main(argv) == 0

    record = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    assert list(record["stages"]) == list(STAGES)
    assert {entry["state"] for entry in record["stages"].values()} == {"done"}
    for artifact in ("finetune/merged/config.json", "evaluate/table.json", "diff/neurons.csv", "diff/profiles.json",
                     "necessity/ablation.json", "sufficiency/ablation.json", "dose/ablation.json"):  # fmt: skip
        assert (out / artifact).is_file(), artifact
    assert re.search(r"emoji use (rises|falls|unchanged)", record["headline"])
    assert "random matched neuron sets" in record["headline"]
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
    assert states == {**{stage: "skipped" for stage in STAGES}, "dose": "done", "report": "done"}
