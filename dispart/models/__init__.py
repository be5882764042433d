"""Models, one file each, all following :class:`dispart.models.base.MultimodalModel`.

The model name -> (class, config dataclass) map is :data:`dispart.models.registry.REGISTRY`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dispart.batches.modality import ModalitySpec
from dispart.models.base import Elbo, Generative, LossOutput, MultimodalModel, mask_key
from dispart.models.dsae import DSAE, DSAEConfig
from dispart.models.jmvae import JMVAE, JMVAEConfig, PlainJMVAE, PlainJMVAEConfig
from dispart.models.mvae import MVAE, MVAEConfig
from dispart.models.pvae import PVAE, PVAEConfig
from dispart.models.registry import REGISTRY, ModelEntry, entry, upgrade_state_dict
from dispart.models.vae import VAE, VAEConfig

MODELS = tuple(REGISTRY)

# Keys older run.json files may hold that today's configs do not (ignored when rebuilding).
_LEGACY_HPARAMS = {"mvae": ("quotient",), "mvae_q": ("quotient",)}


def build_model(hparams: dict[str, Any]) -> MultimodalModel:
    """Rebuild a model from plain data (the output of ``model.hparams()``): {"name", "modalities"
    (ModalitySpec dicts), **fields of the model's config dataclass} (missing fields: defaults)."""
    if not isinstance(hparams, dict):
        raise ValueError(f"model hyper-parameters must be a dict, got {type(hparams).__name__}")
    h = dict(hparams)
    if "name" not in h:
        raise ValueError(f"model hyper-parameters need a 'name' (one of {list(REGISTRY)})")
    e = entry(h.pop("name"))
    if "modalities" not in h:
        raise ValueError(f"{e.name}: model hyper-parameters need 'modalities'")
    specs = [ModalitySpec.from_dict(d) for d in h.pop("modalities")]
    for key in _LEGACY_HPARAMS.get(e.name, ()):
        h.pop(key, None)
    known = [f.name for f in fields(e.config)]
    unknown = sorted(set(h) - set(known))
    if unknown:
        raise ValueError(f"{e.name}: unknown hyper-parameter(s) {unknown}; "
                         f"{e.config.__name__} has {known}")
    return e.model.from_config(specs, e.config(**h), **e.fixed)


__all__ = ["DSAE", "JMVAE", "MODELS", "MVAE", "PVAE", "REGISTRY", "VAE", "DSAEConfig", "Elbo",
           "Generative", "JMVAEConfig", "LossOutput", "MVAEConfig", "ModelEntry", "MultimodalModel",
           "PVAEConfig", "PlainJMVAE", "PlainJMVAEConfig", "VAEConfig", "build_model", "entry", "mask_key",
           "upgrade_state_dict"]
