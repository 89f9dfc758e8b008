"""MEND (finetune/mend.py): gradient factors, the editor's training and resumption, edits and the commands."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cli import main
from finetune.dataset import load_rows, select
from finetune.mend import (
    EditConfig,
    MendConfig,
    MendEditor,
    answer_nll,
    apply_edits,
    edit_sites,
    gradient_factors,
    train_editor,
)
from finetune.training import build_examples, collate
from interp import models
from tests.conftest import FIXTURES

PAPER_CSV = FIXTURES / "opinion_qa_sample" / "personality_data_train.csv"


def _batch(lm, count: int = 3):
    rows = select(load_rows(PAPER_CSV), "extraversion")[:count]
    ids, labels, attention = collate(build_examples(lm.tokenizer, rows, False, 96), lm.tokenizer.pad_token_id)
    return ids, attention, labels


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gemma3_dir"])
def test_gradient_factors_give_the_autograd_gradient(fixture, request):
    lm = models.load(str(request.getfixturevalue(fixture)), device="cpu", dtype="float32")
    sites = edit_sites(lm, [0, 1], ["mlp.up_proj", "mlp.down_proj"])
    ids, attention, labels = _batch(lm)
    factors, nll = gradient_factors(lm, sites, ids, attention, labels)
    weights = dict(lm.model.base_model.named_parameters())
    lm.model.requires_grad_(False)
    for site in sites:
        weights[site.name].requires_grad_(True)
    answer_nll(lm, ids, attention, labels).sum().backward()
    for site in sites:
        u, delta = factors[site.name]
        assert u.shape[1] == site.shape[1] and delta.shape[1] == site.shape[0]
        torch.testing.assert_close(delta.T @ u, weights[site.name].grad, atol=1e-5, rtol=1e-4)
    assert nll.shape == (3,) and bool((nll > 0).all())


def test_the_untrained_editor_is_one_gradient_step(tiny_llama_dir):
    lm = models.load(str(tiny_llama_dir), device="cpu", dtype="float32")
    sites = edit_sites(lm, [2], ["mlp.up_proj", "mlp.down_proj"])
    factors, _ = gradient_factors(lm, sites, *_batch(lm))
    editor = MendEditor(sites, rank=8, step_size=0.01)
    editor.calibrate([factors])
    for name, update in editor.weight_updates(factors).items():
        u, delta = factors[name]
        torch.testing.assert_close(update, 0.01 * delta.T @ u, atol=1e-6, rtol=1e-4)


def test_a_trained_editor_edits_better_than_the_untrained_one_and_stays_local(mend_tiny):
    _, summary = mend_tiny
    trained, untrained = summary["validation"]["trained"], summary["validation"]["untrained"]
    assert trained["edits"] == untrained["edits"] == 105  # held-out training rows, never trained on
    assert trained["nll_after"] < untrained["nll_after"] < trained["nll_before"]
    assert trained["nll_before"] - trained["nll_after"] > 2 * (untrained["nll_before"] - untrained["nll_after"])
    assert trained["neutral_kl"] < 0.05  # the stated locality bound (nats per token on neutral text)
    gain = summary["trained_vs_untrained"]
    low, high = gain["ci95"]
    assert 0 < low <= gain["mean_extra_nll_drop"] <= high


def test_training_resumes_with_the_same_result(tiny_llama_dir, tmp_path):
    def config(out):
        return MendConfig(model=str(tiny_llama_dir), out=out, layers="1-2", rank=8, steps=4, checkpoint_every=1,
                          dataset=str(PAPER_CSV), device="cpu", show_progress=False)  # fmt: skip

    train_editor(config(tmp_path / "straight"), log=lambda m: None)

    def interrupt(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_editor(config(tmp_path / "resumed"), log=lambda m: None, on_step=interrupt)
    assert not (tmp_path / "resumed" / "editor").exists()
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 2
    messages = []
    train_editor(config(tmp_path / "resumed"), log=messages.append)
    assert messages == ["resuming from step 2 of 4"]
    straight = load_file(str(tmp_path / "straight" / "editor" / "editor.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "editor" / "editor.safetensors"))
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
    log = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]


def test_an_edit_writes_a_model_that_every_command_loads(mend_tiny, tiny_llama_dir, tmp_path):
    editor_dir, _ = mend_tiny
    out = tmp_path / "edited"
    summary = apply_edits(EditConfig(editor=editor_dir, model=str(tiny_llama_dir), trait="extraversion", out=out,
                                     device="cpu", show_progress=False), log=lambda m: None)  # fmt: skip
    assert summary["edit_nll_after"] < summary["edit_nll_before"]
    assert summary["editor_trained_on_this_model"] is True and len(summary["edits"]) == 4
    assert set(summary["test_nll_by_pole"]) == {"high", "low"}
    assert summary["test_nll_by_pole"]["high"]["after"] == summary["test_nll_after"]
    assert json.loads((out / "edit.json").read_text())["merged_fingerprint"] == summary["merged_fingerprint"]
    base = dict(models.load(str(tiny_llama_dir), device="cpu").model.named_parameters())
    edited = dict(models.load(str(out / "merged"), device="cpu").model.named_parameters())
    changed = {name for name in base if not torch.equal(base[name], edited[name])}
    assert changed == {f"model.layers.{layer}.mlp.{m}.weight" for layer in range(3) for m in ("up_proj", "down_proj")}


def test_mend_commands_refuse_bad_input(mend_tiny, tiny_mistral_dir, tmp_path, capsys):
    editor_dir, _ = mend_tiny
    assert (
        main(["edit", "--editor", str(tmp_path / "none"), "--trait", "extraversion", "--out", str(tmp_path / "e")]) == 2
    )
    assert "is not a MEND editor" in capsys.readouterr().err
    wrong_model = ["edit", "--editor", str(editor_dir), "--model", str(tiny_mistral_dir), "--trait", "openness",
                   "--out", str(tmp_path / "e"), "--device", "cpu"]  # fmt: skip
    assert main(wrong_model) == 2
    assert "was trained for weights this model does not have" in capsys.readouterr().err
    assert main(["edit", "--editor", str(editor_dir), "--trait", "kindness", "--out", str(tmp_path / "e")]) == 2
    assert main(["mend", "train", "--out", str(tmp_path / "m"), "--steps", "0"]) == 2
    bad_module = ["mend", "train", "--model", str(tiny_mistral_dir), "--out", str(tmp_path / "m"),
                  "--modules", "mlp.act_fn", "--device", "cpu"]  # fmt: skip
    assert main(bad_module) == 2
    assert "MEND edits nn.Linear weights" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
