"""``interp replicate RUN_DIR``: does a pipeline's finding survive a second training seed?

The same adapter is trained again with another seed (every other setting as recorded in RUN_DIR's
``pipeline.json``) into ``RUN_DIR/replicate-seed{S}/``, diffed on the same selection prompts, and its own top
neurons go through the same causal stages (restore, necessity, sufficiency) on the same held-out prompts.
Both diffs teacher-force the *first* adapter's answers, so the two runs differ only in the training seed.
``RUN_DIR/replication.json`` records:
- ``jaccard``: the overlap |A & B| / |A | B| of the two top-k neuron sets by |score| and of the two tested sets;
- per causal test, both runs' effect, adjusted p-value and verdict, and ``replicated``: the same verdict
  (significant or not, after Holm over the run's causal tests) with effects of the same sign.
The report labels each finding "replicated with seed S" or "does not replicate with seed S".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from finetune.pipeline import CAUSAL, Pipeline, PipelineConfig, family_tests
from interp import artifacts
from interp.errors import UserInputError
from interp.neuron_set import NeuronSet

JACCARD_TOP = 20  # neurons.csv rows compared by |score|
# What replicate reads from the first run's pipeline.json and ablation.json files.
PIPELINE_NEEDS = ("settings.model", "settings.trait", "settings.quick", "settings.stages")
ABLATION_NEEDS = ("neurons", "comparisons.*.effect")


def replicate(
    run_dir: Path, seed: int = 1, log: Callable[[str], None] = print, device: str = "auto", show_progress: bool = True
) -> dict:
    """Train, diff and test a second seed of the pipeline run in ``run_dir``; write and return replication.json."""
    run_dir = Path(run_dir)
    record_path = run_dir / "pipeline.json"
    if not record_path.is_file():
        raise UserInputError(f"{str(run_dir)!r} is not a pipeline run directory (no pipeline.json).")
    settings = artifacts.read_json(record_path, PIPELINE_NEEDS, command="pipeline")["settings"]
    for stage in ("diff", *CAUSAL):
        if not (run_dir / stage).is_dir():
            raise UserInputError(f"{str(run_dir)!r} has no finished {stage} stage; run the pipeline first.")
    findings = {"original": _findings(run_dir)}  # every file the comparison reads, checked before any training
    stages = {stage: dict(options) for stage, options in settings["stages"].items()}
    original_seed = stages.get("finetune", {}).get("seed", 0)
    if seed == original_seed:
        raise UserInputError(f"--seed {seed} is the seed the run was trained with; choose another.")
    stages.setdefault("finetune", {})["seed"] = seed
    out = run_dir / f"replicate-seed{seed}"
    config = PipelineConfig(model=settings["model"], trait=settings["trait"], out=out, quick=settings["quick"],
                            device=device, show_progress=show_progress, stages=stages)  # fmt: skip
    first = Pipeline(PipelineConfig(model=settings["model"], trait=settings["trait"], out=run_dir), log=lambda _: None)
    Pipeline(config, log=log, responses=Path(first.responses)).run(("fetch", "finetune", "diff", *CAUSAL))
    findings["replicate"] = _findings(out)

    runs = {"original": run_dir, "replicate": out}
    tests = {
        name: family_tests({stage: path / stage / "ablation.json" for stage in CAUSAL}) for name, path in runs.items()
    }
    result = {
        "command": "replicate",
        "seeds": {"original": original_seed, "replicate": seed},
        "replicate_dir": str(out),
        "responses": "the first adapter's answers, teacher-forced in both runs",
        "jaccard": {
            f"top_{JACCARD_TOP}_by_score": jaccard(*(found["top"] for found in findings.values())),
            "tested_sets": jaccard(*(set(found["ablations"]["necessity"]["neurons"]) for found in findings.values())),
        },
        "directions": {name: found["direction"] for name, found in findings.items()},
        "tests": {stage: _agreement(stage, findings, tests) for stage in CAUSAL if stage in tests["original"]},
    }
    artifacts.write_json(run_dir / "replication.json", result)
    return result


def jaccard(first: set, second: set) -> float:
    """|A & B| / |A | B| (1 for two empty sets)."""
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def _findings(run: Path) -> dict:
    """What the comparison reads from a pipeline run: the top neurons by |score|, the diff's emoji direction and
    the causal stages' ablation.json, each through the artifact readers (a damaged or older file is named)."""
    summary = artifacts.read_json(run / "diff" / "summary.json", ("emoji.direction",), command="diff-neurons")
    ablations = {stage: artifacts.read_json(run / stage / "ablation.json", ABLATION_NEEDS, command="ablate")
                 for stage in CAUSAL}  # fmt: skip
    top = NeuronSet.read(run / "diff" / "neurons.csv", flag="run file").top(JACCARD_TOP).labels
    return {"top": set(top), "direction": summary["emoji"]["direction"], "ablations": ablations}


def _agreement(stage: str, findings: dict[str, dict], tests: dict[str, dict]) -> dict:
    """Both runs' result of one causal test and whether the verdict replicated."""
    entry = {}
    for name, found in findings.items():
        comparison = next(iter(found["ablations"][stage]["comparisons"].values()))
        test = tests[name].get(stage, {})
        entry[name] = {
            "effect": comparison["effect"], "relative_effect": comparison.get("relative_effect"),
            "p_value_adjusted": test.get("p_value_adjusted"), "significant": test.get("significant", False),
        }  # fmt: skip
    original, again = entry["original"], entry["replicate"]
    entry["replicated"] = original["significant"] == again["significant"] and (
        (original["effect"] > 0) == (again["effect"] > 0)
    )
    return entry
