"""Unimodal VAE (Kingma & Welling, 2014), the VAE-sp / VAE-im baselines of PVAE Table 1.

Generative model p (``model.generative``): z ~ N(0, I); x ~ N(decoder(z), I). Inference model r(z | x).
Networks are PVAE's for that modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, index_batch
from dispart.batches.modality import ModalitySpec
from dispart.models.base import Generative, LossOutput, MultimodalModel, mask_key, standard_priors
from dispart.models.latents import Latent, declare
from dispart.nn.encoders import GaussianHead
from dispart.nn.modality import build_decoder, build_pre_encoder

LATENT = "z"


@dataclass(frozen=True)
class VAEConfig:
    """VAE hyper-parameters: size of z and network width."""

    latent_dim: int = 96
    hidden: int = 512


class VAEInference(nn.Module):
    """r(z | x): a pre-encoder and a Gaussian head."""

    def __init__(self, spec: ModalitySpec, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.pre = build_pre_encoder(spec, hidden)
        self.head = GaussianHead(self.pre.out_dim, latent_dim)

    def forward(self, x) -> Independent:
        return self.head(self.pre(x))


class VAE(MultimodalModel):
    """A VAE on one modality. Other modalities in a batch are ignored by ``loss``."""

    name = "vae"
    config_class = VAEConfig

    def __init__(self, modality: ModalitySpec, latent_dim: int = 64, hidden: int = 512) -> None:
        super().__init__([modality])
        self.modality = modality.name
        self.latent_dim, self.hidden = latent_dim, hidden
        self.latents = declare(Latent(LATENT, latent_dim, (modality.name,), "content", symbol="z"))
        # Encoder before decoder, and registered first: same initial weights and parameter order
        # as before.
        self.inference = VAEInference(modality, latent_dim, hidden)
        decoders = {modality.name: build_decoder(modality, latent_dim, hidden)}
        self.generative = Generative(standard_priors(self.latents), decoders)

    @classmethod
    def from_config(cls, modalities: Sequence[ModalitySpec], config: VAEConfig, **fixed: object
                    ) -> VAE:
        if len(modalities) != 1:
            raise ValueError(f"vae takes exactly one modality, got {[s.name for s in modalities]}")
        if not isinstance(config, VAEConfig):
            raise TypeError(f"VAE.from_config needs a VAEConfig, got {type(config).__name__}")
        return cls(modalities[0], config.latent_dim, config.hidden, **fixed)

    @classmethod
    def legacy_prefixes(cls, modalities: Sequence[str]) -> tuple[tuple[str, str], ...]:
        return (("pre.", "inference.pre."), ("head.", "inference.head."),
                ("decoder.", f"generative.decoders.{modalities[0]}."))

    @property
    def decoder(self) -> nn.Module:
        """The decoder of the model's modality."""
        return self.generative.decoders[self.modality]

    def present(self, batch: Batch) -> tuple[str, ...]:
        if self.modality not in batch:
            return ()
        mask = batch.get(mask_key(self.modality))
        if mask is not None and not bool(torch.as_tensor(mask).any()):
            return ()
        return (self.modality,)

    def encode(self, batch: Batch) -> dict[str, Independent]:
        if self.modality not in batch:
            raise ValueError(f"vae: this model infers from {self.modality!r} only; "
                             f"batch has {sorted(batch)}")
        self.check_input(self.modality, batch[self.modality])
        return {LATENT: self.inference(batch[self.modality])}

    def decode_params(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        if modality != self.modality:
            raise ValueError(f"vae: this model generates {self.modality!r} only, not {modality!r}")
        return self.run_decoder(self.decoder, latents[LATENT], modality, lengths)

    def loss(self, batch: Batch) -> LossOutput:
        """Negative ELBO of the model's modality; other modalities are ignored and rows where
        a mask says the modality is missing are dropped."""
        if not self.present(batch):
            raise ValueError(f"vae: the batch has no {self.modality!r} to train on; "
                             f"batch has {sorted(batch)}")
        x = batch[self.modality]
        mask = batch.get(mask_key(self.modality))
        if mask is not None and not bool(torch.as_tensor(mask).all()):
            rows = torch.nonzero(torch.as_tensor(mask, dtype=torch.bool).cpu()).squeeze(1)
            x = index_batch({self.modality: x}, rows)[self.modality]
        q = self.encode({self.modality: x})
        out = self.elbo({self.modality: x}, q, (self.modality,))
        rec, kl_prior, elbo = out.rec[self.modality], out.kl_total, out.value
        return LossOutput(-elbo.mean(), {f"rec_{self.modality}": -rec.mean(),
                                         "kl": kl_prior.mean(), "elbo": elbo.mean()})
