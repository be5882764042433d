"""What flows from data into models: a batch is a mapping modality name -> tensor.

Fixed-size modalities (images) are plain tensors with the batch first. Variable-length
modalities (speech feature sequences) are :class:`Sequences`: zero-padded frames plus the
true length of each sequence, so that models can pack them and losses can mask them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Sequences:
    """A batch of variable-length sequences.

    Attributes:
        data: (B, T_max, D) float tensor, frames past ``lengths[b]`` are zero.
        lengths: (B,) int64 tensor on the CPU, number of valid frames per sequence (>= 1).
    """

    data: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if self.data.dim() != 3:
            raise ValueError(f"Sequences.data must be (B, T, D), got shape {tuple(self.data.shape)}")
        if self.lengths.shape != (self.data.shape[0],):
            raise ValueError(
                f"Sequences.lengths must be ({self.data.shape[0]},), got {tuple(self.lengths.shape)}"
            )

    @classmethod
    def from_list(cls, seqs: list[np.ndarray] | list[Tensor]) -> Sequences:
        """Pad a list of (T_i, D) arrays into one batch."""
        tensors = [torch.as_tensor(s, dtype=torch.float32) for s in seqs]
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
        data = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        return cls(data, lengths)

    @property
    def batch_size(self) -> int:
        return int(self.data.shape[0])

    def mask(self) -> Tensor:
        """(B, T_max) bool, True on valid frames."""
        steps = torch.arange(self.data.shape[1], device=self.data.device)
        return steps[None, :] < self.lengths.to(self.data.device)[:, None]

    def to(self, device: torch.device | str) -> Sequences:
        return Sequences(self.data.to(device), self.lengths)

    def index(self, idx: Tensor) -> Sequences:
        """Select a subset (or permutation) of the batch, trimming extra padding."""
        lengths = self.lengths[idx.cpu()]
        t_max = int(lengths.max()) if len(lengths) else 0
        return Sequences(self.data[idx.to(self.data.device), :t_max], lengths)

    def unpad(self) -> list[Tensor]:
        """The valid frames of each sequence, as a list of (T_i, D) tensors."""
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
