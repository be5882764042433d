"""Models, one file each, all following :class:`dispart.models.base.MultimodalModel`."""

from __future__ import annotations

from typing import Any

from dispart.batches.modality import ModalitySpec
from dispart.models.base import LossOutput, MultimodalModel, mask_key
from dispart.models.jmvae import JMVAE, PlainJMVAE
from dispart.models.mvae import MVAE
from dispart.models.pvae import PVAE
from dispart.models.vae import VAE

MODELS = ("pvae", "jmvae_kl", "jmvae", "mvae", "mvae_q", "vae")


def build_model(hparams: dict[str, Any]) -> MultimodalModel:
    """Rebuild a model from plain data (the output of ``model.hparams()``)."""
    h = dict(hparams)
    name = h.pop("name")
    specs = [ModalitySpec.from_dict(d) for d in h.pop("modalities")]
    if name == "pvae":
        return PVAE(specs, **h)
    if name == "jmvae_kl":
        return JMVAE(specs, **h)
    if name == "jmvae":
        return PlainJMVAE(specs, **h)
    if name in ("mvae", "mvae_q"):
        h.pop("quotient", None)
        return MVAE(specs, quotient=name == "mvae_q", **h)
    if name == "vae":
        if len(specs) != 1:
            raise ValueError(f"vae takes exactly one modality, got {[s.name for s in specs]}")
        return VAE(specs[0], **h)
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")


__all__ = ["JMVAE", "MODELS", "MVAE", "PVAE", "VAE", "LossOutput", "MultimodalModel",
           "PlainJMVAE", "build_model", "mask_key"]
