"""Small builders shared by the model tests: flat "vector" modalities and random batches of them."""

from __future__ import annotations

import torch

from dispart.nn.modality import ModalitySpec


def vec(name: str, d: int = 3) -> ModalitySpec:
    return ModalitySpec(name, "vector", (d,))


def vec_batch(names, b: int = 6, d: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(b, d, generator=g) for n in names}
