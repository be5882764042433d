"""Unimodal inference over whole data sets: posterior means of every latent, batched.

Evaluation clusters one vector per example. A *dynamic* latent (declared ``dynamic=True``:
one (T, D) vector per frame, e.g. DSAE's z_1:T) is therefore pooled here, where latents are
gathered: the mean over each example's valid frames (padding frames excluded), giving (N, D)
like a static latent. Static latents are returned as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from dispart.batches.batch import Sequences
from dispart.models.base import MultimodalModel

__all__ = ["pool_frames", "pool_dynamic", "speech_latents", "image_latents"]


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
