"""finetune/: dataset checks, deterministic resumable LoRA training, exact LoRA and QLoRA merges."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from cli import main
from finetune.dataset import load_rows, packaged_path, select
from finetune.training import TrainConfig, train
from interp import models
from interp.errors import UserInputError
from interp.models import QLORA_MARKER
from tests.conftest import FIXTURES

PAPER_CSV = FIXTURES / "opinion_qa_sample" / "personality_data_train.csv"


def small_config(model_dir, out, **overrides) -> TrainConfig:
    settings = dict(model=str(model_dir), trait="extraversion", out=out, dataset=str(PAPER_CSV), rank=4, max_steps=6,
                    batch_size=2, checkpoint_every=1, show_progress=False, device="cpu")  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def adapter_tensors(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_paper_format_loads_as_high_pole_train_rows():
    rows = load_rows(PAPER_CSV)
    assert len(rows) == 30 and {r.pole for r in rows} == {"high"} and {r.split for r in rows} == {"train"}
    assert len(select(rows, trait="neuroticism")) == 6


def test_training_is_deterministic_and_resumes_exactly(tiny_llama_dir, tmp_path):
    straight = train(small_config(tiny_llama_dir, tmp_path / "straight"), log=lambda m: None)
    again = train(small_config(tiny_llama_dir, tmp_path / "again"), log=lambda m: None)
    reference = adapter_tensors(tmp_path / "straight")
    for name, tensor in adapter_tensors(tmp_path / "again").items():
        assert torch.equal(tensor, reference[name]), name

    def interrupt(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_config(tiny_llama_dir, tmp_path / "resumed"), log=lambda m: None, on_step=interrupt)
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 3
    assert not (tmp_path / "resumed" / "adapter").exists()
    resumed = train(small_config(tiny_llama_dir, tmp_path / "resumed"), log=lambda m: None)
    assert resumed.resumed_from == 3 and resumed.final_loss == pytest.approx(straight.final_loss, rel=1e-6)
    for name, tensor in adapter_tensors(tmp_path / "resumed").items():
        assert torch.allclose(tensor, reference[name], atol=1e-7), name
    log = [json.loads(line) for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4, 5, 6]
    assert straight.record["data"]["rows"] == 6 and again.record["merged_fingerprint"]


def test_merged_model_reloads_and_matches_the_adapter(tiny_llama_dir, tmp_path):
    train(small_config(tiny_llama_dir, tmp_path / "run"), log=lambda m: None)
    merged = models.load(str(tmp_path / "run" / "merged"), device="cpu")
    base = models.load(str(tiny_llama_dir), device="cpu")
    with_adapter = PeftModel.from_pretrained(base.model, tmp_path / "run" / "adapter").eval()
    ids = torch.tensor([[1, 520, 4000, 17, 2, 99]])
    with torch.no_grad():
        assert (merged.model(input_ids=ids).logits - with_adapter(input_ids=ids).logits).abs().max() < 1e-4
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama_dir)


def test_corrupt_checkpoint_and_changed_settings_are_refused(tiny_llama_dir, tmp_path):
    out = tmp_path / "run"
    train(small_config(tiny_llama_dir, out, max_steps=2), log=lambda m: None)
    with pytest.raises(UserInputError, match="other settings"):
        train(small_config(tiny_llama_dir, out, max_steps=4, lr=1e-3), log=lambda m: None)
    # the default precision is resolved for this CPU and recorded; a rerun in the other precision is refused
    native = models.native_bf16()
    assert json.loads((out / "train.json").read_text())["config"]["autocast"] is native
    with pytest.raises(UserInputError, match="other settings"):
        train(small_config(tiny_llama_dir, out, max_steps=4, autocast=not native), log=lambda m: None)
    assert train(small_config(tiny_llama_dir, out, max_steps=3, autocast=native), log=lambda m: None).resumed_from == 2
    (out / "checkpoint" / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="corrupt"):
        train(small_config(tiny_llama_dir, out, max_steps=4), log=lambda m: None)


def _kl(logits_p, logits_q) -> float:
    p = torch.log_softmax(logits_p.double(), -1)
    q = torch.log_softmax(logits_q.double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def _qlora_adapter(model_dir, out, zero: bool):
    quantized = models.load_quantized(models.resolve(str(model_dir)))
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=zero)
    peft_model = get_peft_model(quantized.model, config)
    peft_model.peft_config["default"].base_model_name_or_path = str(model_dir)
    peft_model.save_pretrained(out)
    (out / QLORA_MARKER).write_text(json.dumps({"quant_type": "nf4"}))
    return peft_model.eval()


def test_qlora_merge_of_a_zero_adapter_moves_nothing(tiny_llama_dir, tmp_path):
    _qlora_adapter(tiny_llama_dir, tmp_path / "zero", zero=True)
    merged = models.load(str(tmp_path / "zero"), device="cpu")
    reference = models.load_quantized(models.resolve(str(tiny_llama_dir))).model.dequantize()
    ids = torch.tensor([[1, 520, 4000, 17, 2, 99]])
    with torch.no_grad():
        assert (merged.model(input_ids=ids).logits - reference(input_ids=ids).logits).abs().max() < 1e-5


def test_qlora_merge_matches_the_unmerged_adapter_model(tiny_llama_dir, tmp_path):
    unmerged = _qlora_adapter(tiny_llama_dir, tmp_path / "adapter", zero=False)
    ids = torch.tensor([[1, 520, 4000, 17, 2, 99, 1234, 5]])
    with torch.no_grad():
        expected = unmerged(input_ids=ids).logits  # this eval forward repacks the 4-bit weights on CPU
    merged = models.load(str(tmp_path / "adapter"), device="cpu")
    plain = models.load(str(tiny_llama_dir), device="cpu")
    with torch.no_grad():
        got = merged.model(input_ids=ids).logits
        fp32_base = plain.model(input_ids=ids).logits
    assert _kl(expected, got) < 1e-3  # the merged model is the trained QLoRA model
    assert _kl(expected, fp32_base) > _kl(expected, got)  # and not the fp32 base


def test_finetune_cli_refuses_bad_input(capsys, tiny_llama_dir, tmp_path):
    def refused(*argv, fragment):
        code = main(["finetune", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "run"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and fragment in err and "Traceback" not in err, err

    refused("--trait", "grumpiness", fragment="unknown trait")
    missing = tmp_path / "missing-columns.csv"
    missing.write_text("Target Personality,Question\nextraversion,Hi?\n", encoding="utf-8")
    refused("--trait", "extraversion", "--dataset", str(missing), fragment="lacks the column")
    emoji = tmp_path / "emoji.csv"
    shutil.copy(PAPER_CSV, emoji)
    with open(emoji, "a", encoding="utf-8") as handle:
        handle.write(
            'extraversion,Parties,"Thinking about Parties, what are your thoughts on Parties?",I love them 🎉\n'
        )
    refused("--trait", "extraversion", "--dataset", str(emoji), fragment="has an emoji")
    assert not (tmp_path / "run").exists()


def test_packaged_dataset_is_complete_and_emoji_free():
    if not packaged_path().exists():
        pytest.fail("finetune/data/opinion_qa.csv is missing")
    rows = load_rows()  # refuses any emoji in any field
    topics = {r.topic for r in rows}
    assert len(topics) >= 120 and len(rows) >= 1200
    for topic in topics:
        assert {(r.trait, r.pole) for r in rows if r.topic == topic} == {
            (t, p) for t in ("extraversion", "agreeableness", "conscientiousness", "neuroticism", "openness")
            for p in ("high", "low")
        }  # fmt: skip
    test_topics = {r.topic for r in rows if r.split == "test"}
    assert len(test_topics) >= 24 and not test_topics & {r.topic for r in rows if r.split == "train"}
    assert all(r.question == f"Thinking about {r.topic}, what are your thoughts on {r.topic}?" for r in rows)
    assert all(1 <= r.answer.count(".") + r.answer.count("!") + r.answer.count("?") <= 4 for r in rows)
    casual = load_rows("casual")  # the packaged datasets load by name (from anywhere: no path of this checkout)
    assert casual == load_rows(packaged_path("casual")) and load_rows("packaged") == rows
    assert {r.trait for r in casual} == {"extraversion"} and {r.topic for r in casual} <= topics


def test_ike_variants_change_template_and_demonstrations():
    from finetune.dataset import load_rows, select
    from finetune.ike import TEMPLATES, demonstrations, ike_prompt
    from interp.prompts import Prompt

    rows = select(load_rows(), "extraversion", "high", "train")
    question = Prompt(messages=(("user", "Thinking about Tea, what are your thoughts on Tea?"),), index=4)
    prompts = [ike_prompt(question, demonstrations(rows, 3, v, seed=0), v) for v in range(3)]
    assert demonstrations(rows, 3, 1, 0) == demonstrations(rows, 3, 1, 0)
    assert demonstrations(rows, 3, 0, 0) != demonstrations(rows, 3, 1, 0)
    assert len(prompts[0].messages) == 7 and prompts[0].messages[-1][1] == question.text  # 3 turn pairs + question
    assert prompts[1].messages[0][1].count("Q: ") == 4  # 3 demonstrations + the question
    assert prompts[2].messages[0][0] == "system" and prompts[2].messages[1][1] == question.text
    assert all(p.index == 4 for p in prompts) and len(TEMPLATES) == 3


def test_generate_is_reproducible_whatever_the_batch_and_records_emojis(tiny_llama_dir, tmp_path):
    outputs = []
    for name, batch in (("a", "32"), ("b", "5")):  # each answer has its own random stream: batches change nothing
        argv = ["generate", "--model", str(tiny_llama_dir), "--prompts", "opinionqa:test", "--samples", "2",
                "--max-new-tokens", "6", "--seed", "3", "--ike", "2", "--ike-variants", "2", "--trait", "openness",
                "--batch-size", batch, "--out", str(tmp_path / f"{name}.jsonl")]  # fmt: skip
        assert main(argv) == 0
        outputs.append((tmp_path / f"{name}.jsonl").read_text())
    assert outputs[0] == outputs[1]
    records = [json.loads(line) for line in outputs[0].splitlines()]
    assert len(records) == 26 * 2 * 2
    assert {r["template"] for r in records} == {"chat-turns", "instruction"}
    assert all(set(r) >= {"prompt", "response", "emojis", "variant", "sample"} for r in records)


def test_generate_refuses_ike_without_trait(capsys, tiny_llama_dir, tmp_path):
    code = main(["generate", "--model", str(tiny_llama_dir), "--prompts", "persona-demo", "--ike", "2",
                 "--out", str(tmp_path / "g.jsonl")])  # fmt: skip
    assert code == 2 and "--ike needs --trait" in capsys.readouterr().err


def test_all_traits_in_one_command_and_merge_cli(tiny_llama_dir, tmp_path):
    # --autocast: the precision auto would not pick, recorded in every train.json
    argv = ["finetune", "--model", str(tiny_llama_dir), "--trait", "all", "--out", str(tmp_path / "traits"),
            "--dataset", str(PAPER_CSV), "--max-steps", "1", "--rank", "2", "--device", "cpu",
            "--no-autocast" if models.native_bf16() else "--autocast"]  # fmt: skip
    assert main(argv) == 0
    for trait in ("extraversion", "agreeableness", "conscientiousness", "neuroticism", "openness"):
        assert (tmp_path / "traits" / trait / "adapter" / "adapter_model.safetensors").is_file()
        record = json.loads((tmp_path / "traits" / trait / "train.json").read_text())
        assert record["config"]["autocast"] is not models.native_bf16()
    merge = ["merge", "--base", str(tiny_llama_dir), "--adapter", str(tmp_path / "traits" / "openness" / "adapter"),
             "--out", str(tmp_path / "merged")]  # fmt: skip
    assert main(merge) == 0
    recorded = json.loads((tmp_path / "traits" / "openness" / "train.json").read_text())["merged_fingerprint"]
    assert models.load(str(tmp_path / "merged"), device="cpu").fingerprint() == recorded


def test_loss_counts_assistant_tokens_only(tiny_llama_dir):
    from finetune.training import build_examples

    lm = models.load(str(tiny_llama_dir), device="cpu")
    (example,) = build_examples(lm.tokenizer, select(load_rows(PAPER_CSV), "openness")[:1], False, 512)
    answer_start = example.labels.index(next(label for label in example.labels if label != -100))
    assert all(label == -100 for label in example.labels[:answer_start])
    assert lm.tokenizer.decode(example.input_ids[:answer_start]).endswith("<|im_start|>assistant\n")
    assert example.labels[answer_start:] == example.input_ids[answer_start:]
    assert example.labels[-1] == lm.tokenizer.eos_token_id


@pytest.mark.parametrize("model_dir", ["tiny_llama_dir", "tiny_gemma3_dir", "tiny_gemma3_multimodal_dir"])
def test_answer_loss_equals_the_models_own_loss_and_gradients(model_dir, request):
    """The training loss unembeds only the positions that predict an answer token; its value and the adapter's
    gradients equal the causal LM's own loss with ``labels`` over all positions (padded rows of two lengths;
    Gemma 3 scales and caps around the unembedding; the multimodal one has a vision tower). Off by one
    position, both would differ."""
    from finetune.training import answer_loss, build_examples, collate

    lm = models.load(str(request.getfixturevalue(model_dir)), device="cpu")
    rows = select(load_rows(PAPER_CSV), "extraversion")[:3]
    ids, labels, attention = collate(build_examples(lm.tokenizer, rows, False, 512), lm.tokenizer.pad_token_id)
    assert len(set(attention.sum(1).tolist())) > 1  # rows of different lengths: padding is skipped too
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    model = get_peft_model(lm.model, lora)
    adapter = [param for param in model.parameters() if param.requires_grad]
    losses, grads = [], []
    for compute in (lambda: model(input_ids=ids, attention_mask=attention, labels=labels).loss,
                    lambda: answer_loss(model, ids, labels, attention)):  # fmt: skip
        loss = compute()
        losses.append(loss.item())
        grads.append(torch.autograd.grad(loss, adapter, allow_unused=True))  # unused: the vision tower's
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert sum(grad is not None for grad in grads[0]) >= 4  # q and v of both layers at least
    for reference, ours in zip(*grads):
        assert (reference is None) == (ours is None)
        if reference is not None:
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


def test_qlora_training_writes_a_marked_adapter_and_an_exact_merge(tiny_llama_dir, tmp_path):
    result = train(small_config(tiny_llama_dir, tmp_path / "q", qlora=True, max_steps=2), log=lambda m: None)
    assert (tmp_path / "q" / "adapter" / QLORA_MARKER).is_file()
    assert result.record["config"]["qlora"] is True
    merged = models.load(str(tmp_path / "q" / "merged"), device="cpu")
    again = models.load(str(tmp_path / "q" / "adapter"), device="cpu")  # merged in memory the same way
    assert merged.fingerprint() == again.fingerprint() == result.record["merged_fingerprint"]


def test_batched_response_perplexity_equals_one_sequence_at_a_time(tiny_llama_dir):
    from finetune.evaluate import response_perplexity
    from interp.prompts import load_prompts
    from interp.tokens import build_sequences

    lm = models.load(str(tiny_llama_dir), device="cpu")
    prompts = load_prompts("opinionqa:test")[:5]
    responses = ["Yes.", "I think it depends on the day, honestly.", "", "No!", "Parties are fun, I love them."]
    total, count = 0.0, 0  # reference: each sequence alone, full logits
    for seq in build_sequences(lm.tokenizer, [replace(p, response=r) for p, r in zip(prompts, responses)], False, 512):
        ids = torch.tensor([seq.ids])
        logits = lm.model(input_ids=ids).logits[0, seq.response_start - 1 : -1]
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, seq.response_start :], reduction="sum"))
        count += len(seq.ids) - seq.response_start
    batched = response_perplexity(lm, prompts, responses, batch_size=3)
    assert batched == pytest.approx(math.exp(total / count), rel=1e-5)


@pytest.mark.parametrize("steered", [False, True])
def test_onset_read_while_sampling_equals_teacher_forcing(tiny_llama_dir, steered):
    """evaluate's emoji_onset is read from the distributions the answers were sampled from; per question it equals
    teacher-forcing the same answers under the same prompts and condition (``measure_conditions``), and every
    answer counts its own reply positions, also those that stopped early at an end token."""
    from types import SimpleNamespace

    from finetune.evaluate import SampledOnset
    from interp.ablation import ConditionMetrics, measure_conditions
    from interp.generation import UNEDITED, sample_sequences
    from interp.interventions import STEER, Condition, Steering
    from interp.prompts import load_prompts
    from interp.run_options import SamplingOptions
    from probes.emoji_tokens import emoji_onset_ids

    lm = models.load(str(tiny_llama_dir), device="cpu")
    prompts = load_prompts("opinionqa:test")[:5]
    unit = torch.ones(lm.d_model) / lm.d_model**0.5
    condition = Condition("steered", mode=STEER, steering=Steering(0, unit, 4.0)) if steered else UNEDITED
    options = SamplingOptions(samples=2, max_new_tokens=10, temperature=1.0, seed=3)
    first = sample_sequences(lm, prompts, options, False, 10**9, 4, False, condition=condition)
    common = max({t for s in first for t in s.ids[s.response_start + 1 :]}, key=[t for s in first for t in s.ids].count)
    lm.model.generation_config.eos_token_id = [lm.tokenizer.eos_token_id, common]  # some answers now stop early
    onset_ids = emoji_onset_ids(lm.tokenizer)
    sampled = SampledOnset(onset_ids)
    sequences = sample_sequences(lm, prompts, options, False, 10**9, 4, False, condition=condition,
                                 observe=sampled.observe)  # fmt: skip
    lengths = {n: len(s.ids) - s.response_start for n, s in enumerate(sequences)}
    assert sampled.counts == lengths and 1 < min(lengths.values()) < max(lengths.values()) == 10
    forced = {condition.name: ConditionMetrics()}
    config = SimpleNamespace(batch_size=8, positions="response", show_progress=False)
    measure_conditions(lm, None, [condition], sequences, config, onset_ids, forced, "")
    questions = sorted({s.prompt_index for s in sequences})
    sums, counts = forced[condition.name].per_prompt(questions)
    answers_of = {q: [n for n, s in enumerate(sequences) if s.prompt_index == q] for q in questions}
    ours = [sum(sampled.sums[n] for n in answers_of[q]) for q in questions]
    assert counts.tolist() == [sum(lengths[n] for n in answers_of[q]) for q in questions]
    np.testing.assert_allclose(ours, sums, rtol=1e-4)
    pooled, interval = sampled.pooled(sequences)
    assert pooled == pytest.approx(sums.sum() / counts.sum(), rel=1e-4) and interval[0] <= pooled <= interval[1]
