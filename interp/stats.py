"""Streaming per-neuron statistics in float64, mergeable exactly (Chan et al.'s parallel formula).

Memory is O(layers x neurons) whatever the number of tokens: the statistics object holds, per layer,
a token count and per neuron the mean, the sum of squared deviations (M2), the number of tokens whose
activation magnitude exceeds ``threshold`` and the maximum activation.

Precision: the accumulators are float64; within one batch, sums of deviations from the batch mean are
taken in float32 (a float64 copy of every batch doubled the hook's cost), so a batch's mean and M2 carry a
relative error of about 1e-6. Every batch is compared with ``threshold`` in float32 (a bfloat16 batch after an
exact conversion). Merging is exact in float64: shards merged give what one process fed the same batches gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from interp.artifacts import atomic_path


@dataclass
class NeuronStats:
    """Running statistics for ``layers`` (model layer indices) x ``d_mlp`` neurons.

    Tensors are indexed by slot (position in ``layers``), not by model layer index.
    count: [L] tokens seen per layer; mean, m2, active: [L, D] float64; max: [L, D] float64.
    """

    layers: list[int]
    d_mlp: int
    threshold: float
    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    active: torch.Tensor
    max: torch.Tensor

    @classmethod
    def empty(cls, layers: list[int], d_mlp: int, threshold: float) -> NeuronStats:
        shape = (len(layers), d_mlp)
        f64 = dict(dtype=torch.float64)
        return cls(
            layers=list(layers),
            d_mlp=d_mlp,
            threshold=float(threshold),
            count=torch.zeros(len(layers), **f64),
            mean=torch.zeros(shape, **f64),
            m2=torch.zeros(shape, **f64),
            active=torch.zeros(shape, **f64),
            max=torch.full(shape, float("-inf"), **f64),
        )

    def slot(self, layer: int) -> int:
        return self.layers.index(layer)

    @torch.no_grad()
    def update(self, slot: int, x: torch.Tensor) -> None:
        """Add a batch of activations ``x`` [N tokens, D neurons] (any float dtype, any device) to ``slot``."""
        if x.shape[0]:
            self.add_moments(slot, *self.moments(x))

    @torch.no_grad()
    def moments(self, x: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch's (n, mean, M2, active count, max), [D] float64 each, for ``add_moments``.

        Every pass reads float32 (a batch in another dtype is converted once, first); all are memory-bound."""
        n = x.shape[0]
        work, converted = self._scratch(x)
        if x.dtype != torch.float32:
            x = converted.copy_(x)
        # Float32 sums (a float64 reduction would first copy the batch to float64): deviations from the
        # rounded batch mean r are small, so mean = r + sum(d)/n and M2 = sum(d^2) - sum(d)^2/n stay accurate.
        rounded = x.sum(0) / n
        dev = torch.sub(x, rounded, out=work)
        dev_sum = dev.sum(0).double()
        batch_mean = rounded.double() + dev_sum / n
        batch_m2 = (dev.mul_(dev).sum(0).double() - dev_sum * dev_sum / n).clamp(min=0)
        batch_max = x.amax(0).double()
        # |x| > threshold as 1.0 / 0.0 in float32: a bool mask and its sum cost several times more on the CPU
        above = torch.abs(x, out=work).gt_(self.threshold)
        return n, batch_mean, batch_m2, above.sum(0).double(), batch_max

    def _scratch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two reusable float32 work buffers shaped like ``x`` (fresh multi-MB allocations per batch and layer
        cost more, in page faults, than the arithmetic): deviations and flags, and a converted copy of a batch
        in another dtype (never touched for float32 batches)."""
        cache = self.__dict__.setdefault("_buffers", {})
        key = (x.device, x.shape[1])
        if key not in cache or cache[key].shape[1] < x.shape[0]:
            cache[key] = torch.empty((2, *x.shape), dtype=torch.float32, device=x.device)
        return cache[key][0, : x.shape[0]], cache[key][1, : x.shape[0]]

    def move_to(self, device: torch.device | str) -> None:
        """Move the accumulators to ``device`` (in place)."""
        device = torch.device(device)
        if self.mean.device != device:
            for name in ("count", "mean", "m2", "active", "max"):
                setattr(self, name, getattr(self, name).to(device))

    def add_moments(self, slot, n_b, mean_b, m2_b, active_b, max_b) -> None:
        """Chan's parallel update of ``slot`` with a batch of ``n_b`` tokens."""
        if mean_b.device != self.mean.device:
            # Empty accumulators move to the first activations' device (no host sync per update on a GPU);
            # later batches from other devices (layers spread by a device map) come to them instead.
            if not bool(self.count.any()):
                self.move_to(mean_b.device)
            else:
                mean_b, m2_b, active_b, max_b = (t.to(self.mean.device) for t in (mean_b, m2_b, active_b, max_b))
        n_a = self.count[slot]
        total = n_a + n_b
        delta = mean_b - self.mean[slot]
        self.mean[slot] += delta * (n_b / total)
        self.m2[slot] += m2_b + delta * delta * (n_a * n_b / total)
        self.active[slot] += active_b
        self.max[slot] = torch.maximum(self.max[slot], max_b)
        self.count[slot] = total

    def merge(self, other: NeuronStats) -> NeuronStats:
        """A new object holding the statistics of both (exact up to float64 rounding)."""
        if other.layers != self.layers or other.d_mlp != self.d_mlp or other.threshold != self.threshold:
            raise ValueError("cannot merge statistics of different layers, widths or thresholds")
        merged = self.copy()
        other = other.copy()
        other.move_to(merged.mean.device)
        for slot in range(len(self.layers)):
            if other.count[slot] > 0:
                merged.add_moments(
                    slot,
                    other.count[slot],
                    other.mean[slot],
                    other.m2[slot],
                    other.active[slot],
                    other.max[slot],
                )
        return merged

    def copy(self) -> NeuronStats:
        return NeuronStats(
            self.layers[:], self.d_mlp, self.threshold,
            self.count.clone(), self.mean.clone(), self.m2.clone(), self.active.clone(), self.max.clone(),
        )  # fmt: skip

    @property
    def var(self) -> torch.Tensor:
        """[L, D] unbiased variance (0 where fewer than 2 tokens)."""
        denom = (self.count - 1).clamp(min=1).unsqueeze(1)
        return self.m2 / denom

    @property
    def freq(self) -> torch.Tensor:
        """[L, D] fraction of tokens with |activation| > threshold."""
        return self.active / self.count.clamp(min=1).unsqueeze(1)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The statistics as named CPU tensors (for safetensors)."""
        return {
            f"{prefix}.layers": torch.tensor(self.layers, dtype=torch.int64),
            f"{prefix}.threshold": torch.tensor([self.threshold], dtype=torch.float64),
            f"{prefix}.count": self.count.cpu(),
            f"{prefix}.mean": self.mean.cpu(),
            f"{prefix}.m2": self.m2.cpu(),
            f"{prefix}.active": self.active.cpu(),
            f"{prefix}.max": self.max.cpu(),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> NeuronStats:
        mean = tensors[f"{prefix}.mean"]
        return cls(
            layers=tensors[f"{prefix}.layers"].tolist(),
            d_mlp=mean.shape[1],
            threshold=float(tensors[f"{prefix}.threshold"][0]),
            count=tensors[f"{prefix}.count"],
            mean=mean,
            m2=tensors[f"{prefix}.m2"],
            active=tensors[f"{prefix}.active"],
            max=tensors[f"{prefix}.max"],
        )


def save_stats(path: Path, stats: dict[str, NeuronStats], metadata: dict[str, str] | None = None) -> None:
    """Write named statistics (e.g. ``{"base": ..., "finetuned": ...}``) to one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, item in stats.items():
        tensors.update(item.tensors(name))
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata or {})


def load_stats(path: Path) -> dict[str, NeuronStats]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    names = sorted({key.split(".")[0] for key in tensors})
    return {name: NeuronStats.from_tensors(tensors, name) for name in names}
