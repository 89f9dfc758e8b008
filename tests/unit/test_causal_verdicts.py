"""End-to-end verdicts on tiny models: planted neurons stay significant on held-out prompts after correction,
with the direction predicted from the diff; a null fine-tune (small random LoRA) is "not significant" and its
emoji direction is "no clear change"."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cli import main


def run_json(argv: list[str], artifact: Path) -> dict:
    assert main([*argv, "--device", "cpu"]) == 0
    return json.loads(artifact.read_text(encoding="utf-8"))


def diff(base, finetuned, prompts: str, out: Path) -> dict:
    argv = ["diff-neurons", "--base", str(base), "--finetuned", str(finetuned), "--prompts", prompts, "--out", str(out),
            "--top-k", "50", "--profile-top", "0"]  # fmt: skip
    return run_json(argv, out / "summary.json")


def ablate(model, diff_dir: Path, prompts: str, out: Path, *extra: str) -> dict:
    argv = ["ablate", "--model", str(model), "--neurons-from", str(diff_dir / "neurons.csv"), "--top-k", "6",
            "--prompts", prompts, "--out", str(out), "--alternative", "from-diff", *extra]  # fmt: skip
    return run_json(argv, out / "ablation.json")


def test_planted_neurons_are_significant_on_held_out_prompts(tiny_llama_dir, planted_tiny, tmp_path, capsys):
    planted_dir, planted = planted_tiny
    summary = diff(tiny_llama_dir, planted_dir, "persona-demo[0::2]", tmp_path / "diff")
    assert summary["emoji"]["direction"] == "rises" and summary["emoji"]["onset_probability"]["ratio_ci95"][0] > 1
    assert len(summary["prompt_fingerprints"]) == 16
    assert "neurons_above_max_score" in summary["noise_floor"]  # both halves of a sliced set have prompts
    report = ablate(planted_dir, tmp_path / "diff", "persona-demo[1::2]", tmp_path / "held-out", "--controls", "39")
    comparison = report["comparisons"]["zero"]
    assert report["selection_overlap"] == 0 and comparison["selection_overlap"] == 0
    # zeroing neurons that push emojis up is predicted, before the test, to lower emoji use
    assert comparison["alternative"] == "less" and comparison["alternative_source"].startswith("predicted")
    assert set(comparison["nulls"]) == {"layer", "matched"}
    assert all(test["p_value"] == 1 / 40 for test in comparison["nulls"].values())
    assert comparison["significant"] and comparison["p_value_adjusted"] < 0.05
    assert comparison["relative_effect_ci95"][1] < 0
    matching = report["nulls"]["matched"]["matching"]
    assert len(matching["per_neuron"]) == 6 and "neurons_without_good_match" in matching

    capsys.readouterr()
    same = ablate(planted_dir, tmp_path / "diff", "persona-demo[0::2]", tmp_path / "same", "--controls", "3")
    assert same["selection_overlap"] == 1.0
    assert "100% of these prompts also selected the neurons" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "same")]) == 0
    assert "tested on the prompts they were selected on: 100% overlap" in (tmp_path / "same" / "report.html").read_text(
        encoding="utf-8"
    )


def null_finetune(base_dir: Path, out: Path, scale: float = 1e-3) -> Path:
    """A q/v LoRA adapter with small random weights: a fine-tune that learned nothing in particular."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))  # fmt: skip
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def test_null_finetune_is_not_significant_and_no_clear_change(tiny_llama_dir, tmp_path):
    adapter = null_finetune(tiny_llama_dir, tmp_path / "adapter")
    summary = diff(tiny_llama_dir, adapter, "persona-demo[0::2]", tmp_path / "diff")
    emoji = summary["emoji"]
    low, high = emoji["onset_probability"]["ratio_ci95"]
    assert emoji["direction"] == "no clear change" and low <= 1 <= high, emoji["explanation"]
    report = ablate(adapter, tmp_path / "diff", "persona-demo[1::2]", tmp_path / "ablate", "--controls", "39")
    comparison = report["comparisons"]["zero"]
    assert not comparison["significant"] and comparison["verdict"].startswith("not significant")
