"""Directions in the residual stream: per-layer means over counted positions, and the file of direction vectors.

A ``DirectionSet`` is one vector [d_model] per layer, meant to be read in the residual stream after that
layer's decoder block (persona vectors from ``interp persona-vector``; any vectors a user brings in the same
file format). The file is safetensors: ``vectors`` [L, d_model] float32, ``layers`` [L] int64, and string
metadata (model fingerprint, d_model, how the vectors were made). ``residual_sums`` sums a model's residual
stream per sequence and layer over the counted positions of token batches (means over any subset of sequences,
the prompt being the unit that intervals resample).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.artifacts import atomic_path, read_tensors
from interp.errors import UserInputError
from interp.hooks import StopForward, residual_hooks
from interp.models import LoadedModel
from interp.tokens import TokenBatch

FILE_NAME = "persona_vector.safetensors"


@dataclass
class DirectionSet:
    """Per-layer direction vectors: ``vectors[i]`` [d_model] belongs to the residual stream after ``layers[i]``."""

    layers: list[int]
    vectors: torch.Tensor  # [len(layers), d_model] float32, as computed (not normalised)
    metadata: dict[str, str] = field(default_factory=dict)  # model_fingerprint, method, trait, ...

    def vector(self, layer: int) -> torch.Tensor:
        if layer not in self.layers:
            raise UserInputError(f"the direction file has no vector for layer {layer} (it has {_ranges(self.layers)}).")
        return self.vectors[self.layers.index(layer)]

    def unit(self, layer: int) -> torch.Tensor:
        """[d_model] the layer's vector scaled to norm 1; UserInputError for a zero vector."""
        vector = self.vector(layer).float()
        norm = float(vector.norm())
        if not norm > 0:
            raise UserInputError(f"the direction of layer {layer} is zero; it cannot be steered along.")
        return vector / norm

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"vectors": self.vectors.float().contiguous(), "layers": torch.tensor(self.layers, dtype=torch.int64)}
        with atomic_path(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata={"d_model": str(self.vectors.shape[1]), **self.metadata})

    @classmethod
    def load(cls, path: str | Path) -> DirectionSet:
        """Read a direction file (or the one in a persona-vector run directory); UserInputError if unusable."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise UserInputError(f"direction file {str(path)!r} does not exist.")
        tensors, metadata = read_tensors(path)
        if not {"vectors", "layers"} <= set(tensors):
            raise UserInputError(f"{str(path)!r} is not a direction file (it has no vectors and layers).")
        vectors, layers = tensors["vectors"], tensors["layers"]
        if vectors.dim() != 2 or layers.dim() != 1 or len(layers) != len(vectors):
            raise UserInputError(f"{str(path)!r} needs vectors [layers, d_model] and one layer index per vector.")
        return cls(layers.tolist(), vectors.float(), metadata)

    def check_model(self, lm: LoadedModel) -> None:
        """Refuse vectors of another width or for layers the model does not have."""
        width = lm.d_model
        if self.vectors.shape[1] != width:
            raise UserInputError(f"the direction file's vectors have {self.vectors.shape[1]} dimensions; the model's "
                                 f"residual stream has {width}.")  # fmt: skip
        beyond = [layer for layer in self.layers if not 0 <= layer < lm.n_layers]
        if beyond:
            raise UserInputError(f"the direction file has layers {beyond}; the model has {lm.n_layers}.")


@dataclass
class ResidualSums:
    """Per sequence and layer, sums of the residual stream after the block over the sequence's counted positions.

    sums: [N, L, d_model] float64; squares: [N, L] float64, the summed squared norms; counts: [N] float64."""

    layers: list[int]
    sums: torch.Tensor
    squares: torch.Tensor
    counts: torch.Tensor

    def mean(self, rows: list[int] | slice = slice(None)) -> torch.Tensor:
        """[L, d_model] the mean over the counted positions of the sequences ``rows`` (default: all)."""
        return self.sums[rows].sum(0) / self.counts[rows].sum()

    def rms_norm(self) -> torch.Tensor:
        """[L] root-mean-square norm of the residual stream over every counted position."""
        return (self.squares.sum(0) / self.counts.sum()).sqrt()


def residual_sums(lm: LoadedModel, batches: list[TokenBatch], layers: list[int], progress=None) -> ResidualSums:
    """``ResidualSums`` of the residual stream after each of ``layers`` at the batches' counted positions, one row
    per sequence in batch order; the forward stops after the deepest chosen block."""
    slots = {layer: slot for slot, layer in enumerate(layers)}
    sums, squares, counts = [], [], []
    for batch in progress(batches) if progress else batches:
        mask = batch.positions.to(lm.device).unsqueeze(-1)  # [B, T, 1]
        batch_sums = torch.zeros(len(mask), len(layers), lm.d_model, dtype=torch.float64)
        batch_squares = torch.zeros(len(mask), len(layers), dtype=torch.float64)

        def keep(layer: int, hidden: torch.Tensor, mask=mask, batch_sums=batch_sums, batch_squares=batch_squares):
            counted = hidden.double() * mask
            batch_sums[:, slots[layer]] = counted.sum(1).cpu()
            batch_squares[:, slots[layer]] = counted.pow(2).sum((1, 2)).cpu()

        with torch.no_grad(), residual_hooks(lm, layers, keep, stop_after_last=True), suppress(StopForward):
            lm.model.base_model(
                input_ids=batch.input_ids.to(lm.device), attention_mask=batch.attention_mask.to(lm.device)
            )
        sums.append(batch_sums)
        squares.append(batch_squares)
        counts.append(batch.positions.sum(1).double())
    return ResidualSums(list(layers), torch.cat(sums), torch.cat(squares), torch.cat(counts))


def _ranges(layers: list[int]) -> str:
    return ", ".join(str(layer) for layer in layers) if len(layers) < 8 else f"{layers[0]}-{layers[-1]}"
