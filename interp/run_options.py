"""Options the commands share: running a model (``--device``, ``--dtype``, ``--raw`` ...) and sampling from it."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from interp.errors import UserInputError, check_at_least


@dataclass(kw_only=True)
class RunOptions:
    device: str = "auto"  # auto | cpu | cuda
    dtype: str | None = None  # float32 | bfloat16; None: float32 on CPU, bfloat16 on CUDA
    raw: bool = False  # feed prompts as plain text instead of applying the chat template
    max_length: int = 256  # truncate sequences to this many tokens
    trust_remote_code: bool = False
    show_progress: bool = True
    device_map: str | None = None  # accelerate placement over several devices: auto | balanced | sequential
    load_in_4bit: bool = False  # NF4 weights (bitsandbytes) for analysis on a small GPU

    def load_options(self) -> dict:
        """The keyword arguments of ``interp.models.load`` these options set."""
        return {
            "device": self.device, "dtype": self.dtype, "trust_remote_code": self.trust_remote_code,
            "device_map": self.device_map, "load_in_4bit": self.load_in_4bit,
        }  # fmt: skip


@dataclass(kw_only=True)
class SamplingOptions:
    """How a command samples responses; every sampling command's config embeds these. Commands change only
    the defaults of ``samples`` and ``max_new_tokens`` (what their runs need), nothing else.

    One seeding rule: answer ``j`` of a run (its position in the run's list of answers) draws its random numbers
    from its own stream, seeded by ``seed`` and ``j`` (``answer_seed``), so an answer does not depend on the
    batch size or the batch it lands in, and ranks that split the batches sample what one process would."""

    samples: int = 1  # responses per prompt
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 is greedy decoding
    top_p: float = 1.0  # nucleus sampling; 1 keeps the whole distribution
    seed: int = 0

    def sampling_options(self) -> dict:
        """These fields as keyword arguments, to hand them to another sampling config."""
        return {option.name: getattr(self, option.name) for option in fields(SamplingOptions)}

    def answer_seed(self, answer: int) -> int:
        """The seed of answer number ``answer``'s random stream (a 63-bit mix of ``seed`` and ``answer``)."""
        state = np.random.SeedSequence([self.seed % 2**64, answer]).generate_state(2, dtype=np.uint32)
        return int(state[0]) << 31 | int(state[1]) >> 1

    def check_sampling(self, samples_flag: str = "--samples", least_samples: int = 0) -> None:
        """Refuse settings no sampler can run (``UserInputError``, naming the command's flag for ``samples``)."""
        check_at_least(samples_flag, self.samples, least_samples)
        check_at_least("--max-new-tokens", self.max_new_tokens, 1)
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserInputError("--temperature must be >= 0 and --top-p in (0, 1].")
