"""Sampling responses from a model, batched and reproducible, returned as token sequences."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.models import LoadedModel
from interp.progress import track
from interp.prompts import Prompt
from interp.tokens import Sequence, make_sequence, prompt_ids


@dataclass(frozen=True)
class SamplingConfig:
    samples: int = 1  # responses per prompt
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8


@torch.no_grad()
def sample_sequences(
    lm: LoadedModel,
    prompts: list[Prompt],
    config: SamplingConfig,
    raw: bool,
    max_length: int,
    show_progress: bool = True,
) -> list[Sequence]:
    """``config.samples`` sampled continuations per prompt, as prompt+response sequences in prompt order.

    Batch b is sampled under seed ``config.seed + b``, so results do not depend on earlier batches' lengths.
    """
    jobs = [(prompt, prompt_ids(lm.tokenizer, prompt, raw)) for prompt in prompts for _ in range(config.samples)]
    pad_id = lm.tokenizer.pad_token_id
    eos_ids = _eos_ids(lm)
    sequences: list[Sequence] = []
    starts = list(range(0, len(jobs), config.batch_size))
    for batch_number, begin in enumerate(track(starts, "sampling responses", enabled=show_progress)):
        chunk = jobs[begin : begin + config.batch_size]
        width = max(len(ids) for _, ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, (_, ids) in enumerate(chunk):  # left padding for generation
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        torch.manual_seed(config.seed + batch_number)
        output = lm.model.generate(
            input_ids=input_ids.to(lm.device),
            attention_mask=attention.to(lm.device),
            do_sample=config.temperature > 0,
            temperature=config.temperature if config.temperature > 0 else None,
            top_p=config.top_p,
            top_k=None,
            max_new_tokens=config.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_ids,
        )
        for row, (prompt, ids) in enumerate(chunk):
            new = output[row, width:].tolist()
            sequences.append(make_sequence(ids + _until_eos(new, eos_ids), len(ids), prompt.index, max_length))
    return sequences


def _eos_ids(lm: LoadedModel) -> list[int]:
    eos = lm.model.generation_config.eos_token_id or lm.tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def _until_eos(ids: list[int], eos_ids: list[int]) -> list[int]:
    """Generated ids up to and including the first end-of-sequence token."""
    for position, token in enumerate(ids):
        if token in eos_ids:
            return ids[: position + 1]
    return ids
