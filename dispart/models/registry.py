"""The one map model name -> (model class, config dataclass).

Adding a model is one file (the class and its config dataclass) plus one line in ``REGISTRY``.
A config dataclass holds hyper-parameters only; the modalities come from the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from dispart.models.base import rename_legacy_keys
from dispart.models.dsae import DSAE, DSAEConfig
from dispart.models.jmvae import JMVAE, JMVAEConfig, PlainJMVAE, PlainJMVAEConfig
from dispart.models.mdvae import MDVAE, MDVAEConfig
from dispart.models.mvae import MVAE, MVAEConfig
from dispart.models.pvae import PVAE, PVAEConfig
from dispart.models.vae import VAE, VAEConfig
from dispart.models.vqvae import VQVAE, VQVAEConfig


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: registry key, e.g. "pvae" (the ``name`` in run.json's model hyper-parameters).
        model: the :class:`~dispart.models.base.MultimodalModel` subclass.
        config: its config dataclass (hyper-parameters only, no modalities).
        fixed: constructor arguments set by the entry itself, not by the config
            (e.g. ``quotient=True`` for "mvae_q").
        stage1: the registered model trained first, one run per modality, whose weights the
            model loads frozen (MDVAE: "vq_vae"); None for one-stage models. The model's config
            gives that model's config (``stage1_config()``) and the model loads a trained one
            (``load_stage1(modality, model)``); ``dispart.training.stages`` runs both stages.
    """

    name: str
    model: type
    config: type
    fixed: dict[str, Any] = field(default_factory=dict)
    stage1: str | None = None


REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("pvae", PVAE, PVAEConfig),
        ModelEntry("jmvae_kl", JMVAE, JMVAEConfig),
        ModelEntry("jmvae", PlainJMVAE, PlainJMVAEConfig),
        ModelEntry("mvae", MVAE, MVAEConfig, {"quotient": False}),
        ModelEntry("mvae_q", MVAE, MVAEConfig, {"quotient": True}),
        ModelEntry("vae", VAE, VAEConfig),
        ModelEntry("dsae", DSAE, DSAEConfig),
        ModelEntry("vq_vae", VQVAE, VQVAEConfig),
        ModelEntry("mdvae", MDVAE, MDVAEConfig, stage1="vq_vae"),
    )
}


def entry(name: str) -> ModelEntry:
    """The registry entry of model ``name``; ValueError naming it and the known models."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known models: {sorted(REGISTRY)}") from None


def config_fields(name: str) -> tuple[str, ...]:
    """The hyper-parameter names of model ``name`` (its config dataclass's fields)."""
    return tuple(f.name for f in fields(entry(name).config))


def upgrade_state_dict(hparams: Mapping[str, Any], state: Mapping[str, Any], prefix: str = ""
                       ) -> dict[str, Any]:
    """``state`` (weights saved by any dispart version) with the key names of today's model.

    ``hparams`` is the model's plain-data description (run.json's "model", a checkpoint's
    ``model_hparams``); ``prefix`` is what precedes the model's own keys (``"model."`` in a
    Lightning checkpoint). Keys already in today's form are left alone.
    """
    name = hparams.get("name") if isinstance(hparams, Mapping) else None
    e = entry(name)
    modalities = [m.get("name") if isinstance(m, Mapping) else m for m in hparams.get("modalities", [])]
    return rename_legacy_keys(state, e.model.legacy_prefixes(modalities), prefix)
