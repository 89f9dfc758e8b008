"""Calibration of the shipped causal path on simulated nulls, and its power on planted neurons.

The path is the pipeline's (finetune/pipeline.py): ``run_diff`` selects neurons on the even-numbered prompts, then
three primary tests on the odd-numbered ones, restore (``--mode patch --source-model BASE`` on the fine-tuned
model), necessity (``--mode zero`` on it) and sufficiency (``--mode patch --source-model FT`` on the base), each
``run_ablation`` with ``sign = "follow"``, ``alternative = "from-diff"`` and both nulls (the verdict's p is the
larger of the layer-matched and the selection-matched p), then Holm over the three (``family_tests``).
``pipeline_run`` makes exactly those calls with the pipeline's own stage settings (``PipelineConfig.settings``),
overriding only top_k (4), controls (60 per null: the smallest one-sided p, 1/61, is the only one Holm over three
lets through, 3/61 = 0.049), samples (0), profiles (0), the neutral text (one line) and the batch size (all
conditions in one forward). tests/null_world.py builds the models on a 275-token byte-level vocabulary (SmolLM2's
special tokens and chat template, the 256 bytes, F0 9F and " " F0 9F: two emoji onsets), so a run of one diff and
three causal tests costs about 0.5 s on one core.

What is a null run? A Monte Carlo p-value among control sets is valid when, under H0, the tested set's effect is
exchangeable with the control sets' effects and the direction is fixed independently of the tested effect.

*A null fine-tune is not a null for these tests.* A small random q/v LoRA changes weights deterministically: the
neurons whose activations it moved most on the selection prompts move most on the test prompts too, so undoing
or transplanting their change really moves emoji probability more than a random set's. Measured (200 random
rank-4 q/v LoRAs, B ~ N(0, 0.01^2), on a two-layer tiny model, both halves of the prompts alike): significant in
48.5 % (restore), 32.5 % (necessity), 49 % (sufficiency) of runs, any of the three after Holm 49.5 %; layer null
p < 0.05 in 66.5 / 50 / 66.5 %, matched 50 / 36.5 / 50 %. Mostly correct answers about a random change, not false
positives; but the family is significant in 45 % of the 108 runs whose diff said "no clear change" in emoji use.

*The null used here, "no transfer"* (``null_world_model``, ``null_finetune``): a one-layer model whose neurons
all have the same gate row and the same |emoji_dla| (its sign random); two residual directions are written only
by the selection half's response letters (a-l) and the test half's (n-y), and nothing before the up projection
reads them. A null fine-tune is a rank-2 LoRA on the up projection, ``up += alpha e_sel^T + beta e_test^T``,
alpha and beta independent N(0, 0.5^2) per neuron and run: on the selection prompts it moves neuron i by
``gate x alpha_i x const``, on the test prompts by ``gate x beta_i x const``, exactly, and nowhere else. So the
diff ranks the neurons by |alpha| alone (checked in every run): the tested set is a uniformly random set of
neurons (the top of one sign when the diff sees emoji use move), independent of beta, and on the test prompts the
fine-tune moved every other neuron just as much. A restore or sufficiency effect of the tested set is then
exchangeable with that of any random set of its size, and the predicted direction is a coin flip relative to it:
the layer null's H0 holds exactly, the matched null's too if its look-alikes were drawn like the tested set.
Necessity zeroes a random set too, but its predicted direction is the sign of that set's own direct push, which
predicts the sign of zeroing it in any model.

Measured here (200 runs, seeded, so every run of the suite gives these numbers; 2026-12-08, the matched null on
each neuron's predicted contribution, activation rms and |emoji_dla|): "significant" (its run's verdict: p < 0.05,
nominal 3/61 = 4.9 %) in 5.0 % (restore), 7.5 % (necessity), 6.0 % (sufficiency) of runs, any of the three after
Holm 5.0 %; the bound (5 % + 2.5 binomial SEs) is 8.85 %. Each null alone: layer 6.0 / 9.0 / 6.5 %,
selection-matched 11.0 / 9.5 / 12.5 %, anti-conservative (strict xfail): the tested neurons are
the top of one layer's |score| of one sign, so their 10-neuron pools overlap and all 60 matched control sets draw
from the same few neurons (14-30 in the runs inspected), a small fixed population, while the tested set is a fresh
draw (4 Gaussian draws against sets of 4 from one shared pool of 12 give 12 %); necessity adds its self-predicted
direction. The verdict stays calibrated because it also needs the layer null, which is exact in this world.

*Heterogeneous writers* (the same world with the output columns as drawn, so the selection favours strong emoji
writers; strict xfail): the fine-tune's change on the test prompts is independent of what the selection saw, yet
necessity is significant in 21.7 % and the family in 13.3 % of the 60 runs here (restore 5.0 %, sufficiency
3.3 %): strong writers whose push has a known sign beat random sets, and their look-alikes on predicted
contribution, rms and |emoji_dla| too (layer null p < 0.05 in 35 %, matched in 25 %). Before the matched null
matched the push it was 25.5 % and 25 % of 200 runs. Zeroing tests a neuron's whole contribution, and what makes
it beat look-alikes here is not yet understood: read a necessity verdict as "their whole push matters", never as
evidence about the fine-tune's change (restore and sufficiency test that).

Power (same path): TOP_K neurons of a tiny one-layer model amplified 3x (``plant --keep-columns``: the planted
copy differs from its base only in their values) are selected on the even-numbered prompts and beat all 60
control sets of both nulls on the odd-numbered ones in all three tests, Holm-significant and emoji-specific, in 5
of 5 models. (With the default plant, whose output columns are replaced, all three are significant in 5 of 5 and
restore and necessity emoji-specific, sufficiency not: patching the amplified activations into the base moves the
base's own columns, which write nothing in particular towards emojis. Before the patch's direction was predicted
from the edited model's own emoji write, (mean_source - mean_model) x emoji_dla_model, rather than from the
summed score, which includes the change of the columns, sufficiency came out at p = 1 in 4 of 5 such models.)

Time on one core: 0.51 s per null run (diff 0.06 s; restore 0.15, necessity 0.14, sufficiency 0.16 s, of which the
teacher-forced forwards of 121 conditions take 0.08-0.09 s and the neutral text 0.01 s), about 105 s for the 200
runs, 30 s for the 60 heterogeneous ones and 5 s for the power check on an idle machine.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch

from finetune.pipeline import CAUSAL, PipelineConfig, family_tests
from interp.ablation import AblationConfig, run_ablation
from interp.diff_neurons import DiffConfig, run_diff
from interp.neuron_set import NeuronSet
from tests.null_world import (
    NullWorld,
    null_finetune,
    null_world_model,
    tiny_vocab_model,
    write_prompts,
    write_tiny_tokenizer,
)

RUNS = 200  # null runs of the calibration (each: one diff and three causal tests)
HETEROGENEOUS_RUNS = 60  # null runs of the world whose neurons differ in |emoji_dla| (a strict xfail, see below)
TOP_K = 4
CONTROLS = 60  # per null: the smallest one-sided p, 1/61, is the only one that survives Holm over three (3/61 < 0.05)
LEVEL = 0.05
SE_ALLOWANCE = 2.5  # a rate may exceed LEVEL by this many binomial standard errors
NULLS = ("layer", "matched")
QUIET = lambda message: None  # noqa: E731


def rate_bound(runs: int) -> float:
    """The most a false-positive rate of ``runs`` null runs may be: LEVEL + SE_ALLOWANCE binomial SEs."""
    return LEVEL + SE_ALLOWANCE * math.sqrt(LEVEL * (1 - LEVEL) / runs)


def stage_settings(neutral: Path) -> dict[str, dict]:
    """The pipeline's per-stage overrides for these runs: small top-k, 60 controls, no sampling, no profiles, a
    one-line neutral text, every condition of a batch in one forward."""
    causal = {"top_k": TOP_K, "controls": CONTROLS, "samples": 0, "neutral_prompts": str(neutral), "batch_size": 1024}
    return {"diff": {"profile_top": 0}, **{stage: dict(causal) for stage in CAUSAL}}


def pipeline_run(base: Path, finetuned: Path, prompts: Path, responses: Path, out: Path, neutral: Path) -> dict:
    """What ``interp pipeline`` runs from its diff stage to its family of tests (finetune/pipeline.py ``_diff``,
    ``_restore``, ``_necessity``, ``_sufficiency``, ``family_tests``), with the pipeline's stage settings
    (``PipelineConfig.settings``: its defaults, ``sign = "follow"``, ``alternative = "from-diff"``, both nulls),
    selecting on ``prompts[0::2]`` and testing on ``prompts[1::2]``. Returns the per-stage outcomes and timings."""
    config = PipelineConfig(model=str(base), out=out, device="cpu", show_progress=False,
                            stages=stage_settings(neutral))  # fmt: skip
    common = {"device": "cpu", "show_progress": False}
    tic = time.perf_counter()
    diff = run_diff(DiffConfig(base=str(base), finetuned=str(finetuned), prompts=f"{prompts}[0::2]",
                               responses=str(responses), out=out / "diff", **common, **config.settings("diff")),
                    log=QUIET)  # fmt: skip
    seconds = {"diff": time.perf_counter() - tic}
    ranking = [int(row["neuron"]) for row in NeuronSet.read(out / "diff" / "neurons.csv").rows[:20]]
    runs = {
        "restore": (finetuned, {"mode": "patch", "source_model": str(base)}),
        "necessity": (finetuned, {}),
        "sufficiency": (base, {"mode": "patch", "source_model": str(finetuned)}),
    }
    record: dict = {"direction": diff.summary["emoji"]["direction"], "ranking": ranking, "stages": {}, "phases": {}}
    for stage in CAUSAL:
        model, fixed = runs[stage]
        tic = time.perf_counter()
        report = run_ablation(
            AblationConfig(model=str(model), prompts=f"{prompts}[1::2]", responses=str(responses), out=out / stage,
                           neurons_from=str(out / "diff" / "neurons.csv"), role=stage, **common,
                           **{**config.settings(stage), **fixed}),
            log=QUIET,
        )  # fmt: skip
        seconds[stage] = time.perf_counter() - tic
        comparison = next(iter(report["comparisons"].values()))
        record["stages"][stage] = {
            "significant": bool(comparison["significant"]), "p_value": comparison["p_value"],
            "alternative": comparison["alternative"], "neurons": report["neurons"],
            "specific": comparison["specificity"]["specific"],
            **{null: comparison["nulls"][null]["p_value"] for null in NULLS},
        }  # fmt: skip
        record["phases"][stage] = report["timings"]
    family = family_tests({stage: out / stage / "ablation.json" for stage in CAUSAL})
    for stage in CAUSAL:
        record["stages"][stage]["family_significant"] = bool(family[stage]["significant"])
    record["family_significant"] = any(family[stage]["significant"] for stage in CAUSAL)
    record["seconds"] = seconds
    return record


def null_runs(world: NullWorld, prompts: Path, responses: Path, neutral: Path, root: Path, runs: int) -> list[dict]:
    """``runs`` null fine-tunes of ``world`` (seeds 0, 1, ...), each through ``pipeline_run``."""
    records = []
    for seed in range(runs):
        folder = root / f"null-{seed}"
        finetuned, alpha = null_finetune(world, folder / "finetuned", seed)
        record = pipeline_run(world.base, finetuned, prompts, responses, folder, neutral)
        record["alpha"] = alpha
        records.append(record)
        shutil.rmtree(folder)  # 200 runs' artifacts would take ~100 MB
    return records


@pytest.fixture(scope="module")
def null_setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("calibration")
    tokenizer = write_tiny_tokenizer(root / "tokenizer")
    prompts, responses = write_prompts(root / "prompts")
    neutral = root / "neutral.txt"
    neutral.write_text("The river flows through the valley and reaches the sea.\n", encoding="utf-8")
    return {"root": root, "tokenizer": tokenizer, "prompts": prompts, "responses": responses, "neutral": neutral}


def world_runs(setup: dict, name: str, runs: int, equal_dla: bool) -> list[dict]:
    world = null_world_model(setup["root"] / name, setup["tokenizer"], equal_dla=equal_dla)
    folder = setup["root"] / f"{name}-runs"
    return null_runs(world, setup["prompts"], setup["responses"], setup["neutral"], folder, runs)


@pytest.fixture(scope="module")
def exchangeable_runs(null_setup) -> list[dict]:
    """The calibration: RUNS null fine-tunes of the world whose neurons all have the same |emoji_dla|."""
    return world_runs(null_setup, "exchangeable", RUNS, equal_dla=True)


@pytest.fixture(scope="module")
def heterogeneous_runs(null_setup) -> list[dict]:
    """HETEROGENEOUS_RUNS null fine-tunes of the same construction with the output columns left as drawn."""
    return world_runs(null_setup, "heterogeneous", HETEROGENEOUS_RUNS, equal_dla=False)


def rates(records: list[dict]) -> dict:
    """False-positive rates: per stage (its run's verdict, and each null's p < LEVEL) and the family's."""
    n = len(records)
    table: dict = {"runs": n, "bound": rate_bound(n)}
    for stage in CAUSAL:
        outcomes = [r["stages"][stage] for r in records]
        table[stage] = {
            "significant": sum(o["significant"] for o in outcomes) / n,
            **{null: sum(o[null] < LEVEL for o in outcomes) / n for null in NULLS},
        }
    table["any_after_holm"] = sum(r["family_significant"] for r in records) / n
    return table


def timing(records: list[dict]) -> dict:
    """Mean seconds per run: wall time of the diff and each causal stage, and the causal stages' phases."""
    out = {name: statistics.fmean(r["seconds"][name] for r in records) for name in ("diff", *CAUSAL)}
    for stage in CAUSAL:
        phases = records[0]["phases"][stage]
        out[f"{stage}_phases"] = {k: statistics.fmean(r["phases"][stage][k] for r in records) for k in phases}
    out["per_run"] = sum(out[name] for name in ("diff", *CAUSAL))
    return out


def test_tiny_tokenizer_has_emoji_onsets_and_the_chat_template(null_setup):
    from transformers import AutoTokenizer

    from probes.emoji_tokens import emoji_onset_ids

    tokenizer = AutoTokenizer.from_pretrained(null_setup["tokenizer"])
    assert len(tokenizer) == 275 and (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    onsets = emoji_onset_ids(tokenizer)
    assert len(onsets) == 2 and tokenizer.encode("\U0001f60a", add_special_tokens=False)[0] in onsets
    messages = [{"role": "user", "content": "Hi"}]
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_the_selection_sees_only_the_selection_half_change(exchangeable_runs):
    """The premise of the null: every neuron's score is +-c x alpha_i x (one constant), so the diff ranks the
    neurons by |alpha| alone: the tested set is a uniformly random set of neurons, independent of beta."""
    for record in exchangeable_runs:
        assert record["ranking"] == torch.argsort(record["alpha"].abs(), descending=True)[:20].tolist()


@pytest.mark.slow
def test_null_verdicts_keep_the_nominal_false_positive_rate(exchangeable_runs):
    measured = rates(exchangeable_runs)
    print("\nexchangeable null:", json.dumps(measured, indent=1), "\ntiming:", json.dumps(timing(exchangeable_runs)))
    bound = measured["bound"]
    for stage in CAUSAL:
        assert measured[stage]["significant"] <= bound, (stage, measured)
    assert measured["any_after_holm"] <= bound, measured


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the selection-matched null alone is anti-conservative: p < 0.05 in 11.0 % (restore), 9.5 % "
    "(necessity), 12.5 % (sufficiency) of 200 null runs against 4.9 % nominal (bound 8.85 %), and necessity's "
    "layer null in 9.0 %: the matched control sets draw from the few neurons of the tested neurons' overlapping "
    "10-neuron pools (measured 2026-12-08)",
)
def test_each_null_alone_keeps_the_nominal_false_positive_rate(exchangeable_runs):
    measured = rates(exchangeable_runs)
    for stage in CAUSAL:
        for null in NULLS:
            assert measured[stage][null] <= measured["bound"], (stage, null, measured)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="necessity is significant in 21.7 % and the family of three in 13.3 % of 60 null runs whose change on "
    "the test prompts is independent of the selection (bound 12.0 %): strong writers whose push has a known sign "
    "beat random sets and their look-alikes (measured 2026-12-08)",
)
def test_null_verdicts_when_the_tested_neurons_write_more_than_most(heterogeneous_runs):
    measured = rates(heterogeneous_runs)
    print("\nheterogeneous null:", json.dumps(measured, indent=1))
    for stage in CAUSAL:
        assert measured[stage]["significant"] <= measured["bound"], (stage, measured)
    assert measured["any_after_holm"] <= measured["bound"], measured


@pytest.mark.slow
def test_planted_neurons_stay_significant_on_held_out_prompts(null_setup):
    """Power, through the same path: in five tiny one-layer models, TOP_K neurons that already push emojis get 3x
    their activation (``interp plant --keep-columns``: the planted copy differs from its base only in their
    values, as a fine-tune that leaves the MLP weights alone would). Selected on the even-numbered prompts, they
    beat all 60 control sets of both nulls on the odd-numbered ones in all three tests, Holm-significant and
    emoji-specific."""
    from interp.planted import make_planted_model

    root = null_setup["root"] / "planted"
    prompts, responses = write_prompts(root / "prompts", halves=False)  # both halves alike: the change transfers
    floor = 1 / (CONTROLS + 1)
    for seed in range(1, 6):
        base = tiny_vocab_model(root / f"base-{seed}", null_setup["tokenizer"], seed=seed, layers=1)
        record = make_planted_model(str(base), root / f"model-{seed}", layers="0", per_layer=TOP_K, gain=3.0,
                                    keep_columns=True, prompts=str(prompts), show_progress=False,
                                    log=QUIET)  # fmt: skip
        outcome = pipeline_run(base, root / f"model-{seed}", prompts, responses, root / f"run-{seed}",
                               null_setup["neutral"])  # fmt: skip
        recovered = set(record["neurons"]) & set(outcome["stages"]["restore"]["neurons"])
        assert len(recovered) >= TOP_K - 1, (seed, record["neurons"], outcome["stages"]["restore"]["neurons"])
        for stage in CAUSAL:
            result = outcome["stages"][stage]
            assert result["layer"] == result["matched"] == floor and result["significant"], (seed, stage, result)
            assert result["specific"], (seed, stage, result)  # and about emojis, not the whole distribution
            assert result["family_significant"], (seed, stage, result)
