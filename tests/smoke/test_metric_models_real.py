"""Metric models trained for real on MiniLM embeddings (fetched on first use), and `interp evaluate` with them."""

from __future__ import annotations

import csv
import threading
from http.server import ThreadingHTTPServer

import pytest
import torch

from cli import main
from finetune.metric_training import load_metric_model
from interp.directions import DirectionSet
from tests.unit.test_judge import Handler


@pytest.fixture(scope="module")
def metric_dir(metric_models_dir):
    return metric_models_dir


def test_metric_models_reach_their_accuracies(metric_dir):
    model, encoder = load_metric_model(metric_dir)
    report = model.report
    assert report["trait_5way"]["accuracy"] >= 0.80  # goal 0.80; measured 0.946
    for trait, scores in report["high_low"].items():
        # goal 0.90 on held-out topics; measured 0.923 (agreeableness) to 1.0 (RESULTS.md)
        assert scores["opinionqa_heldout_topics"] >= 0.90, trait
    (scored,) = model.score(["I love big parties and meeting new people every weekend!"], encoder)
    assert max(scored["trait_probabilities"], key=scored["trait_probabilities"].get) == "extraversion"
    assert scored["high_pole_probability"]["extraversion"] > 0.5


def test_evaluate_table_with_a_loopback_judge(metric_dir, tiny_llama_dir, tmp_path):
    Handler.behaviour, Handler.calls = "good", 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"
        vector = tmp_path / "direction.safetensors"
        DirectionSet([2], torch.randn(1, 64, generator=torch.Generator().manual_seed(0))).save(vector)
        models = f"base={tiny_llama_dir},ike={tiny_llama_dir}:2,steered={tiny_llama_dir}:{vector}:2:40"
        argv = ["evaluate", "--models", models, "--trait", "openness",
                "--out", str(tmp_path / "eval"), "--samples", "1", "--max-new-tokens", "6", "--ike-variants", "2",
                "--metric-models", str(metric_dir), "--judge-url", url, "--device", "cpu"]  # fmt: skip
        assert main(argv) == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    with open(tmp_path / "eval" / "table.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"base", "ike", "steered"}
    assert rows["steered"]["responses"] == "26" and float(rows["steered"]["perplexity"]) > 1
    assert rows["ike"]["pae"] == "0.0" and rows["ike"]["judge_parse_rate"] == "1.0"  # the judge always says 4
    assert rows["base"]["responses"] == "26" and rows["ike"]["responses"] == "52"
    assert float(rows["base"]["perplexity"]) > 1 and rows["ike"]["ike_esr_spread"] != ""
    assert Handler.calls == 26 + 52 + 26
    for row in rows.values():  # emoji onset on the model's own answers, under its own prompt and steering
        onset = float(row["emoji_onset"])
        assert 0 < onset < 1 and float(row["emoji_onset_ci_low"]) <= onset <= float(row["emoji_onset_ci_high"])
        assert float(row["ta_ci_low"]) <= float(row["ta"]) <= float(row["ta_ci_high"])
    assert rows["steered"]["emoji_onset"] != rows["base"]["emoji_onset"]
