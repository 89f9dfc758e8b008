"""Data parallelism with ``torch.distributed``: shard the batches over ranks, merge the statistics exactly.

Launch any command under ``torchrun --nproc-per-node N --no-python interp ...`` (or ``accelerate launch``):
``Shards.from_env()`` joins the process group torchrun describes (gloo on CPU, nccl on CUDA). Every rank
builds the same batch list and processes batches ``rank, rank + N, ...``; after each round the ranks exchange
the batches' moments and fold them in batch order (``interp.capture``), so the statistics are bitwise those
of one process and ``neurons.csv`` is identical. Rank 0 alone profiles and writes artifacts.
Without torchrun's environment everything runs in one process with no process group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Shards:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where collectives run: this rank's GPU under nccl, else the CPU

    @staticmethod
    def launched() -> bool:
        """Whether this process is one of several that torchrun (or accelerate) started."""
        return int(os.environ.get("WORLD_SIZE", "1")) > 1

    @classmethod
    def from_env(cls, device: torch.device | None = None) -> Shards:
        """The process group torchrun describes (joined once), or a single process."""
        if not cls.launched():
            return cls()
        import torch.distributed as dist

        cuda = device is not None and device.type == "cuda"
        own = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
        if not dist.is_initialized():
            if cuda:  # "cuda" then means this rank's own GPU
                torch.cuda.set_device(own)
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), own)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share: items ``rank, rank + world, ...``."""
        return list(items[self.rank :: self.world])

    def exchange_moments(self, moments: dict[int, tuple], layers: list[int], d_mlp: int) -> list[dict[int, tuple]]:
        """One round of capture: every rank's batch moments ``{layer: (n, mean, m2, active, max)}``, in rank
        order (= batch order). A rank without a batch this round, or a layer without positions, sends n = 0."""
        if self.world == 1:
            return [moments]
        import torch.distributed as dist

        packed = torch.zeros((len(layers), 5, d_mlp), dtype=torch.float64, device=self.device)
        for slot, layer in enumerate(layers):
            if layer in moments:
                n, *values = moments[layer]
                packed[slot, 0] = n
                packed[slot, 1:] = torch.stack(values)
        gathered = [torch.empty_like(packed) for _ in range(self.world)]
        dist.all_gather(gathered, packed)
        counts = torch.stack(gathered)[:, :, 0, 0].long().tolist()  # [world][layer], one read from the device
        return [
            {layer: (n[slot], *part[slot, 1:].unbind(0)) for slot, layer in enumerate(layers) if n[slot]}
            for n, part in zip(counts, gathered)
        ]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks of a few numbers (token counts, probability sums)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather_objects(self, items: list) -> list:
        """Every rank's list, concatenated in rank order (picklable Python objects, e.g. sampled sequences)."""
        if self.world == 1:
            return items
        import torch.distributed as dist

        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, items)
        return [item for part in gathered for item in part]
