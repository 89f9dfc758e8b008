"""Neuron profiles and the landscape file: the numbers the report shows equal the model's own activations."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors import safe_open

from cli import main
from interp import models
from interp.backends import TorchBackend
from interp.capture import capture_stats
from interp.dla import Readout
from interp.hooks import neuron_hooks
from interp.profiles import ProfileRecorder
from interp.prompts import load_prompts
from interp.tokens import TokenBatch, build_sequences, make_batches, position_mask
from probes.emoji_tokens import token_byte_table


def test_one_pass_profiles_equal_a_second_pass_over_hooked_activations(tiny_llama_dir):
    """The profiles kept during capture (strided values, top contexts with their windows, promoted tokens) equal
    what a second pass over every sequence's hooked activations gives."""
    lm = models.load(str(tiny_llama_dir), device="cpu", dtype="float32")
    sequences = build_sequences(lm.tokenizer, load_prompts("persona-demo")[:5], False, 64)
    table = token_byte_table(lm.tokenizer)
    masks = [position_mask(s, "all", table) for s in sequences]
    batches = make_batches(sequences, masks, 2, lm.tokenizer.eos_token_id)
    layers, neurons = [0, 1, 2], [(0, 3), (2, 17), (2, 100)]
    recorder = ProfileRecorder([s.ids for s in sequences], masks, layers, lm.d_mlp, top_contexts=3, max_values=40)

    def observe(batch: TokenBatch, layer: int, acts: torch.Tensor, counted: torch.Tensor) -> None:
        recorder.observe(list(batch.sequence_numbers), layer, acts, batch.positions, counted)

    capture_stats(TorchBackend(lm), batches, layers, lm.d_mlp, 0.1, observe=observe)
    recorder.keep_readout(lm)
    profiles = recorder.profiles(neurons)

    hooked: list[dict[int, torch.Tensor]] = []  # the second pass: per sequence, layer -> [tokens, d_mlp]
    captured: dict[int, torch.Tensor] = {}
    for batch in batches:
        with neuron_hooks(lm, [0, 2], lambda layer, acts: captured.__setitem__(layer, acts.clone())):
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        for row, length in enumerate(batch.attention_mask.sum(1).tolist()):
            hooked.append({layer: acts[row, :length] for layer, acts in captured.items()})
    where = [(s, p) for s, mask in enumerate(masks) for p, counted in enumerate(mask) if counted]
    stride = len(where) // 40
    assert stride > 1  # the values are an even stride through the counted positions
    for layer, index in neurons:
        profile = profiles[f"{layer}:{index}"]
        values = [float(hooked[s][layer][p, index]) for s, p in where]
        assert profile["values"] == pytest.approx(values[::stride][:40], rel=1e-3, abs=1e-4)  # 4 significant digits
        top = sorted(range(len(where)), key=lambda i: -values[i])[:3]
        assert len(profile["contexts"]) == 3
        for i, context in zip(top, profile["contexts"]):
            s, p = where[i]
            begin, end = max(0, p - 12), min(len(sequences[s].ids), p + 5)
            assert context["tokens"] == [lm.tokenizer.decode([t]) for t in sequences[s].ids[begin:end]]
            assert context["focus"] == p - begin and context["activation"] == pytest.approx(values[i], rel=1e-3)
            window = hooked[s][layer][begin:end, index].tolist()
            assert context["activations"] == pytest.approx(window, rel=1e-3, abs=1e-4)
        (promoted,) = Readout.of(lm, [layer]).top_promoted_tokens([(layer, index)], 8)
        assert [p["token"] for p in profile["promoted_tokens"]] == [lm.tokenizer.decode([t]) for t, _ in promoted]


def test_every_neurons_top_contexts_are_its_top_activations(tiny_llama_dir):
    """The running top k, merged batch by batch, holds for every neuron of every layer the k largest counted
    activations and where they are (the other test checks a few neurons' contexts in full)."""
    lm = models.load(str(tiny_llama_dir), device="cpu", dtype="float32")
    sequences = build_sequences(lm.tokenizer, load_prompts("persona-demo")[:8], False, 64)
    table = token_byte_table(lm.tokenizer)
    masks = [position_mask(s, "all", table) for s in sequences]
    batches = make_batches(sequences, masks, 2, lm.tokenizer.eos_token_id)
    layers, k = [0, 1], 4
    recorder = ProfileRecorder([s.ids for s in sequences], masks, layers, lm.d_mlp, top_contexts=k, max_values=40)
    hooked: dict[int, list[torch.Tensor]] = {layer: [None] * len(sequences) for layer in layers}

    def observe(batch: TokenBatch, layer: int, acts: torch.Tensor, counted: torch.Tensor) -> None:
        recorder.observe(list(batch.sequence_numbers), layer, acts, batch.positions, counted)
        for row, (number, length) in enumerate(zip(batch.sequence_numbers, batch.attention_mask.sum(1).tolist())):
            hooked[layer][number] = acts[row, :length].clone()

    capture_stats(TorchBackend(lm), batches, layers, lm.d_mlp, 0.1, observe=observe)
    for layer in layers:
        counted = torch.cat([acts[torch.tensor(mask)] for acts, mask in zip(hooked[layer], masks)])  # [N, d_mlp]
        expected = counted.topk(k, dim=0).values
        top = recorder._top[layer]
        assert torch.equal(top.values, expected)
        found = torch.stack([hooked[layer][s][p, n] for s, p, n in zip(top.sequence.flatten().tolist(),
                             top.position.flatten().tolist(), torch.arange(lm.d_mlp).repeat(k).tolist())])  # fmt: skip
        assert torch.equal(found.reshape(k, lm.d_mlp), top.values)  # each value is where it says it is


@pytest.mark.parametrize("k", [3, 11])  # 11: more than the first batch counts
def test_top_contexts_break_ties_in_sequence_order_however_the_batches_are_grouped(k):
    """Activations from four levels only, so most of a neuron's best k tie: whatever the batch size and order,
    the running top k is each neuron's k largest counted activations, equal ones in (sequence, position) order,
    with the activations around each (the order a pass over all positions sorted by that key gives)."""
    generator = torch.Generator().manual_seed(0)
    sequences, width, d_mlp = 7, 9, 6
    acts = torch.randint(0, 4, (sequences, width, d_mlp), generator=generator).float()
    counted = torch.rand((sequences, width), generator=generator) < 0.6
    counted[0] = False
    counted[0, 2] = True  # the first sequence counts one position
    ids = [[0] * width for _ in range(sequences)]
    masks = counted.tolist()

    def top_of(order: list[int], batch_size: int):
        recorder = ProfileRecorder(ids, masks, [0], d_mlp, top_contexts=k, max_values=10)
        for start in range(0, sequences, batch_size):
            rows = order[start : start + batch_size]
            recorder.observe(rows, 0, acts[rows], counted[rows], acts[rows][counted[rows]])
        return recorder._top[0]

    where = [(s, p) for s in range(sequences) for p in range(width) if counted[s, p]]
    for order, batch_size in [(list(range(sequences)), 1), (list(range(sequences)), 3), ([6, 5, 4, 3, 2, 1, 0], 2)]:
        top = top_of(order, batch_size)
        for n in range(d_mlp):
            best = sorted(where, key=lambda sp: (-float(acts[sp[0], sp[1], n]), *sp))[:k]
            assert top.sequence[:, n].tolist() == [s for s, _ in best]
            assert top.position[:, n].tolist() == [p for _, p in best]
            assert top.values[:, n].tolist() == [float(acts[s, p, n]) for s, p in best]
            for j, (s, p) in enumerate(best):
                around = (torch.arange(-12, 5) + p).clamp(0, width - 1)
                assert torch.equal(top.windows[j, n], acts[s, around, n])


def test_too_many_positions_to_rank_in_the_sort_keys_are_refused():
    """The sort keys hold a position's rank in 29 bits: 2**14 sequences of 2**15 tokens do not fit, one fewer does."""
    from interp.errors import UserInputError

    long = [0] * 2**15
    with pytest.raises(UserInputError, match="too many to profile"):
        ProfileRecorder([long] * 2**14, [], [0], 4)
    ProfileRecorder([long] * (2**14 - 1), [], [0], 4, max_values=1)


def test_landscape_and_profiles_agree_with_neurons_csv(tiny_llama_dir, planted_tiny, tmp_path):
    planted_dir, _ = planted_tiny
    out = tmp_path / "diff"
    argv = ["diff-neurons", "--base", str(tiny_llama_dir), "--finetuned", str(planted_dir), "--prompts",
            "persona-demo", "--out", str(out), "--device", "cpu", "--profile-top", "5", "--top-k", "20"]  # fmt: skip
    assert main(argv) == 0
    with open(out / "neurons.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with safe_open(str(out / "landscape.safetensors"), framework="pt") as handle:
        score, layers = handle.get_tensor("score"), json.loads(handle.metadata()["layers"])
    assert score.shape == (3, 128) and layers == [0, 1, 2]
    for row in rows:  # a --top-k file, but the landscape has every neuron
        assert float(row["score"]) == pytest.approx(float(score[layers.index(int(row["layer"])), int(row["neuron"])]),
                                                    rel=1e-5)  # fmt: skip
    assert int((score.abs() >= abs(float(rows[-1]["score"])) * (1 - 1e-6)).sum()) == len(rows)
    profiles = json.loads((out / "profiles.json").read_text())
    assert profiles["neurons"] == [f"{r['layer']}:{r['neuron']}" for r in rows[:5]]
    assert set(profiles["models"]) == {"base", "finetuned"}
    assert main([*argv[:-4], "--profile-top", "0", "--out", str(tmp_path / "none")]) == 0
    assert not (tmp_path / "none" / "profiles.json").exists()


def test_promoted_tokens_are_the_centred_logit_change(tiny_gemma3_dir):
    lm = models.load(str(tiny_gemma3_dir), device="cpu", dtype="float32")  # post-MLP norm gains apply
    unembed = lm.spec.unembedding(lm.model).double()
    write = lm.residual_write_weight(1)[:, 5].double() * lm.spec.final_norm_scale(lm.model).double()
    values, ids = ((unembed - unembed.mean(0)) @ write).topk(5)
    promoted, again = Readout.of(lm, [0, 1]).top_promoted_tokens([(1, 5), (0, 2)], k=5)
    assert [token for token, _ in promoted] == ids.tolist()
    assert [change for _, change in promoted] == pytest.approx(values.tolist(), rel=1e-5)
    (alone,) = Readout.of(lm, [0]).top_promoted_tokens([(0, 2)], k=5)  # read together or alone: the same
    assert [token for token, _ in again] == [token for token, _ in alone]
    assert [change for _, change in again] == pytest.approx([change for _, change in alone], rel=1e-6)
