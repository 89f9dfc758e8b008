"""``interp pipeline``: the main job, every stage from a base model to the HTML report, resumable.

Stages, each writing into its own subdirectory of the run directory and skipped on rerun once its main
artifact exists (every stage writes atomically, so Ctrl-C leaves either a finished stage or none):

    fetch        resolve the model (fetch and convert an embedded one if needed)
    finetune     the trait adapter (finetune/: adapter/, merged/, train.json); resumes from its checkpoints
    mend         only with --mend (or a [mend] table): a MEND editor (mend/editor, train.json) and the trait
                 edited in with it (mend/edit/merged, edit.json), evaluated beside PEFT and IKE
    evaluate     base vs fine-tuned vs IKE on the test questions (evaluate/table.json, generations)
    diff         diff-neurons with the fine-tuned model's own answers teacher-forced, on the selection half of
                 the test questions (diff/neurons.csv, ...)
    restore      the base model's values of the top neurons written into the fine-tuned model: does undoing
                 their change undo the fine-tune's emoji change? (restore/ablation.json)
    necessity    the top neurons zeroed in the fine-tuned model (necessity/ablation.json)
    sufficiency  the fine-tuned model's values of those neurons patched into the base (sufficiency/ablation.json)
    dose         the top neurons scaled in the fine-tuned model, several alphas (dose/ablation.json)
    report       the causal stages' p-values Holm-adjusted as one family (pipeline.json "tests"), report.html

Selection and test never share prompts: neurons are selected on the even-numbered test questions
(``SELECTION_PROMPTS``) and every causal stage runs on the odd-numbered ones (``TEST_PROMPTS``). Each causal
test's direction is predicted from the diff before it runs (``alternative = "from-diff"``), and each is
compared with layer-matched and selection-matched control sets (``interp.ablation``).
The causal stages test the top-ranked neurons whose score has the sign of the fine-tune's emoji change
(``sign = "follow"``: if emoji use falls, the neurons whose change pushes emoji logits down; when the diff's
interval does not show a clear change, the top rows of either sign); ``sign = "any"`` takes the top rows
whatever their sign. Restoring and patching test the neurons' *change*, zeroing their whole contribution
(docs/pipeline.md).

``pipeline.json`` records the settings, each stage's state and wall time. A run directory belongs to one set
of settings: rerunning it with different ones is refused rather than mixing results.
Every stage's options can be set in a TOML file (``--config``), one table per stage, e.g.::

    [finetune]
    max_steps = 40
    [necessity]
    mode = "mean"      # ablate to the base model's means instead of zero
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from finetune.dataset import check_trait
from interp import artifacts
from interp.errors import UserInputError
from interp.options import check_options, declared_types
from interp.textfiles import read_toml

STAGES = ("fetch", "finetune", "mend", "evaluate", "diff", "restore", "necessity", "sufficiency", "dose", "report")
OPTIONAL = ("mend",)  # run only when asked for (PipelineConfig.mend)
CAUSAL = ("restore", "necessity", "sufficiency")  # the primary tests, Holm-adjusted as one family (dose: descriptive)
SELECTION_PROMPTS = "opinionqa:test[0::2]"  # the diff selects neurons here ...
TEST_PROMPTS = "opinionqa:test[1::2]"  # ... and the causal stages test them here

CAUSAL_DEFAULTS = {"top_k": 20, "sign": "follow", "controls": 100, "alternative": "from-diff"}
# The primary stages sample 2 answers per test question under the unedited and the tested condition (26 pairs: the
# behavioural readout; about a minute per stage on 2 CPU cores)
# Settings per stage: the defaults (about 30 minutes on 2 CPU cores) and --quick (a smoke run, about 3).
DEFAULTS: dict[str, dict] = {
    "finetune": {},
    "mend": {"edits": 4},
    "evaluate": {"samples": 1, "ike_variants": 2, "ike": 3},
    "diff": {"positions": "response", "profile_top": 50},
    "restore": {**CAUSAL_DEFAULTS, "samples": 2, "max_new_tokens": 48},
    "necessity": {**CAUSAL_DEFAULTS, "mode": "zero", "samples": 2, "max_new_tokens": 48},
    "sufficiency": {**CAUSAL_DEFAULTS, "samples": 2, "max_new_tokens": 48},
    "dose": {"top_k": 20, "sign": "follow", "alpha": "0,0.5,2", "controls": 5, "alternative": "two-sided"},
}
QUICK: dict[str, dict] = {
    "finetune": {"max_steps": 6},
    "mend": {"steps": 4, "rank": 16, "edits": 2},
    "evaluate": {"samples": 1, "ike_variants": 1, "ike": 2, "questions": 4, "max_new_tokens": 32},
    "diff": {"profile_top": 12},
    "restore": {"top_k": 6, "controls": 9, "max_new_tokens": 16},
    "necessity": {"top_k": 6, "controls": 9, "max_new_tokens": 16},
    "sufficiency": {"top_k": 6, "controls": 9, "max_new_tokens": 16},
    "dose": {"top_k": 6, "alpha": "0,2", "controls": 3},
}


@dataclass(kw_only=True)
class PipelineConfig:
    model: str = "smollm2-135m"
    trait: str = "extraversion"
    out: Path = Path("runs/pipeline")
    quick: bool = False
    mend: bool = False  # also run the optional mend stage (MEND beside PEFT and IKE in the evaluation)
    device: str = "auto"
    allow_device_change: bool = False  # continue a run directory started on another device or dtype
    show_progress: bool = True
    stages: dict[str, dict] = field(default_factory=dict)  # per-stage overrides (from --config)

    def settings(self, stage: str) -> dict:
        """The options of one stage: defaults, then --quick's, then the config file's."""
        return {**DEFAULTS.get(stage, {}), **(QUICK.get(stage, {}) if self.quick else {}), **self.stages.get(stage, {})}

    def placement(self) -> dict:
        """Where the numbers are computed: the device type and the weights' dtype the stages default to."""
        from interp import models

        device = models.pick_device(self.device)
        return {"device": device.type, "dtype": str(models.pick_dtype(None, device)).removeprefix("torch.")}

    def identity(self) -> dict:
        return {
            "model": self.model, "trait": self.trait, "quick": self.quick,
            "stages": {stage: self.settings(stage) for stage in DEFAULTS if stage in self.enabled_stages()},
        }  # fmt: skip

    def enabled_stages(self) -> tuple[str, ...]:
        """The stages this run has: all but the optional ones not asked for."""
        return tuple(stage for stage in STAGES if stage not in OPTIONAL or getattr(self, stage))


def load_config_file(path: Path) -> dict[str, dict]:
    """Read a pipeline TOML file: ``{stage: {option: value}}``; unknown stages or options, and values of another
    type than the stage's command declares, are bad input."""
    data = read_toml(path, "config file")
    for stage, options in data.items():
        if stage not in DEFAULTS or not isinstance(options, dict):
            raise UserInputError(
                f"config file {str(path)!r}: [{stage}] is not a stage table; use {', '.join(DEFAULTS)}."
            )
        check_options(options, _stage_types(stage), f"config file {str(path)!r}: [{stage}]")
    return data


def _stage_types(stage: str) -> dict:
    """The options a stage table may set, with the types its command declares (the run's own settings, such as
    the model and the prompts, are the pipeline's)."""
    from finetune.generate import GenerateConfig
    from finetune.mend import EditConfig

    owned = {"model", "trait", "out", "base", "finetuned", "prompts", "responses", "models", "source_model",
             "neurons_from", "neuron_set", "role", "device", "show_progress"}  # fmt: skip
    names = {f.name for f in fields(_stage_class(stage))} - owned
    types = {name: hint for name, hint in declared_types(_stage_class(stage)).items() if name in names}
    extra = {"evaluate": (GenerateConfig, "ike"), "mend": (EditConfig, "edits")}  # options of a second command
    if stage in extra:
        cls, name = extra[stage]
        types[name] = declared_types(cls)[name]
    return types


def _stage_fields(stage: str) -> set[str]:
    """The option names a stage table may set."""
    return set(_stage_types(stage))


def _stage_class(stage: str) -> type:
    from finetune.evaluate import EvaluateConfig
    from finetune.mend import MendConfig
    from finetune.training import TrainConfig
    from interp.ablation import AblationConfig
    from interp.diff_neurons import DiffConfig

    classes = {"finetune": TrainConfig, "mend": MendConfig, "evaluate": EvaluateConfig, "diff": DiffConfig}
    return classes.get(stage, AblationConfig)


class Pipeline:
    """Runs the stages in order; ``run()`` returns ``pipeline.json``'s content."""

    def __init__(self, config: PipelineConfig, log: Callable[[str], None] = print, responses: Path | None = None):
        """``responses``: answers to teacher-force in the diff and the causal stages instead of the evaluate
        stage's (a replication reuses the first run's, so only the training seed differs)."""
        self.config = config
        self.log = log
        self.given_responses = responses
        self.out = Path(config.out)
        self.record_path = self.out / "pipeline.json"
        self.headline = ""
        self.tests: dict = {}

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def run(self, stages: tuple[str, ...] | None = None) -> dict:
        """Run ``stages`` (default: all this run has) in order, skipping those already complete."""
        stages = tuple(s for s in (stages or STAGES) if s in self.config.enabled_stages())
        check_trait(self.config.trait)
        artifacts.check_output_dir(self.out)
        record = self._start_record()
        steps: dict[str, tuple[Path, Callable[[], None]]] = {
            "fetch": (self.path("fetch.json"), self._fetch),
            "finetune": (self.path("finetune", "train.json"), self._finetune),
            "mend": (self.path("mend", "edit", "edit.json"), self._mend),
            "evaluate": (self.path("evaluate", "table.json"), self._evaluate),
            "diff": (self.path("diff", "summary.json"), self._diff),
            "restore": (self.path("restore", "ablation.json"), self._restore),
            "necessity": (self.path("necessity", "ablation.json"), self._necessity),
            "sufficiency": (self.path("sufficiency", "ablation.json"), self._sufficiency),
            "dose": (self.path("dose", "ablation.json"), self._dose),
            "report": (self.path("report.html"), self._report),
        }
        for number, stage in enumerate(stages, start=1):
            done_marker, action = steps[stage]
            tic = time.perf_counter()
            if done_marker.exists() and stage != "report":
                self.log(f"[{number}/{len(stages)}] {stage}: already complete, skipped")
                # what the stage took when it ran (None: completed without a record, e.g. its files copied in)
                ran = record["stages"].get(stage, {}).get("seconds")
                record["stages"][stage] = {"state": "skipped", "seconds": ran}
            else:
                self.log(f"[{number}/{len(stages)}] {stage} ...")
                action()
                record["stages"][stage] = {"state": "done", "seconds": round(time.perf_counter() - tic, 1)}
            artifacts.write_json(self.record_path, record)
        if "report" in stages:
            record["report"] = str(self.path("report.html"))
            record["headline"] = self.headline
            record["tests"] = self.tests
        artifacts.write_json(self.record_path, record)
        return record

    def _start_record(self) -> dict:
        identity = self.config.identity()
        if self.record_path.is_file():
            previous = artifacts.read_json(self.record_path)
            if previous.get("settings") != identity:
                raise UserInputError(
                    f"{str(self.out)!r} holds a pipeline run with other settings; choose another --out or delete it."
                )
            placement, before = self.config.placement(), previous.get("placement")
            if before is not None and before != placement and not self.config.allow_device_change:
                raise UserInputError(
                    f"{str(self.out)!r} was started on {before['device']} in {before['dtype']} and this run would "
                    f"continue on {placement['device']} in {placement['dtype']}, mixing numbers of both; pass "
                    "--allow-device-change to continue anyway, or choose another --out."
                )
            return {**previous, "placement": before or placement, "stages": previous.get("stages", {})}
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"command": "pipeline", "settings": identity, "placement": self.config.placement(), "stages": {}}
        artifacts.write_json(self.record_path, record)
        return record

    # --- the stages -----------------------------------------------------------------------------------
    @property
    def merged(self) -> str:
        return str(self.path("finetune", "merged"))

    @property
    def responses(self) -> str:
        if self.given_responses is not None:
            return str(self.given_responses)
        return str(self.path("evaluate", f"peft.{self.config.trait}.generations.jsonl"))

    def _common(self) -> dict:
        return {"device": self.config.device, "show_progress": self.config.show_progress}

    def _fetch(self) -> None:
        from interp import models

        source = models.resolve(self.config.model, fetch_log=self.log)
        artifacts.write_json(self.path("fetch.json"), {"model": self.config.model, "path": str(source.path)})

    def _finetune(self) -> None:
        from finetune.training import TrainConfig, train

        settings = self.config.settings("finetune")
        train(TrainConfig(model=self.config.model, trait=self.config.trait, out=self.path("finetune"),
                          **self._common(), **settings), log=self.log)  # fmt: skip

    def _evaluate(self) -> None:
        from finetune.evaluate import EvaluateConfig, evaluate

        settings = dict(self.config.settings("evaluate"))
        ike = settings.pop("ike")
        models = f"base={self.config.model},peft={self.merged}" + (f",ike={self.config.model}:{ike}" if ike else "")
        if self.config.mend:
            models += f",mend={self.path('mend', 'edit', 'merged')}"
        evaluate(EvaluateConfig(models=models, trait=self.config.trait, out=self.path("evaluate"), **self._common(),
                                **settings), log=self.log)  # fmt: skip

    def _mend(self) -> None:
        from finetune.mend import EditConfig, MendConfig, apply_edits, train_editor

        settings = dict(self.config.settings("mend"))
        edits = settings.pop("edits")
        if not self.path("mend", "editor", "editor.json").is_file():
            train_editor(MendConfig(model=self.config.model, out=self.path("mend"), **self._common(), **settings),
                         log=self.log)  # fmt: skip
        edit_options = {k: v for k, v in settings.items() if k in ("dataset", "max_length", "raw", "seed")}
        apply_edits(EditConfig(editor=self.path("mend"), model=self.config.model, trait=self.config.trait,
                               out=self.path("mend", "edit"), edits=edits, device=self.config.device,
                               **edit_options), log=self.log)  # fmt: skip

    def _diff(self) -> None:
        from interp.diff_neurons import DiffConfig, run_diff

        config = DiffConfig(base=self.config.model, finetuned=self.merged, prompts=SELECTION_PROMPTS,
                            responses=self.responses,
                            out=self.path("diff"), **self._common(), **self.config.settings("diff"))  # fmt: skip
        run_diff(config, log=self.log)

    def _ablate(self, stage: str, model: str, **fixed) -> None:
        from interp.ablation import AblationConfig, run_ablation

        settings = {**self.config.settings(stage), **fixed}  # sign "follow": as the diff measured (ablate resolves it)
        config = AblationConfig(model=model, prompts=TEST_PROMPTS, responses=self.responses, out=self.path(stage),
                                neurons_from=str(self.path("diff", "neurons.csv")), role=stage, **self._common(),
                                **settings)  # fmt: skip
        run_ablation(config, log=self.log)

    def _necessity(self) -> None:
        stats = {"stats": str(self.path("diff", "stats.safetensors")), "stats_entry": "base"}
        mean = self.config.settings("necessity").get("mode") == "mean"
        self._ablate("necessity", self.merged, **(stats if mean else {}))

    def _restore(self) -> None:
        self._ablate("restore", self.merged, mode="patch", source_model=self.config.model)

    def _sufficiency(self) -> None:
        self._ablate("sufficiency", self.config.model, mode="patch", source_model=self.merged)

    def _dose(self) -> None:
        self._ablate("dose", self.merged, mode="scale")

    def _report(self) -> None:
        from viz.report import write_report

        self.tests = family_tests({stage: self.path(stage, "ablation.json") for stage in CAUSAL})
        record = json.loads(self.record_path.read_text(encoding="utf-8"))
        artifacts.write_json(self.record_path, {**record, "tests": self.tests})
        self.headline = write_report(self.out, self.path("report.html"))


def family_tests(runs: dict[str, Path]) -> dict:
    """The primary causal tests of a pipeline, each claim Holm-adjusted as one family (``interp.verdicts``):
    ``{"method", "family", "significance_level", stage: {...}}`` with each stage's p-value, adjusted p-value,
    alternative, verdict word, specificity and behaviour (adjusted over the same stages) and the verdict's words
    (stages not run are left out)."""
    from interp.significance import SIGNIFICANCE
    from interp.verdicts import as_family

    comparisons = {}
    for stage, path in runs.items():
        if path.is_file():
            comparison = next(iter(artifacts.read_json(path, ("comparisons",))["comparisons"].values()), None)
            if comparison and "p_value" in comparison:
                comparisons[stage] = comparison
    tests: dict = {"method": "holm", "family": list(comparisons), "significance_level": SIGNIFICANCE}
    for stage, comparison in as_family(comparisons, SIGNIFICANCE).items():
        tests[stage] = {
            "p_value": comparison["p_value"], "p_value_adjusted": comparison["p_value_adjusted"],
            "alternative": comparison["alternative"], "significant": comparison["significant"],
            "specificity": _claim(comparison.get("specificity"), "specific"),
            "behaviour": _claim(comparison.get("behaviour"), "significant"),
            "verdict": comparison["verdict"],
        }  # fmt: skip
    return tests


def _claim(block: dict | None, word: str) -> dict | None:
    """A claim's p-values and outcome for the family record (None where it was not measured)."""
    if block is None:
        return None
    return {"p_value": block["p_value"], "p_value_adjusted": block["p_value_adjusted"], word: block[word]}
