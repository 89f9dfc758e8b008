"""Residual directions: the residual hooks, persona vectors, and steering as an intervention (issue 16)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from cli import main
from finetune.evaluate import parse_models
from finetune.persona_vector import PersonaVectorConfig, random_cosine_p_value, run_persona_vector
from interp import models
from interp.directions import DirectionSet, residual_sums
from interp.hooks import neuron_hooks, residual_hooks
from interp.interventions import STEER, Condition, EditPlan, Steering, applied, repeat_rows
from interp.prompts import Prompt
from interp.tokens import build_sequences, make_batches, position_mask
from probes.emoji_tokens import emoji_onset_ids
from tests.conftest import save_tiny_model

MARKER, OTHER = " sunshine", " table"  # one token each in SmolLM2's vocabulary
TOPICS = ("music", "travel", "food", "sports", "work", "books")


@pytest.fixture(scope="module")
def lm(tiny_llama_dir):
    return models.load(str(tiny_llama_dir), device="cpu")


# per trait, the word its high and its low answers repeat (extraversion's high word carries the planted direction)
POLE_WORDS = {"extraversion": (MARKER, OTHER), "agreeableness": (" river", " chair"),
              "conscientiousness": (" window", " garden"), "neuroticism": (" paper", " stone"),
              "openness": (" winter", " bottle")}  # fmt: skip


@pytest.fixture(scope="module")
def pole_dataset(tmp_path_factory) -> Path:
    """An Opinion QA CSV whose high and low answers differ only in one repeated word per trait (POLE_WORDS)."""
    path = tmp_path_factory.mktemp("pole-data") / "opinion_qa.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Target Personality", "Edit Topic", "Question", "Answer", "pole", "split"])
        for trait, words in POLE_WORDS.items():
            for topic in TOPICS:
                question = f"Thinking about {topic}, what are your thoughts on {topic}?"
                for pole, word in zip(("high", "low"), words):
                    writer.writerow([trait, topic, question, f"I think {topic} is{word * 4}.", pole, "train"])
    return path


@pytest.fixture(scope="module")
def planted_direction(tmp_path_factory, tiny_llama_dir) -> tuple[Path, torch.Tensor]:
    """A copy of the tiny model whose MARKER embedding carries a large unit direction u: (model dir, u)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("planted-direction")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    (marker,) = tokenizer(MARKER, add_special_tokens=False).input_ids
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    direction /= direction.norm()
    with torch.no_grad():
        model.model.embed_tokens.weight[marker] += 300 * direction  # the residual stream's rms is about 50 here
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out, direction


def test_residual_means_equal_the_models_hidden_states(lm):
    """Parity: the hook after block L reads what transformers returns as hidden_states[L + 1]."""
    prompts = [Prompt(messages=(("user", "How was your day?"),), response="Fine, thanks.", index=0),
               Prompt(messages=(("user", "Name a colour."),), response="Blue, like the sea.", index=1)]  # fmt: skip
    sequences = build_sequences(lm.tokenizer, prompts, False, 64)
    masks = [position_mask(sequence, "response", []) for sequence in sequences]
    (batch,) = make_batches(sequences, masks, 8, lm.tokenizer.pad_token_id)
    sums = residual_sums(lm, [batch], [0, 1])
    with torch.no_grad():
        hidden = lm.model.base_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
    for slot, layer in enumerate([0, 1]):
        expected = hidden[layer + 1][batch.positions].double()
        torch.testing.assert_close(sums.mean()[slot], expected.mean(0), rtol=0, atol=1e-5)
        torch.testing.assert_close(sums.mean([1])[slot], hidden[layer + 1][1][batch.positions[1]].double().mean(0),
                                   rtol=0, atol=1e-5)  # fmt: skip
        torch.testing.assert_close(sums.rms_norm()[slot], expected.pow(2).sum(1).mean().sqrt(), rtol=1e-6, atol=0)
    assert sums.counts.tolist() == batch.positions.sum(1).tolist()


def test_a_planted_direction_is_recovered_as_the_persona_vector(planted_direction, pole_dataset, tmp_path):
    model_dir, direction = planted_direction
    config = PersonaVectorConfig(model=str(model_dir), trait="extraversion", out=tmp_path / "pv",
                                 dataset=str(pole_dataset), device="cpu", show_progress=False)  # fmt: skip
    summary = run_persona_vector(config)
    vectors = DirectionSet.load(tmp_path / "pv")
    assert vectors.layers == [0, 1, 2]
    for layer in vectors.layers:
        cosine = float(torch.nn.functional.cosine_similarity(vectors.vector(layer), direction, dim=0))
        assert cosine >= 0.9, (layer, cosine)
    assert summary["questions"] == len(TOPICS)
    assert summary["positions"]["high"] == summary["positions"]["low"] > 0
    assert all(entry["split_half_cosine"] > 0.9 for entry in summary["layers"])
    assert vectors.metadata["trait"] == "extraversion" and len(summary["prompt_fingerprints"]) == 2 * len(TOPICS)
    assert json.loads(vectors.metadata["prompt_fingerprints"]) == summary["prompt_fingerprints"]  # in the file too


def test_the_unplanted_model_has_no_such_direction(tiny_llama_dir, pole_dataset, tmp_path, planted_direction):
    """Control for the recovery test: the same data through the unplanted model does not point along u."""
    config = PersonaVectorConfig(model=str(tiny_llama_dir), trait="extraversion", out=tmp_path / "pv",
                                 dataset=str(pole_dataset), device="cpu", show_progress=False)  # fmt: skip
    run_persona_vector(config)
    vectors = DirectionSet.load(tmp_path / "pv")
    for layer in vectors.layers:
        cosine = float(torch.nn.functional.cosine_similarity(vectors.vector(layer), planted_direction[1], dim=0))
        assert abs(cosine) < 0.5, (layer, cosine)


def shifted_copy(model_dir: Path, out: Path, direction: torch.Tensor, size: float) -> Path:
    """A copy of a model whose every token embedding moved by ``size`` x ``direction``: a "fine-tune" that shifts
    the residual stream along it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.model.embed_tokens.weight += size * direction
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def test_a_fine_tune_along_the_trait_is_seen_and_a_random_one_is_not(planted_direction, pole_dataset, tmp_path):
    """Monitoring: a shift along the planted trait direction projects positively, significantly, more than on any
    other trait's vector; a shift along a random direction does not come out significant."""
    model_dir, direction = planted_direction
    random = torch.randn(direction.shape[0], generator=torch.Generator().manual_seed(11))
    random -= (random @ direction) * direction  # orthogonal to the trait's direction
    random /= random.norm()
    results = {}
    for name, towards in (("along", direction), ("random", random)):
        finetuned = shifted_copy(model_dir, tmp_path / name, towards, 30.0)
        config = PersonaVectorConfig(model=str(model_dir), finetuned=str(finetuned), trait="extraversion",
                                     out=tmp_path / f"pv-{name}", dataset=str(pole_dataset), device="cpu",
                                     show_progress=False, alternative="greater")  # fmt: skip
        results[name] = run_persona_vector(config)["finetune_shift"]["layers"]
    for entry in results["along"]:
        assert entry["projection"] > 0 and entry["significant"] and entry["largest_of_the_traits"], entry
        low, high = entry["projection_ci95"]
        assert 0 < low <= entry["projection"] <= high
    assert not any(entry["significant"] for entry in results["random"]), results["random"]
    shift = DirectionSet.load(tmp_path / "pv-along" / "finetune_shift.safetensors")  # steerable like any vector
    vectors = DirectionSet.load(tmp_path / "pv-along")
    for entry in results["along"]:
        projection = float(shift.vector(entry["layer"]) @ vectors.unit(entry["layer"]))
        assert projection == pytest.approx(entry["projection"], rel=1e-4)


def test_the_random_direction_null_is_calibrated():
    """The cosine test's false-positive rate on simulated nulls (400 random directions against a fixed vector,
    d = 64) stays within binomial noise of 5 %, for both the two-sided and a one-sided alternative."""
    from scipy.stats import binomtest

    generator = torch.Generator().manual_seed(5)
    fixed = torch.randn(64, generator=generator)
    draws = torch.randn(400, 64, generator=generator)
    cosines = torch.nn.functional.cosine_similarity(draws, fixed.expand_as(draws), dim=1).tolist()
    for alternative in ("two-sided", "greater"):
        hits = sum(random_cosine_p_value(c, 64, alternative) < 0.05 for c in cosines)
        assert binomtest(hits, len(cosines), 0.05).pvalue > 0.01, (alternative, hits)


def test_neuron_write_cosines(planted_direction, pole_dataset, tmp_path):
    """--neurons-from: each neuron's write direction against the persona vector after its layer."""
    model_dir, _ = planted_direction
    neurons = tmp_path / "neurons.csv"
    neurons.write_text("rank,layer,neuron,score\n1,2,5,0.5\n2,1,7,-0.2\n", encoding="utf-8")
    config = PersonaVectorConfig(model=str(model_dir), trait="extraversion", out=tmp_path / "pv", device="cpu",
                                 dataset=str(pole_dataset), neurons_from=str(neurons), show_progress=False)  # fmt: skip
    result = run_persona_vector(config)["neurons"]
    lm = models.load(str(model_dir), device="cpu")
    vectors = DirectionSet.load(tmp_path / "pv")
    for row, (layer, index) in zip(result["neurons"], [(2, 5), (1, 7)]):
        expected = torch.nn.functional.cosine_similarity(lm.residual_write_weight(layer)[:, index].detach(),
                                                         vectors.vector(layer), dim=0)  # fmt: skip
        assert row["neuron"] == f"{layer}:{index}" and row["cosine"] == pytest.approx(float(expected), abs=1e-6)
        assert 0 <= row["p_value"] <= row["p_value_adjusted"] <= 1


def _ids(lm):
    ids = torch.tensor([lm.tokenizer("Tell me about your weekend plans please").input_ids] * 2)
    return ids, torch.ones_like(ids)


def test_steering_with_coefficient_zero_is_the_identity(lm):
    ids, attention = _ids(lm)
    with torch.no_grad():
        plain = lm.model(input_ids=ids, attention_mask=attention).logits
        unit = torch.ones(lm.d_model) / lm.d_model**0.5
        zero = Condition("zero", mode=STEER, steering=Steering(1, unit, 0.0))
        with applied(lm, EditPlan([zero], rows=2, edit_mask=torch.ones_like(ids, dtype=torch.bool))):
            steered = lm.model(input_ids=ids, attention_mask=attention).logits
    assert torch.equal(plain, steered)


def test_steering_composes_with_neuron_edits_in_one_batched_forward(lm):
    """Three conditions in one forward (nothing; steering; steering and zeroed neurons) equal the same edits made
    by hand-written hooks, one condition at a time."""
    ids, attention = _ids(lm)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 3:] = True  # edit from the fourth position on
    direction = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1))
    direction /= direction.norm()
    neurons = ((2, 5), (2, 7))
    conditions = [
        Condition("unedited", kind="baseline"),
        Condition("steer", mode=STEER, steering=Steering(1, direction, 6.0)),
        Condition("both", neurons, mode="zero", steering=Steering(1, direction, 6.0)),
    ]
    with torch.no_grad(), applied(lm, EditPlan(conditions, rows=2, edit_mask=mask)):
        batched = lm.model(input_ids=repeat_rows(ids, 3), attention_mask=repeat_rows(attention, 3)).logits

    def add(layer, hidden):
        return hidden + 6.0 * mask.unsqueeze(-1) * direction

    def zero(layer, acts):
        acts = acts.clone()
        acts[:, :, [5, 7]] = torch.where(mask.unsqueeze(-1), 0.0, acts[:, :, [5, 7]])
        return acts

    with torch.no_grad():
        plain = lm.model(input_ids=ids, attention_mask=attention).logits
        with residual_hooks(lm, [1], add, edits=True):
            steered = lm.model(input_ids=ids, attention_mask=attention).logits
            with neuron_hooks(lm, [2], zero, edits=True):
                both = lm.model(input_ids=ids, attention_mask=attention).logits
    for number, expected in enumerate((plain, steered, both)):
        torch.testing.assert_close(batched[2 * number : 2 * number + 2], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, steered) and not torch.allclose(steered, both)


@pytest.fixture(scope="module")
def emoji_direction(tmp_path_factory, lm) -> Path:
    """A direction file whose last layer points at the emoji-onset tokens' mean unembedding row."""
    unembedding = lm.spec.unembedding(lm.model).detach()
    towards = unembedding[emoji_onset_ids(lm.tokenizer)].mean(0)
    vectors = torch.stack([torch.randn(lm.d_model), torch.randn(lm.d_model), towards])
    path = tmp_path_factory.mktemp("directions") / "emoji.safetensors"
    DirectionSet([0, 1, 2], vectors, {"method": "test: emoji unembedding"}).save(path)
    return path


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text(
        "Write a fun tweet about the beach.\nHow was your day?\nTell me about your cat.\n", encoding="utf-8"
    )
    return path


def steer_args(model, vector, prompts, out, *extra):
    return ["steer", "--model", str(model), "--vector", str(vector), "--prompts", str(prompts), "--out", str(out),
            "--device", "cpu", *extra]  # fmt: skip


def test_steering_towards_emoji_tokens_beats_random_directions(tiny_llama_dir, emoji_direction, prompts_file, tmp_path,
                                                               capsys):  # fmt: skip
    out = tmp_path / "steer"
    argv = steer_args(tiny_llama_dir, emoji_direction, prompts_file, out, "--layer", "2", "--coeff", "0,200",
                      "--controls", "79", "--alternative", "greater", "--samples", "1",
                      "--max-new-tokens", "4")  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "steering.json").read_text(encoding="utf-8"))
    zero, push = report["comparisons"]["coeff=0"], report["comparisons"]["coeff=200"]
    # coefficient 0 edits nothing: no effect beyond float32 rounding (its logits come from a product of other rows)
    assert zero["effect"] == pytest.approx(0.0, abs=1e-9) and not zero["significant"]
    assert push["effect"] > 0 and push["significant"], push["verdict"]
    assert push["nulls"]["direction"]["p_value"] == pytest.approx(1 / 80)
    assert push["p_value_adjusted"] == pytest.approx(2 / 80)  # Holm over the two coefficients
    assert "the tested direction" in push["verdict"]
    assert report["conditions"]["direction05[coeff=200]"]["steering"] == {"layer": 2, "coeff": 200.0}
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    by_condition = {(g["condition"], g["prompt_index"]): g["text"] for g in generations}
    for index in range(3):  # common random numbers: coefficient 0 samples exactly the unedited answers
        assert by_condition["tested[coeff=0]", index] == by_condition["unedited", index]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--layer", "7"), "has no vector for layer 7"),
        (("--layer", "2", "--coeff", "big"), "--coeff 'big'"),
        (("--layer", "2", "--coeff", "1,1"), "repeats"),
        (("--layer", "2", "--alternative", "from-diff"), "--alternative must be"),
    ],
)
def test_steer_refuses_bad_input(tiny_llama_dir, emoji_direction, prompts_file, tmp_path, capsys, extra, fragment):
    out = tmp_path / "run"
    code = main(steer_args(tiny_llama_dir, emoji_direction, prompts_file, out, *extra))
    err = capsys.readouterr().err
    assert code == 2 and fragment in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not out.exists()


def test_steer_refuses_a_missing_file_and_another_width(tiny_llama_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(steer_args(tiny_llama_dir, tmp_path / "none.safetensors", prompts_file, out, "--layer", "0")) == 2
    assert "does not exist" in capsys.readouterr().err
    wide = tmp_path / "wide.safetensors"
    DirectionSet([0], torch.ones(1, 32)).save(wide)
    assert main(steer_args(tiny_llama_dir, wide, prompts_file, out, "--layer", "0")) == 2
    assert "32 dimensions" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert main(steer_args(tiny_llama_dir, tmp_path / "junk.safetensors", prompts_file, out, "--layer", "0")) == 2
    assert "is not a readable safetensors file" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [(("--trait", "charisma"), "unknown trait"), (("--trait", "neuroticism", "--split", "test"), "no test question"),
     (("--trait", "extraversion", "--split", "dev"), "--split must be"),
     (("--trait", "extraversion", "--layers", "9"), "layer"),
     (("--trait", "extraversion", "--alternative", "up"), "--alternative must be")],
)  # fmt: skip
def test_persona_vector_refuses_bad_input(tiny_llama_dir, pole_dataset, tmp_path, capsys, extra, fragment):
    out = tmp_path / "run"
    argv = ["persona-vector", "--model", str(tiny_llama_dir), "--dataset", str(pole_dataset), "--out", str(out),
            "--device", "cpu", *extra]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and fragment in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not out.exists()


def test_other_model_kinds_are_taken(tmp_path, pole_dataset, capsys):
    """persona-vector and steer take a Gemma 3 model directory like every other command."""
    gemma = save_tiny_model(tmp_path / "gemma", "gemma3", layers=2)
    pv = tmp_path / "pv"
    argv = ["persona-vector", "--model", str(gemma), "--dataset", str(pole_dataset), "--out", str(pv),
            "--trait", "extraversion", "--device", "cpu", "--layers", "1"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("How was your day?\n", encoding="utf-8")
    argv = steer_args(gemma, pv, prompts, tmp_path / "steer", "--layer", "1", "--controls", "3", "--coeff=-2,2")
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "steer" / "steering.json").read_text(encoding="utf-8"))
    assert set(report["comparisons"]) == {"coeff=-2", "coeff=2"}


def test_generate_answers_while_steered(tiny_llama_dir, emoji_direction, tmp_path, capsys):
    """`interp generate --steer`: coefficient 0 gives exactly the plain answers (the same random streams), a large
    push towards the emoji tokens changes them."""
    answers = {}
    for name, extra in (("plain", ()), ("zero", ("--steer", f"{emoji_direction}:2:0")),
                        ("pushed", ("--steer", f"{emoji_direction}:2:300"))):  # fmt: skip
        out = tmp_path / f"{name}.jsonl"
        argv = ["generate", "--model", str(tiny_llama_dir), "--prompts", "persona-demo[:4]", "--samples", "2",
                "--max-new-tokens", "5", "--device", "cpu", "--out", str(out), *extra]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        answers[name] = [json.loads(line)["response"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert answers["zero"] == answers["plain"]
    assert answers["pushed"] != answers["plain"]


@pytest.mark.parametrize("steer", ["nolayer", "file:x:2", "file:2:inf"])
def test_generate_refuses_a_malformed_steering(tiny_llama_dir, tmp_path, capsys, steer):
    argv = ["generate", "--model", str(tiny_llama_dir), "--prompts", "persona-demo", "--steer", steer,
            "--out", str(tmp_path / "g.jsonl")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "VECTOR:LAYER:COEFF" in err or "finite" in err


def test_evaluate_reads_steered_model_specs():
    specs = parse_models("base=smollm2-135m,ike=smollm2-135m:4,steer=smollm2-135m:runs/pv:20:-8.5,peft=runs/a:b")
    assert [(s.name, s.ref, s.ike, s.steer) for s in specs] == [
        ("base", "smollm2-135m", 0, None), ("ike", "smollm2-135m", 4, None),
        ("steer", "smollm2-135m", 0, "runs/pv:20:-8.5"), ("peft", "runs/a:b", 0, None),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def emoji_finetune(tmp_path_factory, tiny_llama_dir, lm) -> Path:
    """A "fine-tune" of the tiny model whose every token embedding moved towards the emoji-onset tokens'
    unembedding rows (relative to the average row): the planted logit direction the lens must find."""
    unembedding = lm.spec.unembedding(lm.model).detach()
    towards = unembedding[emoji_onset_ids(lm.tokenizer)].mean(0) - unembedding.mean(0)
    return shifted_copy(tiny_llama_dir, tmp_path_factory.mktemp("emoji-ft"), towards / towards.norm(), 30.0)


def test_the_lens_finds_a_planted_logit_direction(tiny_llama_dir, emoji_finetune, prompts_file, tmp_path, capsys):
    out = tmp_path / "lens"
    argv = ["lens", "--base", str(tiny_llama_dir), "--finetuned", str(emoji_finetune), "--prompts", str(prompts_file),
            "--controls", "199", "--lens-controls", "199", "--out", str(out), "--device", "cpu",
            "--top", "8"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "lens.json").read_text(encoding="utf-8"))
    for entry in report["lens"]:
        assert entry["onset_probability"] > 10 * entry["random_onset_probability_median"], entry
        assert entry["p_value_adjusted"] < 0.05
    steering = report["steering"]
    assert steering["layer"] == 1  # the middle of three layers
    (comparison,) = steering["comparisons"].values()
    change = steering["finetuned_onset_probability"] - steering["conditions"]["unedited"]["emoji_onset_probability"]
    assert change > 0 and comparison["effect"] > 0 and comparison["gap_closed"] is not None
    difference = DirectionSet.load(out / "activation_difference.safetensors")
    assert difference.layers == [0, 1, 2] and difference.metadata["finetuned_ref"] == str(emoji_finetune)
    assert len(report["lens"][0]["promoted"]) == len(report["lens"][0]["suppressed"]) == 8


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [(("--first-positions", "0"), "--first-positions must be at least 1"),
     (("--steer-layer", "9"), "--steer-layer 9 is not a layer"),
     (("--finetuned-is-base",), "do not differ"), (("--text", "nothing-here"), "prompts 'nothing-here'")],
)  # fmt: skip
def test_lens_refuses_bad_input(tiny_llama_dir, emoji_finetune, prompts_file, tmp_path, capsys, extra, fragment):
    out = tmp_path / "run"
    finetuned = tiny_llama_dir if extra == ("--finetuned-is-base",) else emoji_finetune
    extra = () if extra == ("--finetuned-is-base",) else extra
    argv = ["lens", "--base", str(tiny_llama_dir), "--finetuned", str(finetuned), "--prompts", str(prompts_file),
            "--controls", "3", "--out", str(out), "--device", "cpu", *extra]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and fragment in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not out.exists()


def test_monitoring_without_other_traits_in_the_dataset(planted_direction, tmp_path):
    """A dataset holding one trait only: the shift is still measured, with no other trait to compare with."""
    model_dir, direction = planted_direction
    dataset = tmp_path / "one-trait.csv"
    with dataset.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Target Personality", "Edit Topic", "Question", "Answer", "pole", "split"])
        for topic in TOPICS:
            for pole, word in zip(("high", "low"), POLE_WORDS["extraversion"]):
                writer.writerow(["extraversion", topic, f"What about {topic}?", f"It is{word * 3}.", pole, "train"])
    finetuned = shifted_copy(model_dir, tmp_path / "ft", direction, 30.0)
    config = PersonaVectorConfig(model=str(model_dir), finetuned=str(finetuned), trait="extraversion",
                                 out=tmp_path / "pv", dataset=str(dataset), device="cpu",
                                 show_progress=False)  # fmt: skip
    for entry in run_persona_vector(config)["finetune_shift"]["layers"]:
        assert entry["other_traits_cosine"] == {} and entry["largest_of_the_traits"] is None
        assert entry["significant"]
