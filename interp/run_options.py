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
    device_map: str | None = None  # accelerate placement over several devices: auto | balanced | sequential
    load_in_4bit: bool = False  # NF4 weights (bitsandbytes) for analysis on a small GPU

    def load_options(self) -> dict:
        """The keyword arguments of ``interp.models.load`` these options set."""
        return {
            "device": self.device, "dtype": self.dtype, "trust_remote_code": self.trust_remote_code,
            "device_map": self.device_map, "load_in_4bit": self.load_in_4bit,
        }  # fmt: skip
