"""Label and binary-image modalities: specs and the tensors their likelihoods expect.

A class label is a modality of kind "categorical" (shape (n_classes,), categorical likelihood):
batches hold it as (B,) int64 class indices (as ``collate_*`` already produce under "label") or
(B, C) one-hot vectors. Binarised MNIST uses an "image" modality with the Bernoulli likelihood
and {0, 1} pixels from :func:`binarize`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dispart.batches.modality import ModalitySpec, as_one_hot


def label_spec(n_classes: int = 10, name: str = "label") -> ModalitySpec:
    """A class-label modality, e.g. MVAE's image + label experiments."""
    return ModalitySpec(name, "categorical", (int(n_classes),), "categorical")


def binary_image_spec(shape: tuple[int, int, int] = (1, 28, 28), name: str = "image") -> ModalitySpec:
    """An image modality with a Bernoulli likelihood (binarised MNIST)."""
    return ModalitySpec(name, "image", tuple(shape), "bernoulli")


def one_hot(labels: Tensor, n_classes: int) -> Tensor:
    """(B,) class indices -> (B, C) float one-hot (already (B, C) input is returned as float)."""
    return as_one_hot(labels, n_classes)


def binarize(images: Tensor, threshold: float | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Intensities in [0, 1] -> {0, 1} floats: pixel > threshold, or, with ``threshold=None``,
    a Bernoulli draw with the intensity as probability (stochastic binarisation)."""
    if threshold is not None:
        return (images > threshold).to(images.dtype if images.is_floating_point() else torch.float32)
    p = images.float().clamp(0, 1)
    return torch.bernoulli(p, generator=generator)
