"""Options every model-running command shares (``--device``, ``--dtype``, ``--raw`` ...)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class RunOptions:
    device: str = "auto"  # auto | cpu | cuda
    dtype: str | None = None  # float32 | bfloat16; None: float32 on CPU, bfloat16 on CUDA
    raw: bool = False  # feed prompts as plain text instead of applying the chat template
    max_length: int = 256  # truncate sequences to this many tokens
    trust_remote_code: bool = False
    show_progress: bool = True
