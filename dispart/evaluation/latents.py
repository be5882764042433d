"""Unimodal inference over whole data sets: posterior means of every latent, batched.

Evaluation clusters one vector per example. A *dynamic* latent (declared ``dynamic=True``:
one (T, D) vector per frame, e.g. DSAE's z_1:T) is therefore pooled here, where latents are
gathered: the mean over each example's valid frames (padding frames excluded), giving (N, D)
like a static latent. Static latents are returned as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dispart.batches.batch import Sequences
from dispart.models.base import MultimodalModel

__all__ = ["pool_frames", "pool_dynamic", "speech_latents", "image_latents", "sequence_latents",
           "modality_latents", "clustered_modalities"]


def pool_frames(z: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Mean of per-frame latents over each row's valid frames.

    Args:
        z: (B, T, D) per-frame latents.
        lengths: (B,) valid frames of each row (frames t >= lengths[b] are padding), or None
            when every frame is valid.

    Returns:
        (B, D) means.
    """
    if z.dim() != 3:
        raise ValueError(f"pool_frames expects (B, T, D) per-frame latents, got shape {tuple(z.shape)}")
    if lengths is None:
        return z.mean(dim=1)
    lengths = torch.as_tensor(lengths, device=z.device).long()
    if lengths.shape != (z.shape[0],):
        raise ValueError(f"lengths must be ({z.shape[0]},), got shape {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > z.shape[1]).any()):
        raise ValueError(f"lengths must be in [1, {z.shape[1]}] (the latent's frames), got "
                         f"{lengths.min().item()}..{lengths.max().item()}")
    mask = (torch.arange(z.shape[1], device=z.device)[None, :] < lengths[:, None]).to(z.dtype)
    return (z * mask[..., None]).sum(dim=1) / lengths[:, None].to(z.dtype)


def pool_dynamic(model: MultimodalModel, means: Mapping[str, Tensor], lengths: Tensor | None
                 ) -> dict[str, Tensor]:
    """``means`` with every latent the model declares dynamic pooled by :func:`pool_frames`.

    Args:
        means: latent name -> (B, D) (static) or (B, T, D) (dynamic) posterior means.
        lengths: (B,) frames of the sequence the latents were inferred from, or None.
    """
    out: dict[str, Tensor] = {}
    for name, z in means.items():
        latent = model.latents.get(name)
        if latent is not None and latent.dynamic:
            if z.dim() != 3:
                raise ValueError(f"{model.name}: latent {name!r} is declared dynamic but its "
                                 f"posterior mean has shape {tuple(z.shape)}, not (B, T, D)")
            out[name] = pool_frames(z, lengths)
        else:
            out[name] = z
    return out


@torch.no_grad()
def sequence_latents(
    model: MultimodalModel, examples: Sequence[np.ndarray], modality: str, batch_size: int = 512,
) -> dict[str, np.ndarray]:
    """Posterior means from one dynamic modality alone (examples (T_i, D) feature frames or
    (T_i, C, H, W) video frames): latent name -> (N, D), rows in input order.

    Examples are batched by length so that little padding is computed. Dynamic latents are
    averaged over each example's frames (see the module docstring). The model's training
    mode is restored afterwards.
    """
    return speech_latents(model, examples, batch_size, modality)


@torch.no_grad()
def speech_latents(
    model: MultimodalModel, features: Sequence[np.ndarray], batch_size: int = 512,
    modality: str = "audio",
) -> dict[str, np.ndarray]:
    """Posterior means from speech alone: latent name -> (N, D), rows in input order.

    Utterances are batched by length so that little padding is computed. Dynamic latents are
    averaged over each utterance's frames (see the module docstring). The model's training
    mode is restored afterwards.
    """
    order = np.argsort([len(f) for f in features], kind="stable")
    chunks: dict[str, list[np.ndarray]] = {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = Sequences.from_list([features[i] for i in idx]).to(device)
            for name, mean in pool_dynamic(model, model.embed({modality: x}), x.lengths).items():
                chunks.setdefault(name, []).append(mean.cpu().numpy())
    finally:
        model.train(was_training)
    inverse = np.argsort(order, kind="stable")
    return {k: np.concatenate(v)[inverse] for k, v in chunks.items()}


@torch.no_grad()
def image_latents(
    model: MultimodalModel, images: np.ndarray, batch_size: int = 1024, modality: str = "image"
) -> dict[str, np.ndarray]:
    """Posterior means from images alone ((N, 28, 28) or (N, 1, 28, 28) in [0, 1]), reshaped
    to the model's image shape: latent name -> (N, D) (``model.encode_in_batches``, training
    mode restored)."""
    x_all = torch.as_tensor(images, dtype=torch.float32)
    x_all = x_all.reshape(len(x_all), *model.specs[modality].shape)  # (1, 28, 28) or (784,)
    x_all = x_all.to(next(model.parameters()).device)
    means = pool_dynamic(model, model.encode_in_batches({modality: x_all}, batch_size), None)
    return {k: v.cpu().numpy() for k, v in means.items()}


def modality_latents(model: MultimodalModel, modality: str, examples: Sequence[np.ndarray] | np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Posterior means from ``modality`` alone, whatever its kind: latent name -> (N, D).

    A dynamic modality ("sequence", "frames": a list of (T_i, ...) arrays) goes through
    :func:`sequence_latents`, a static one ((N, ...) stacked examples) through
    :func:`image_latents` (reshaped to the model's spec). ValueError for a modality the model
    does not have.
    """
    if modality not in model.specs:
        raise ValueError(f"{model.name} has no modality {modality!r} (it has {list(model.specs)})")
    if model.specs[modality].kind in ("sequence", "frames"):
        return sequence_latents(model, examples, modality)  # type: ignore[arg-type]
    return image_latents(model, np.asarray(examples), modality=modality)


def clustered_modalities(model: MultimodalModel, sets: Mapping[str, Any]) -> list[str]:
    """The model's modalities with a set in ``sets`` whose latents are clustered: every kind
    but "categorical" (a label's latent would be judged against itself), speech first, then
    image (Table 1's column order), then the others in the model's order."""
    mods = [m for m in model.modalities if m in sets and model.specs[m].kind != "categorical"]
    return sorted(mods, key=lambda m: (m != "audio", m != "image"))
