"""What flows from data into models: a batch is a mapping modality name -> tensor.

Fixed-size modalities (images) are plain tensors with the batch first. Variable-length
modalities are :class:`Sequences`: zero-padded frames plus the true length of each sequence, so
that models can mask them and losses can ignore padding. A frame can have any shape: a log-Mel
vector (B, T, D) for speech, an image (B, T, C, H, W) for video.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from torch import Tensor


def lengths_mask(lengths: Tensor, t_max: int, device: torch.device | str | None = None) -> Tensor:
    """(B,) lengths -> (B, t_max) bool, True on frames ``t < lengths[b]``."""
    steps = torch.arange(t_max, device=device)
    return steps[None, :] < lengths.to(steps.device)[:, None]


@dataclass(frozen=True)
class Sequences:
    """A batch of variable-length sequences of frames of any (fixed) shape.

    Attributes:
        data: (B, T_max, *frame_shape) float tensor, frames past ``lengths[b]`` are zero; e.g.
            (B, T, D) for feature vectors, (B, T, C, H, W) for video.
        lengths: (B,) int64 tensor on the CPU, number of valid frames per sequence (1 <= n <= T_max).
    """

    data: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if self.data.dim() < 3:
            raise ValueError(
                "Sequences.data must be (B, T, *frame_shape) with at least one frame dimension, "
                f"got shape {tuple(self.data.shape)}"
            )
        if self.lengths.shape != (self.data.shape[0],):
            raise ValueError(
                f"Sequences.lengths must be ({self.data.shape[0]},), got {tuple(self.lengths.shape)}"
            )
        if self.lengths.dtype.is_floating_point or self.lengths.dtype == torch.bool:
            raise ValueError(f"Sequences.lengths must be an integer tensor, got {self.lengths.dtype}")
        if self.lengths.numel() and int(self.lengths.max()) > self.data.shape[1]:
            raise ValueError(
                f"Sequences.lengths: longest sequence has {int(self.lengths.max())} frames but data "
                f"holds only T_max = {self.data.shape[1]}"
            )

    @classmethod
    def from_list(cls, seqs: list[np.ndarray] | list[Tensor]) -> Sequences:
        """Pad a list of (T_i, *frame_shape) arrays (one frame shape for all) into one batch."""
        if len(seqs) == 0:
            raise ValueError("Sequences.from_list needs at least one sequence")
        tensors = [torch.as_tensor(s, dtype=torch.float32) for s in seqs]
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if any(t.dim() < 2 for t in tensors) or len(shapes) != 1:
            raise ValueError(
                "Sequences.from_list: every sequence must be (T_i, *frame_shape) with the same frame "
                f"shape, got shapes {sorted({tuple(t.shape) for t in tensors})[:5]}"
            )
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
        data = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        return cls(data, lengths)

    @property
    def batch_size(self) -> int:
        return int(self.data.shape[0])

    @property
    def max_length(self) -> int:
        """T_max, the padded number of frames."""
        return int(self.data.shape[1])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame: (D,) for feature vectors, (C, H, W) for video."""
        return tuple(self.data.shape[2:])

    def mask(self) -> Tensor:
        """(B, T_max) bool, True on valid frames."""
        return lengths_mask(self.lengths, self.data.shape[1], self.data.device)

    def to(self, device: torch.device | str) -> Sequences:
        return Sequences(self.data.to(device), self.lengths)

    def index(self, idx: Tensor) -> Sequences:
        """Select a subset (or permutation) of the batch, trimming extra padding."""
        lengths = self.lengths[idx.cpu()]
        t_max = int(lengths.max()) if len(lengths) else 0
        return Sequences(self.data[idx.to(self.data.device), :t_max], lengths)

    def unpad(self) -> list[Tensor]:
        """The valid frames of each sequence, as a list of (T_i, *frame_shape) tensors."""
        return [self.data[b, : int(n)] for b, n in enumerate(self.lengths)]


Modality = Union[Tensor, Sequences]  # noqa: UP007 (runtime alias, py3.10)
Batch = Mapping[str, Modality]


def batch_size(batch: Batch) -> int:
    """Number of samples in a batch (all present modalities must agree)."""
    sizes = {k: (v.batch_size if isinstance(v, Sequences) else int(v.shape[0])) for k, v in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities disagree on batch size: {sizes}")
    return next(iter(sizes.values()))


def move_batch(batch: Batch, device: torch.device | str) -> dict[str, Modality]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


def index_batch(batch: Batch, idx: Tensor) -> dict[str, Modality]:
    """Select the same samples from every modality of a batch."""
    out: dict[str, Modality] = {}
    for k, v in batch.items():
        out[k] = v.index(idx) if isinstance(v, Sequences) else v[idx.to(v.device)]
    return out
