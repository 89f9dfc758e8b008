"""Causal tests on planted models: ablation removes the planted emoji effect, patching recreates it,
matched random controls do not; generation-time edits equal a manual forward with the edited values."""

from __future__ import annotations

import json

import pytest
import torch

from cli import main
from interp import models
from interp.controls import layer_matched_sets
from interp.generation import generate_edited, left_pad
from interp.hooks import neuron_hooks
from interp.interventions import Condition, EditPlan, applied, reused_lower_blocks
from interp.prompts import load_prompts
from interp.run_options import SamplingOptions
from interp.tokens import prompt_ids


def addresses(neurons) -> str:
    return ",".join(f"{layer}:{index}" for layer, index in neurons)


def ablate(out, model, neurons, *extra) -> dict:
    argv = ["ablate", "--model", str(model), "--neurons", addresses(neurons), "--prompts", "persona-demo",
            "--out", str(out), "--device", "cpu", *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "ablation.json").read_text())


def onset(report, name="unedited") -> float:
    return report["conditions"][name]["emoji_onset_probability"]


def controls(report) -> list[float]:
    return [c["emoji_onset_probability"] for c in report["conditions"].values() if c["kind"] == "control"]


@pytest.mark.parametrize("base, planted_model", [("tiny_llama_dir", "planted_tiny"),
                                                  ("tiny_gemma3_dir", "planted_tiny_gemma3")])  # fmt: skip
def test_zero_ablation_removes_the_planted_effect(base, planted_model, request, tmp_path):
    tiny_dir = request.getfixturevalue(base)
    planted_dir, planted = request.getfixturevalue(planted_model)
    p0 = onset(ablate(tmp_path / "base", tiny_dir, planted, "--controls", "0"))
    report = ablate(tmp_path / "ablate", planted_dir, planted, "--controls", "20", "--alternative", "less")
    p1, p_ablated = onset(report), onset(report, "tested[zero]")
    assert p1 > 3 * p0  # the plant works
    assert abs(p_ablated - p0) < 0.5 * (p1 - p0)  # back near the unplanted model
    assert all(p1 - value < 0.5 * (p1 - p0) for value in controls(report))  # random sets do not
    comparison = report["comparisons"]["zero"]
    assert comparison["significant"] and comparison["p_value"] == pytest.approx(1 / 21)
    assert comparison["p_value_adjusted"] == comparison["p_value"]  # one comparison: Holm changes nothing
    assert comparison["alternative"] == "less" and comparison["alternative_source"] == "the user's --alternative"
    assert comparison["verdict"].startswith("significant")
    low, high = comparison["relative_effect_ci95"]
    assert low <= comparison["relative_effect"] <= high < 0  # the interval over prompts excludes no effect
    assert comparison["effect"] < 0
    # --neurons has no diff run behind it: one null, and nothing known about the selection prompts
    assert set(comparison["nulls"]) == {"layer"} and "unavailable" in report["nulls"]["matched"]
    assert comparison["selection_overlap"] is None
    side = report["conditions"]["tested[zero]"]
    assert side["kl_from_unedited"] > 0 and side["neutral_perplexity"] > 0


def test_patching_planted_values_recreates_the_effect(tiny_llama_dir, amplified_tiny, tmp_path):
    amplified_dir, planted = amplified_tiny
    report = ablate(tmp_path / "patch", tiny_llama_dir, planted, "--mode", "patch", "--source-model",
                    str(amplified_dir), "--positions", "all", "--controls", "20",
                    "--alternative", "greater")  # fmt: skip
    p1 = onset(ablate(tmp_path / "amp", amplified_dir, planted, "--controls", "0"))
    p0, p_patched = onset(report), onset(report, "tested[patch]")
    assert p1 > 1.5 * p0
    assert p_patched == pytest.approx(p1, rel=1e-3)  # only those neurons differ: the patch is exact
    assert all(value - p0 < 0.5 * (p1 - p0) for value in controls(report))
    comparison = report["comparisons"]["patch"]
    assert comparison["significant"]
    assert comparison["source_onset_probability"] == pytest.approx(p1, rel=1e-6)
    assert comparison["gap_closed"] == pytest.approx(1.0, rel=1e-3)  # the patch closes the whole gap
    low, high = comparison["gap_closed_ci95"]
    assert low <= comparison["gap_closed"] <= high


def test_mean_ablation_from_diff_stats_and_foreign_stats_refused(tiny_llama_dir, amplified_tiny, tmp_path, capsys):
    amplified_dir, planted = amplified_tiny
    diff = ["diff-neurons", "--base", str(tiny_llama_dir), "--finetuned", str(amplified_dir), "--prompts",
            "persona-demo", "--out", str(tmp_path / "diff"), "--device", "cpu"]  # fmt: skip
    assert main(diff) == 0
    stats = str(tmp_path / "diff" / "stats.safetensors")
    report = ablate(tmp_path / "mean", amplified_dir, planted, "--mode", "mean", "--stats", stats,
                    "--positions", "all", "--controls", "5")  # fmt: skip
    p1, p_mean = onset(report), onset(report, "tested[mean]")
    p0 = onset(ablate(tmp_path / "p0", tiny_llama_dir, planted, "--controls", "0"))
    assert abs(p_mean - p0) < 0.5 * (p1 - p0)  # mean-from-base undoes the amplification
    other = tmp_path / "other-diff"
    assert main(["diff-neurons", "--base", str(tiny_llama_dir), "--finetuned", str(tiny_llama_dir), "--prompts",
                 "persona-demo", "--out", str(other), "--device", "cpu"]) == 0  # fmt: skip
    capsys.readouterr()
    foreign = str(other / "stats.safetensors")
    code = main(["ablate", "--model", str(amplified_dir), "--neurons", addresses(planted), "--prompts", "persona-demo",
                 "--mode", "mean", "--stats", foreign, "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "computed on other models" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_scale_dose_response(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, planted = planted_tiny
    report = ablate(tmp_path / "dose", planted_dir, planted, "--mode", "scale", "--alpha", "0,1,2", "--controls", "3")
    # scaling by 1 edits nothing: equal to float32 rounding (its logits come from a product of another shape)
    assert onset(report, "tested[alpha=1]") == pytest.approx(onset(report), rel=1e-6)
    assert onset(report, "tested[alpha=0]") < onset(report) < onset(report, "tested[alpha=2]")
    assert set(report["comparisons"]) == {"alpha=0", "alpha=1", "alpha=2"}


def test_batched_conditions_equal_one_at_a_time(planted_tiny, tmp_path):
    planted_dir, planted = planted_tiny
    batched = ablate(tmp_path / "batched", planted_dir, planted, "--controls", "4", "--batch-size", "32")
    single = ablate(tmp_path / "single", planted_dir, planted, "--controls", "4", "--batch-size", "1")
    for name, entry in batched["conditions"].items():
        for metric in ("emoji_onset_probability", "kl_from_unedited", "neutral_perplexity"):
            assert entry[metric] == pytest.approx(single["conditions"][name][metric], rel=1e-4, abs=1e-9)


def test_matched_controls_keep_layer_counts():
    tested = [(0, 1), (0, 2), (3, 5)]
    sets = layer_matched_sets(tested, d_mlp=16, count=10, seed=0)
    assert len(sets) == 10 and len(set(sets)) > 1
    for neuron_set in sets:
        assert sorted(layer for layer, _ in neuron_set) == [0, 0, 3]
        assert not set(neuron_set) & set(tested)


def _manual_logits(lm, sequence, condition, source=None):
    ids = torch.tensor([sequence])
    values = {}
    if source is not None:
        layers = sorted({layer for layer, _ in condition.neurons})
        with torch.no_grad(), neuron_hooks(source, layers, lambda layer, a: values.__setitem__(layer, a.clone())):
            source.model(input_ids=ids)
    plan = EditPlan([condition], rows=1, edit_mask=torch.ones_like(ids, dtype=torch.bool), source_values=values)
    with torch.no_grad(), applied(lm, plan):
        return lm.model(input_ids=ids).logits[0]


@pytest.mark.parametrize("mode", ["zero", "scale", "mean", "patch"])
def test_generation_edits_match_a_manual_forward(tiny_llama_dir, amplified_tiny, mode):
    # Edit the amplified neurons (large values, so edits change continuations); patch them into the base.
    amplified = models.load(str(amplified_tiny[0]), device="cpu")
    lm, source = (models.load(str(tiny_llama_dir), device="cpu"), amplified) if mode == "patch" else (amplified, None)
    neurons = tuple(amplified_tiny[1])
    values = tuple(float(v) for v in torch.linspace(-1, 1, len(neurons))) if mode == "mean" else ()
    condition = Condition("edited", neurons, mode, alpha=0.2, values=values)
    conditions = [Condition("unedited", kind="baseline"), condition]
    prompts = [prompt_ids(lm.tokenizer, p) for p in load_prompts("persona-demo")[:3]]
    _, attention = left_pad(prompts, lm.tokenizer.pad_token_id)
    plan = EditPlan(conditions, rows=len(prompts), edit_mask=attention.bool())
    outputs = generate_edited(lm, prompts, plan, SamplingOptions(max_new_tokens=6, temperature=0.0), source=source)
    differs = False
    for c, cond in enumerate(conditions):
        for row, prompt in enumerate(prompts):
            generated = outputs[c * len(prompts) + row]
            logits = _manual_logits(lm, prompt + generated, cond, source if cond is condition else None)
            predicted = logits[len(prompt) - 1 : len(prompt) - 1 + len(generated)].argmax(-1).tolist()
            assert predicted == generated
            differs |= generated != outputs[row]
    assert differs  # the edit changed at least one continuation


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "phi3", "olmo2"])
def test_reused_lower_blocks_skip_them_and_change_nothing(tmp_path, arch):
    """Within one memo the blocks below ``below`` compute once; later forwards (with edits from ``below`` on) give
    bit-identical final hidden states to forwards that run every block."""
    from tests.conftest import save_tiny_model

    lm = models.load(str(save_tiny_model(tmp_path / arch, arch, layers=4)), device="cpu")
    ids = torch.randint(3, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    edit = EditPlan([Condition("t", ((2, 5), (3, 7)), "zero")], rows=2, edit_mask=attention.bool())
    calls = []
    first_child = next(lm.spec.layers(lm.model)[0].children())
    handle = first_child.register_forward_hook(lambda *args: calls.append(1))

    def forward(plan=None):
        with torch.no_grad(), applied(lm, plan or EditPlan([], rows=2, edit_mask=attention.bool())):
            return lm.model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state

    try:
        plain, edited = forward(), forward(edit)
        assert len(calls) == 2 and not torch.equal(plain, edited)
        memo: dict = {}
        for plan, expected in ((None, plain), (edit, edited), (None, plain), (edit, edited)):
            with reused_lower_blocks(lm, 2, memo):
                assert torch.equal(forward(plan), expected)
        assert len(calls) == 3  # block 0 ran in the first forward inside the memo only
        assert "forward" not in vars(lm.spec.layers(lm.model)[0])  # the blocks are restored
    finally:
        handle.remove()


@pytest.mark.parametrize("model_dir", ["tiny_llama_dir", "tiny_gemma3_dir"])
def test_groups_sharing_the_prefix_and_lower_blocks_match_one_unshared_forward(model_dir, request):
    """Conditions in several groups (the prompt prefix from a KV cache, the blocks below the last layer recorded in
    the first group) give the metrics of one forward of all conditions without any sharing; Gemma 3 has sliding
    window layers and answers longer than its window here."""
    from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
    from interp.tokens import build_sequences
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(str(request.getfixturevalue(model_dir)), device="cpu")
    prompts = [type(p)(messages=p.messages, response="Sure thing 😊 see you at the party tonight!", index=i)
               for i, p in enumerate(load_prompts("persona-demo")[:3])]  # fmt: skip
    sequences = build_sequences(lm.tokenizer, prompts, False, 128)
    last = lm.n_layers - 1
    conditions = [Condition("unedited", kind="baseline")]
    conditions += [Condition(f"s{i}", ((last, 7 * i + 1), (last, 90 - i)), "zero") for i in range(5)]
    results = []
    for batch_size, share in ((2, True), (64, False)):  # 3 groups of 2 conditions, or 1 group of 6
        config = AblationConfig(model="", prompts="", out=None, batch_size=batch_size, show_progress=False)
        metrics = {c.name: ConditionMetrics() for c in conditions}
        measure_conditions(
            lm, None, conditions, sequences, config, emoji_onset_ids(lm.tokenizer), metrics, "", share_prefix=share
        )
        results.append({name: m.as_dict() for name, m in metrics.items()})
    assert results[0]["s0"]["kl_from_unedited"] > 1e-6  # the edits change the distribution
    for name in results[0]:
        for metric, value in results[0][name].items():
            if value is not None:
                # float32 rounding of batched products of other shapes
                assert value == pytest.approx(results[1][name][metric], rel=1e-4, abs=1e-10), (name, metric)


@pytest.mark.parametrize("model_dir", ["tiny_llama_dir", "tiny_gemma3_dir"])
@pytest.mark.parametrize("shared", ["system prompt", "whole prompt"])
def test_rows_common_leading_tokens_run_once(model_dir, shared, request):
    """Rows of a batch that begin with the same tokens (in-context demonstrations in a system prompt, or one prompt
    answered several times) run those tokens once, copied to every row: the metrics equal unshared forwards.
    Gemma 3's shared part is longer than its sliding window."""
    from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
    from interp.prompts import Prompt
    from interp.tokens import build_sequences
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(str(request.getfixturevalue(model_dir)), device="cpu")
    system = ("system", "Answer like these examples. " * 12)
    questions = [p.messages[-1][1] for p in load_prompts("persona-demo")[:4]]
    if shared == "whole prompt":
        questions = questions[:1] * 4
    answers = ["Sure thing 😊 see you there!", "No.", "Maybe, let me think about it 🎉", "Yes!"]
    prompts = [
        Prompt(messages=(system, ("user", q)), response=a, index=i) for i, (q, a) in enumerate(zip(questions, answers))
    ]
    sequences = build_sequences(lm.tokenizer, prompts, False, 256)
    assert len(set(tuple(s.ids[:60]) for s in sequences)) == 1 < len(set(tuple(s.ids) for s in sequences))
    last = lm.n_layers - 1
    conditions = [Condition("unedited", kind="baseline"), Condition("e", ((last, 3), (last, 40)), "zero")]
    results = []
    for share in (True, False):
        config = AblationConfig(model="", prompts="", out=None, batch_size=8, show_progress=False)  # 4 rows each
        metrics = {c.name: ConditionMetrics() for c in conditions}
        measure_conditions(
            lm, None, conditions, sequences, config, emoji_onset_ids(lm.tokenizer), metrics, "", share_prefix=share
        )
        results.append({name: m.as_dict() for name, m in metrics.items()})
    assert results[0]["e"]["kl_from_unedited"] > 1e-6
    for name in results[0]:
        for metric, value in results[0][name].items():
            if value is not None:
                assert value == pytest.approx(results[1][name][metric], rel=1e-4, abs=1e-10), (name, metric)


@pytest.mark.parametrize("mode", ["zero", "patch"])
def test_shared_prompt_prefix_gives_the_same_metrics(tiny_llama_dir, amplified_tiny, mode):
    """Running the unedited prompt prefix once (KV cache reused by every condition) changes no number."""
    from interp.ablation import AblationConfig, ConditionMetrics, measure_conditions
    from interp.tokens import build_sequences
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(str(tiny_llama_dir), device="cpu")
    source = models.load(str(amplified_tiny[0]), device="cpu") if mode == "patch" else None
    prompts = load_prompts("persona-demo")[:6]
    prompts = [type(p)(messages=p.messages, response="Great idea 😊 let's go!" if i % 2 else None, index=i)
               for i, p in enumerate(prompts)]  # fmt: skip
    sequences = build_sequences(lm.tokenizer, prompts, False, 128)
    conditions = [Condition("unedited", kind="baseline"), Condition("t", tuple(amplified_tiny[1]), mode)]
    conditions += [Condition(f"c{i}", s, mode) for i, s in enumerate(layer_matched_sets(amplified_tiny[1], 128, 3, 0))]
    results = []
    for share in (True, False):
        config = AblationConfig(model="", prompts="", out=None, batch_size=8, show_progress=False)
        metrics = {c.name: ConditionMetrics() for c in conditions}
        measure_conditions(
            lm, source, conditions, sequences, config, emoji_onset_ids(lm.tokenizer), metrics, "", share_prefix=share
        )
        results.append({name: m.as_dict() for name, m in metrics.items()})
    for name in results[0]:
        for metric, value in results[0][name].items():
            if value is not None:
                assert value == pytest.approx(results[1][name][metric], rel=1e-4, abs=1e-10), (name, metric)


def test_random_tested_set_is_called_not_significant(planted_tiny, tmp_path):
    planted_dir, planted = planted_tiny
    # A set of ordinary neurons is as extreme as all 20 controls 1 time in 21; this draw is a typical one
    # (p-values over 12 draws ranged 0.14-0.52).
    unrelated = layer_matched_sets(planted, 128, 1, seed=100)[0]
    report = ablate(tmp_path / "random", planted_dir, unrelated, "--controls", "20", "--seed", "0")
    comparison = report["comparisons"]["zero"]
    assert not comparison["significant"] and comparison["p_value"] > 0.05
    assert comparison["verdict"].startswith("not significant")


def test_emoji_logprob_is_exact(tiny_llama_dir, tmp_path):
    report = ablate(tmp_path / "lp", tiny_llama_dir, [(0, 1)], "--controls", "0", "--emojis", "😊,🎉")
    lm = models.load(str(tiny_llama_dir), device="cpu")
    expected = []
    for prompt in load_prompts("persona-demo"):
        head = prompt_ids(lm.tokenizer, prompt)
        totals = []
        for emoji in ("😊", "🎉"):
            piece = lm.tokenizer(emoji, add_special_tokens=False).input_ids
            with torch.no_grad():
                logprobs = torch.log_softmax(lm.model(input_ids=torch.tensor([head + piece])).logits[0].float(), -1)
            totals.append(sum(float(logprobs[len(head) - 1 + k, t]) for k, t in enumerate(piece)))
        expected.append(float(torch.logsumexp(torch.tensor(totals), 0)))
    assert len(lm.tokenizer("😊", add_special_tokens=False).input_ids) > 1  # multi-token in this vocabulary
    assert report["conditions"]["unedited"]["emoji_logprob"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_sampled_generations_are_reproducible(planted_tiny, tmp_path):
    planted_dir, planted = planted_tiny
    runs = []
    for name in ("a", "b"):
        ablate(tmp_path / name, planted_dir, planted, "--controls", "0", "--samples", "2", "--max-new-tokens", "6",
               "--seed", "11")  # fmt: skip
        runs.append((tmp_path / name / "generations.jsonl").read_text())
    assert runs[0] == runs[1]
    records = [json.loads(line) for line in runs[0].splitlines()]
    assert {r["condition"] for r in records} == {"unedited", "tested[zero]"}
    assert len(records) == 2 * 2 * len(load_prompts("persona-demo"))
    report = json.loads((tmp_path / "a" / "ablation.json").read_text())
    rate = report["conditions"]["unedited"]["generation"]
    low, high = rate["rate_ci95"]
    assert 0 <= low <= rate["rate"] <= high <= 1
    phases = ("teacher_forced_s", "neutral_perplexity_s", "sampling_s")  # where a causal run's time went
    assert set(report["timings"]) == {*phases, "total_s"}
    assert 0 < sum(report["timings"][phase] for phase in phases) <= report["timings"]["total_s"]
