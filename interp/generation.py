"""Sampling responses from a model, batched and reproducible, returned as token sequences."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from interp.distributed import Shards
from interp.errors import UserInputError
from interp.hooks import neuron_hooks
from interp.interventions import Condition, EditPlan, applied, repeat_rows
from interp.models import LoadedModel, context_length
from interp.progress import track
from interp.prompts import Prompt
from interp.run_options import SamplingOptions
from interp.tokens import Sequence, make_sequence, prompt_ids

UNEDITED = Condition("unedited", kind="baseline")  # plain sampling: one condition that edits nothing
# Answers sampled together (rows of one decoding loop, all conditions counted). On a CPU a decoding step is bound
# by reading the weights, so 32 rows take about what 8 do (BENCHMARKS.md, sampling); answers do not depend on it.
SAMPLING_ROWS = 32

# observe(first, logits [N, vocab], emitting [N]): a decoding step seen from outside (``generate_edited``)
StepObserver = Callable[[int, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def sample_sequences(
    lm: LoadedModel,
    prompts: list[Prompt],
    options: SamplingOptions,
    raw: bool,
    max_length: int,
    batch_size: int = SAMPLING_ROWS,
    show_progress: bool = True,
    shards: Shards | None = None,
    condition: Condition = UNEDITED,
    observe: StepObserver | None = None,
) -> list[Sequence]:
    """``options.samples`` sampled continuations per prompt, as prompt+response sequences in prompt order.
    ``condition`` edits the model while it answers (e.g. steering), from the reply's first position on;
    ``observe`` sees every decoding step (``generate_edited``; row ``r`` of a batch is answer ``first + r``).

    Answer ``j`` (prompt-major: the k-th sample of the i-th prompt is ``i * samples + k``) draws its random
    numbers from its own stream (``options.answer_seed``), so it does not depend on the batch size or on which
    rank samples it (up to float rounding of batched matmuls); with ``shards`` each rank samples its share of
    the batches and every rank gets all sequences. Prompt plus response never exceed ``max_length`` or the
    model's context: a longer prompt is refused, and a batch gets fewer new tokens where its longest prompt
    leaves less room.
    """
    shards = shards or Shards()
    jobs = [(prompt, prompt_ids(lm.tokenizer, prompt, raw)) for prompt in prompts for _ in range(options.samples)]
    _room(lm, max(len(ids) for _, ids in jobs), max_length)  # refuse a prompt too long before sampling any
    blocks: list[tuple[int, list[Sequence]]] = []
    starts = shards.take(range(0, len(jobs), batch_size))
    for begin in track(starts, "sampling responses", enabled=show_progress):
        chunk = jobs[begin : begin + batch_size]
        heads = [ids for _, ids in chunk]
        edit_mask = torch.zeros(len(chunk), max(len(ids) for ids in heads), dtype=torch.bool)
        edit_mask[:, -1] = True  # the last prompt token (left-padded layout): the reply's first position
        plan = EditPlan([condition], rows=len(chunk), edit_mask=edit_mask)
        replies = generate_edited(lm, heads, plan, options, first=begin, max_length=max_length, observe=observe)
        block = [make_sequence(ids + reply, len(ids), prompt.index, max_length)
                 for (prompt, ids), reply in zip(chunk, replies)]  # fmt: skip
        blocks.append((begin, block))
    return [seq for _, block in sorted(shards.gather_objects(blocks), key=lambda b: b[0]) for seq in block]


def _room(lm: LoadedModel, prompt_length: int, max_length: int | None = None) -> int:
    """How many tokens a reply to a ``prompt_length``-token prompt may have within ``max_length`` and the
    model's context; UserInputError when there is no room at all."""
    limit = min(length for length in (max_length, context_length(lm.model.config), 10**9) if length is not None)
    if prompt_length >= limit:
        raise UserInputError(f"a prompt is {prompt_length} tokens long, which leaves no room for a reply "
                             f"within {limit} tokens (the model's context or --max-length).")  # fmt: skip
    return limit - prompt_length


def _eos_ids(lm: LoadedModel) -> list[int]:
    """Tokens that end a reply: the model's generation stops and the tokenizer's end of turn (a base model's
    conversation format makes its end-of-turn token the tokenizer's eos; ``interp.conversation``)."""
    configured = lm.model.generation_config.eos_token_id
    configured = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    return list(dict.fromkeys(t for t in (lm.tokenizer.eos_token_id, *configured) if t is not None))


@torch.no_grad()
def generate_edited(
    target: LoadedModel,
    prompt_ids: list[list[int]],
    plan: EditPlan,
    options: SamplingOptions,
    first: int = 0,
    source: LoadedModel | None = None,
    max_length: int | None = None,
    observe: StepObserver | None = None,
) -> list[list[int]]:
    """Sample continuations of ``prompt_ids`` under every condition of ``plan`` in one batched loop.

    Rows are condition-major: the result has ``len(plan.conditions) * len(prompt_ids)`` continuations (up to
    and including end-of-sequence). ``plan.edit_mask`` [B, P] marks the prompt positions to edit in the
    left-padded layout (see ``left_pad``); every generated position is edited. In patch mode the ``source``
    model runs in lockstep on each row's tokens and its neuron values are written into the target at each
    step. Prompt row ``r`` is answer ``first + r`` of the run: it draws its noise from its own stream
    (``options.answer_seed``), shared by all conditions (common random numbers), so conditions differ only
    through the edit and an answer does not depend on its batch. Temperature 0 is greedy decoding; replies
    stop within ``max_length`` tokens of prompt plus reply and the model's context. ``observe(first, logits,
    emitting)`` sees each step's next-token logits [N, vocab] float32 on the CPU (the model's, before temperature;
    it may overwrite them) and which rows [N] add the token sampled from them to their reply.
    """
    conditions, rows = len(plan.conditions), len(prompt_ids)
    eos_ids = _eos_ids(target)
    front = _unedited_common_front(prompt_ids, plan)
    ids, attention = left_pad(prompt_ids, target.tokenizer.pad_token_id, front)
    step_ids, attention = repeat_rows(ids, conditions), repeat_rows(attention, conditions)
    streams = [torch.Generator().manual_seed(options.answer_seed(first + row)) for row in range(rows)]
    target_cache = source_cache = None
    if front:  # the tokens every row begins with run once, their KV cache copied to every row
        target_cache = front_cache(target, ids[:1, :front], len(step_ids))
        source_cache = front_cache(source, ids[:1, :front], len(step_ids)) if source is not None else None
        step_ids, plan.offset = step_ids[:, front:], front
    finished = torch.zeros(conditions * rows, dtype=torch.bool)
    outputs: list[list[int]] = [[] for _ in range(conditions * rows)]
    plan.decoding = False
    for _ in range(min(options.max_new_tokens, _room(target, ids.shape[1], max_length))):
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
        if source is not None:
            source_cache = _capture_source(source, plan, step_ids, attention, positions, source_cache)
        with applied(target, plan):
            out = _step(target, step_ids, attention, positions, target_cache)
        target_cache = out.cache
        logits = out.logits[:, -1].float().cpu()
        noise = _gumbel_noise(streams, logits.shape[-1]).repeat(conditions, 1) if options.temperature > 0 else None
        next_ids = _sample(logits, noise, options.temperature, options.top_p)
        if observe is not None:
            observe(first, logits, ~finished)
        for row, token in enumerate(next_ids.tolist()):
            if not finished[row]:
                outputs[row].append(token)
                finished[row] = token in eos_ids
        if bool(finished.all()):
            break
        plan.decoding = True
        step_ids = next_ids.unsqueeze(1)
        attention = torch.cat([attention, torch.ones(conditions * rows, 1, dtype=attention.dtype)], dim=1)
    plan.decoding, plan.offset = False, 0
    return outputs


def left_pad(sequences: list[list[int]], pad_id: int, front: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, P] ids, [B, P] attention mask), left-padded for generation; the first ``front`` tokens (the same in
    every row) stay in front of the padding: [front | padding | rest of the prompt]."""
    width = max(len(ids) for ids in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, :front] = torch.tensor(sequence[:front], dtype=torch.long)
        ids[row, width - len(sequence) + front :] = torch.tensor(sequence[front:])
        attention[row, :front] = attention[row, width - len(sequence) + front :] = 1
    return ids, attention


def common_front(rows: list[list[int]]) -> int:
    """How many leading tokens every row shares (0 for a single row, or when fewer than 2: nothing to share)."""
    common = len(os.path.commonprefix(rows)) if len(rows) > 1 else 0  # commonprefix compares any sequences
    return common if common > 1 else 0


def _unedited_common_front(prompt_ids: list[list[int]], plan: EditPlan) -> int:
    """The leading tokens every prompt shares and no condition edits (0 if the edits reach into the prompt beyond
    its last token); each row keeps at least its last prompt token to run."""
    if bool(plan.edit_mask[:, :-1].any()):
        return 0
    return common_front([ids[:-1] for ids in prompt_ids])


def front_cache(lm: LoadedModel, front: torch.Tensor, rows: int):
    """The KV cache of ``front`` [1, F], tokens every row of a batch begins with, run once (unedited) and copied
    to ``rows`` rows."""
    cache = lm.model.base_model(input_ids=front.to(lm.device), use_cache=True).cache
    for layer_cache in cache.layers:
        layer_cache.reorder_cache(torch.zeros(rows, dtype=torch.long, device=lm.device))
    return cache


def _capture_source(source: LoadedModel, plan: EditPlan, ids, attention, positions, cache):
    """Run the source model one step on every row and store its neuron values in ``plan.source_values``."""

    def keep(layer: int, acts: torch.Tensor) -> None:
        plan.source_values[layer] = acts.detach()

    with neuron_hooks(source, plan.layers, keep):
        return _step(source, ids, attention, positions, cache).cache


def _step(lm: LoadedModel, ids, attention, positions, cache):
    """One cached forward step of ``lm`` on new tokens ``ids`` [N, t]; ``attention`` covers all tokens so far."""
    return lm.model(
        input_ids=ids.to(lm.device),
        attention_mask=attention.to(lm.device),
        position_ids=positions.to(lm.device),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,  # only the next token's logits
    )


def _gumbel_noise(streams: list[torch.Generator], vocab: int) -> torch.Tensor:
    """[len(streams), vocab] standard Gumbel noise, one row from each stream: -log of a float32 standard
    exponential. The exponential is -log1p(-u) of a float64 uniform, rounded to float32: bit for bit what
    ``Tensor.exponential_`` draws from the same stream (tests/unit/test_generation.py), at half its cost."""
    uniform = torch.stack([torch.rand(vocab, dtype=torch.float64, generator=stream) for stream in streams])
    return uniform.neg_().log1p_().neg_().float().log_().neg_()


def _sample(logits: torch.Tensor, noise: torch.Tensor | None, temperature: float, top_p: float) -> torch.Tensor:
    """[N, vocab] -> [N] tokens: Gumbel-max sampling from softmax(logits / temperature), restricted to the
    nucleus of ``top_p``; greedy when temperature is 0. Unlike inverse-CDF sampling over the vocabulary,
    float rounding of the logits (another batch shape) changes a token only when the two best perturbed
    scores tie within that rounding, so answers keep to their random streams whatever the batch."""
    if temperature <= 0:
        return logits.argmax(-1)
    scores = logits / temperature
    if top_p < 1.0:
        sorted_probs, order = torch.softmax(scores, dim=-1).sort(dim=-1, descending=True)
        beyond = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the most probable token always stays
        scores = scores.masked_fill(torch.zeros_like(beyond).scatter(-1, order, beyond), float("-inf"))
    return (scores + noise).argmax(-1)
