"""interp.generation: Gumbel-max sampling draws from the model's distribution, and answers keep to their streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from interp import models
from interp.generation import (
    UNEDITED,
    _gumbel_noise,
    _sample,
    _unedited_common_front,
    generate_edited,
    sample_sequences,
)
from interp.interventions import Condition, EditPlan
from interp.prompts import Prompt, load_prompts
from interp.run_options import SamplingOptions
from interp.tokens import prompt_ids

DRAWS = 20_000


def draws(logits: torch.Tensor, temperature: float, top_p: float, seed: int = 0) -> np.ndarray:
    """How often each token was drawn in ``DRAWS`` samples of one row of logits."""
    streams = [torch.Generator().manual_seed(seed + row) for row in range(DRAWS)]
    tokens = _sample(logits.expand(DRAWS, -1), _gumbel_noise(streams, logits.shape[-1]), temperature, top_p)
    return np.bincount(tokens.numpy(), minlength=logits.shape[-1])


def test_gumbel_max_draws_from_the_tempered_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0])
    expected = torch.softmax(logits / 0.7, dim=-1).double().numpy() * DRAWS
    assert stats.chisquare(draws(logits, 0.7, 1.0), expected).pvalue > 1e-3


def test_gumbel_noise_is_minus_log_of_each_streams_exponential_draws():
    """The noise equals -log of ``Tensor.exponential_`` drawn from each stream, bit for bit, step after step (the
    cheaper float64-uniform route must keep every answer's random stream as it was)."""
    streams = [torch.Generator().manual_seed(seed) for seed in (0, 1, 7)]
    reference = [torch.Generator().manual_seed(seed) for seed in (0, 1, 7)]
    for _ in range(4):
        expected = torch.stack([torch.empty(5000).exponential_(generator=g) for g in reference]).log().neg()
        assert torch.equal(_gumbel_noise(streams, 5000), expected)


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])  # top_p 0.75: tokens 0 and 1 (mass 0.5 before 1, 0.8 before 2)
    counts = draws(probs.log(), 1.0, 0.75)
    assert counts[2:].sum() == 0
    assert stats.binomtest(int(counts[0]), DRAWS, 0.5 / 0.8).pvalue > 1e-3
    assert (draws(probs.log(), 1.0, 0.3)[1:] == 0).all()  # the most probable token always stays


def test_greedy_ignores_the_noise():
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, 0.0, 4.0]])
    assert _sample(logits, None, 0.0, 1.0).tolist() == [1, 0]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.8, 0.9)])
def test_answers_do_not_depend_on_the_batch(tiny_llama_dir, temperature, top_p):
    lm = models.load(str(tiny_llama_dir), device="cpu")
    prompts = load_prompts("opinionqa:test")[:7]  # prompts of different lengths: other padding per batch
    options = SamplingOptions(samples=2, max_new_tokens=12, temperature=temperature, top_p=top_p, seed=5)

    def answers(options: SamplingOptions, batch_size: int) -> list[list[int]]:
        return [s.ids for s in sample_sequences(lm, prompts, options, False, 10**9, batch_size, False)]

    alone = answers(options, 1)
    assert answers(options, 4) == alone and answers(options, 14) == alone
    assert answers(SamplingOptions(**{**options.sampling_options(), "seed": 6}), 4) != alone


@pytest.mark.parametrize("model_dir", ["tiny_llama_dir", "tiny_gemma3_dir"])
def test_a_prompt_front_every_row_shares_runs_once_with_the_same_answers(model_dir, request):
    """Prompts that begin alike (in-context demonstrations, a system prompt) run those tokens once for the batch,
    unedited, and copy their KV cache to every row and condition: each answer, unedited and under an edit from the
    reply's first position, equals the one sampled for its prompt alone (no sharing)."""
    lm = models.load(str(request.getfixturevalue(model_dir)), device="cpu")
    system = ("system", "Answer like these examples. " * 12)
    prompts = [
        Prompt(messages=(system, ("user", p.text)), index=i) for i, p in enumerate(load_prompts("opinionqa:test")[:3])
    ]
    heads = [prompt_ids(lm.tokenizer, p, False) for p in prompts]
    last = lm.n_layers - 1
    conditions = [UNEDITED, Condition("zeroed", tuple((last, i) for i in range(lm.d_mlp)), "zero")]
    options = SamplingOptions(max_new_tokens=10, seed=3)

    def sample(rows: list[list[int]], first: int) -> list[list[int]]:
        edit_mask = torch.zeros(len(rows), max(len(ids) for ids in rows), dtype=torch.bool)
        edit_mask[:, -1] = True
        plan = EditPlan(conditions, rows=len(rows), edit_mask=edit_mask)
        if len(rows) > 1:
            assert _unedited_common_front(rows, plan) > 40
        return generate_edited(lm, rows, plan, options, first=first)

    together = sample(heads, 0)  # condition-major
    alone = [sample([ids], row) for row, ids in enumerate(heads)]
    assert together == [alone[row][c] for c in range(len(conditions)) for row in range(len(heads))]
    assert together[: len(heads)] != together[len(heads) :]  # the edit changes the answers
