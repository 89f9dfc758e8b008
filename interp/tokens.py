"""Token streams: prompts (and teacher-forced responses) as token ids, position masks, padded batches.

Position modes choose which tokens count in the statistics:
- ``all``: every token of every sequence except its first (padding excluded). The first position is
  the attention sink: on SmolLM2 a few neurons reach activations of ~3,000 there and nowhere else,
  which would swamp every mean while that position's prediction (the chat template's next token) never
  matters;
- ``response``: the positions that predict a response token, i.e. from the last prompt token
  (the reply's first position) to the second-to-last token;
- ``pre-emoji``: the positions whose next token holds the first byte of an emoji in the decoded text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import UserInputError
from interp.prompts import Prompt
from probes.emoji_tokens import emoji_start_tokens

POSITION_MODES = ("all", "response", "pre-emoji")


@dataclass(frozen=True)
class Sequence:
    ids: tuple[int, ...]
    response_start: int | None  # index of the first response token; None without a response
    prompt_index: int


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, T] int64, right-padded
    attention_mask: torch.Tensor  # [B, T] int64
    positions: torch.Tensor  # [B, T] bool, the positions that count
    first: int = 0  # the number of its first sequence in the list it was batched from

    @property
    def n_positions(self) -> int:
        return int(self.positions.sum())

    @property
    def sequence_numbers(self) -> range:
        """The numbers of its rows' sequences in the list it was batched from."""
        return range(self.first, self.first + self.input_ids.shape[0])


def prompt_ids(tokenizer, prompt: Prompt, raw: bool = False) -> list[int]:
    """Token ids of a prompt ready for the reply: chat template with generation prompt, or raw text."""
    if raw:
        return tokenizer("\n".join(content for _, content in prompt.messages)).input_ids
    if not getattr(tokenizer, "chat_template", None):
        raise UserInputError("this model's tokenizer has no chat template; pass --raw to feed prompts as plain text.")
    ids = tokenizer.apply_chat_template(prompt.as_chat(), add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def response_ids(tokenizer, response: str) -> list[int]:
    """Response tokens as the model would have written them, closed by the end-of-turn token."""
    ids = tokenizer(response, add_special_tokens=False).input_ids
    return ids + [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else ids


def build_sequences(tokenizer, prompts: list[Prompt], raw: bool, max_length: int) -> list[Sequence]:
    """One sequence per prompt (with its response if it has one), truncated to ``max_length`` tokens."""
    sequences = []
    for prompt in prompts:
        ids = prompt_ids(tokenizer, prompt, raw)
        start = None
        if prompt.response is not None:
            start = len(ids)
            ids = ids + response_ids(tokenizer, prompt.response)
        sequences.append(make_sequence(ids, start, prompt.index, max_length))
    return sequences


def make_sequence(ids: list[int], response_start: int | None, prompt_index: int, max_length: int) -> Sequence:
    if response_start is not None and response_start >= max_length:
        raise UserInputError(f"a prompt is {response_start} tokens long, more than --max-length {max_length}.")
    return Sequence(tuple(ids[:max_length]), response_start, prompt_index)


def position_mask(sequence: Sequence, mode: str, byte_table: list[bytes | None]) -> list[bool]:
    """[len(ids)] which positions of ``sequence`` count under ``mode``."""
    n = len(sequence.ids)
    if mode == "all":
        return [i > 0 for i in range(n)]
    if sequence.response_start is None:
        raise UserInputError(
            f'--positions {mode} needs responses: give --responses FILE, --generate N, or "response" in the prompts.'
        )
    first = sequence.response_start - 1
    if mode == "response":
        return [first <= i < n - 1 for i in range(n)]
    if mode == "pre-emoji":
        response = list(sequence.ids[sequence.response_start :])
        mask = [False] * n
        for start in emoji_start_tokens(response, byte_table):
            mask[sequence.response_start + start - 1] = True
        return mask
    raise UserInputError(f"--positions must be one of {', '.join(POSITION_MODES)}, not {mode!r}.")


def make_batches(sequences: list[Sequence], masks: list[list[bool]], batch_size: int, pad_id: int) -> list[TokenBatch]:
    """Right-padded batches of ``batch_size`` sequences, in order; sequences with no counted position are kept."""
    batches = []
    for begin in range(0, len(sequences), batch_size):
        chunk = sequences[begin : begin + batch_size]
        chunk_masks = masks[begin : begin + batch_size]
        width = max(len(s.ids) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        positions = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (seq, mask) in enumerate(zip(chunk, chunk_masks)):
            ids[row, : len(seq.ids)] = torch.tensor(seq.ids)
            attention[row, : len(seq.ids)] = 1
            positions[row, : len(seq.ids)] = torch.tensor(mask, dtype=torch.bool)
        batches.append(TokenBatch(ids, attention, positions, first=begin))
    return batches
