"""Unimodal inference over whole data sets: posterior means of every latent, batched."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dispart.batches.batch import Sequences
from dispart.models.base import MultimodalModel


@torch.no_grad()
def speech_latents(
    model: MultimodalModel, features: Sequence[np.ndarray], batch_size: int = 512,
    modality: str = "audio",
) -> dict[str, np.ndarray]:
    """Posterior means from speech alone: latent name -> (N, D), rows in input order.

    Utterances are batched by length so that little padding is computed.
    """
    order = np.argsort([len(f) for f in features], kind="stable")
    chunks: dict[str, list[np.ndarray]] = {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x = Sequences.from_list([features[i] for i in idx]).to(device)
        for name, mean in model.embed({modality: x}).items():
            chunks.setdefault(name, []).append(mean.cpu().numpy())
    model.train(was_training)
    inverse = np.argsort(order, kind="stable")
    return {k: np.concatenate(v)[inverse] for k, v in chunks.items()}


@torch.no_grad()
def image_latents(
    model: MultimodalModel, images: np.ndarray, batch_size: int = 1024, modality: str = "image"
) -> dict[str, np.ndarray]:
    """Posterior means from images alone ((N, 28, 28) or (N, 1, 28, 28) in [0, 1]), reshaped
    to the model's image shape."""
    x_all = torch.as_tensor(images, dtype=torch.float32)
    x_all = x_all.reshape(len(x_all), *model.specs[modality].shape)  # (1, 28, 28) or (784,)
    device = next(model.parameters()).device
    chunks: dict[str, list[np.ndarray]] = {}
    was_training = model.training
    model.eval()
    for start in range(0, len(x_all), batch_size):
        x = x_all[start:start + batch_size].to(device)
        for name, mean in model.embed({modality: x}).items():
            chunks.setdefault(name, []).append(mean.cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in chunks.items()}
