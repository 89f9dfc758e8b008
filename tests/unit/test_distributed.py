"""Data-parallel diff-neurons under torchrun (2 CPU processes, gloo) and merge-stats of separate shards."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli import main
from interp.stats import load_stats

BIN = Path(sys.executable).parent
PROMPTS = Path(__file__).parents[2] / "probes" / "prompt_sets" / "persona-demo.txt"


def torchrun(*argv, nproc: int = 2) -> subprocess.Popen:
    command = [str(BIN / "torchrun"), f"--nproc-per-node={nproc}", "--standalone", "--no-python",
               str(BIN / "interp"), *map(str, argv)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def single(*argv) -> None:
    """This process with one thread, like each rank: the same float32 arithmetic, batch for batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(list(map(str, argv))) == 0
    finally:
        torch.set_num_threads(threads)


def diff_args(base, finetuned, out, *extra) -> list:
    return ["diff-neurons", "--base", base, "--finetuned", finetuned, "--prompts", PROMPTS, "--out", out,
            "--device", "cpu", "--batch-size", 3, "--profile-top", 4, *extra]  # fmt: skip


def test_two_processes_equal_one(tiny_llama_dir, planted_tiny, tmp_path):
    """With sampled answers (``--generate``): the prompts' capture and the sampling, each split over the ranks."""
    planted_dir, _ = planted_tiny
    extra = ["--generate", 1, "--max-new-tokens", 6]
    process = torchrun(*diff_args(tiny_llama_dir, planted_dir, tmp_path / "two", *extra))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    single(*diff_args(tiny_llama_dir, planted_dir, tmp_path / "one", *extra))

    one, two = load_stats(tmp_path / "one" / "stats.safetensors"), load_stats(tmp_path / "two" / "stats.safetensors")
    for name in ("base", "finetuned", "base_half_a", "base_half_b"):
        for field in ("count", "mean", "m2", "active", "max"):
            assert torch.equal(getattr(one[name], field), getattr(two[name], field)), (name, field)
    assert (tmp_path / "one" / "neurons.csv").read_bytes() == (tmp_path / "two" / "neurons.csv").read_bytes()
    # the profiles kept during capture: each rank's share of the batches, merged on rank 0
    one_profiles, two_profiles = (json.loads((tmp_path / run / "profiles.json").read_text()) for run in ("one", "two"))
    assert one_profiles == two_profiles and len(one_profiles["neurons"]) == 4
    assert output.count("wrote ") == 1  # rank 0 alone reports and writes


def test_a_rank_that_dies_fails_the_run_and_leaves_no_artifact(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, _ = planted_tiny
    out = tmp_path / "two"
    process = torchrun(*diff_args(tiny_llama_dir, planted_dir, out))
    workers: list[int] = []
    deadline = time.time() + 120
    while len(workers) < 2 and time.time() < deadline:  # torchrun's agent starts the two workers
        listing = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(pid) for pid in listing]
        time.sleep(0.2)
    assert len(workers) == 2
    time.sleep(1.0)
    os.kill(max(workers), signal.SIGKILL)  # one rank dies mid-run
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0, output
    assert not out.exists()


def test_merge_stats_of_two_shards_matches_one_run(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, planted = planted_tiny
    lines = PROMPTS.read_text(encoding="utf-8").splitlines()
    (tmp_path / "a.txt").write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(lines[6:]) + "\n", encoding="utf-8")
    common = ["--base", str(tiny_llama_dir), "--finetuned", str(planted_dir), "--device", "cpu", "--profile-top", "0"]
    for name, prompts in (("a", tmp_path / "a.txt"), ("b", tmp_path / "b.txt"), ("all", PROMPTS)):
        assert main(["diff-neurons", *common, "--prompts", str(prompts), "--out", str(tmp_path / name)]) == 0
    assert main(["merge-stats", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 0

    merged, whole = load_stats(tmp_path / "m" / "stats.safetensors"), load_stats(tmp_path / "all" / "stats.safetensors")
    for name in ("base", "finetuned"):
        assert torch.equal(merged[name].count, whole[name].count)
        torch.testing.assert_close(merged[name].mean, whole[name].mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(merged[name].m2, whole[name].m2, rtol=1e-5, atol=1e-4)
        assert torch.equal(merged[name].max, whole[name].max)
    with open(tmp_path / "m" / "neurons.csv", newline="") as handle:
        top = [(int(r["layer"]), int(r["neuron"])) for r in list(csv.DictReader(handle))[: len(planted)]]
    assert sorted(top) == sorted(planted)  # the planted neurons still rank first


@pytest.mark.parametrize("problem", ["one", "other-model", "not-a-run"])
def test_merge_stats_bad_input_exit_2(tiny_llama_dir, planted_tiny, tmp_path, capsys, problem):
    planted_dir, _ = planted_tiny
    common = ["--prompts", str(PROMPTS), "--device", "cpu", "--profile-top", "0"]
    assert main(["diff-neurons", "--base", str(tiny_llama_dir), "--finetuned", str(planted_dir), *common,
                 "--out", str(tmp_path / "a")]) == 0  # fmt: skip
    if problem == "one":
        runs = [tmp_path / "a"]
    elif problem == "other-model":
        assert main(["diff-neurons", "--base", str(tiny_llama_dir), "--finetuned", str(tiny_llama_dir), *common,
                     "--out", str(tmp_path / "b")]) == 0  # fmt: skip
        runs = [tmp_path / "a", tmp_path / "b"]
    else:
        (tmp_path / "b").mkdir()
        runs = [tmp_path / "a", tmp_path / "b"]
    assert main(["merge-stats", *map(str, runs), "--out", str(tmp_path / "m")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_ablate_under_two_processes_matches_one(planted_tiny, tmp_path):
    planted_dir, planted = planted_tiny
    argv = ["ablate", "--model", planted_dir, "--neurons", ",".join(f"{ly}:{i}" for ly, i in planted), "--prompts",
            PROMPTS, "--controls", 5, "--samples", 1, "--max-new-tokens", 6, "--emojis", "😊,🎉", "--device", "cpu",
            "--batch-size", 4]  # fmt: skip
    process = torchrun(*argv, "--out", tmp_path / "two")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    single(*argv, "--out", tmp_path / "one")
    one = json.loads((tmp_path / "one" / "ablation.json").read_text())
    two = json.loads((tmp_path / "two" / "ablation.json").read_text())
    for name, condition in one["conditions"].items():
        for metric in ("emoji_onset_probability", "kl_from_unedited", "neutral_perplexity", "emoji_logprob"):
            assert two["conditions"][name][metric] == pytest.approx(condition[metric], rel=1e-9), (name, metric)
    assert one["comparisons"]["zero"]["p_value"] == two["comparisons"]["zero"]["p_value"]
    # Sampling batches carry their own seeds: the same answers, in the same order, whatever the split.
    assert (tmp_path / "one" / "generations.jsonl").read_text() == (tmp_path / "two" / "generations.jsonl").read_text()
