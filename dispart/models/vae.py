"""Unimodal VAE (Kingma & Welling, 2014), the VAE-sp / VAE-im baselines of PVAE Table 1.

Generative model p: z ~ N(0, I); x ~ N(decoder(z), I). Inference model r(z | x).
Networks are PVAE's for that modality.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.distributions import Independent

from dispart.batches.batch import Batch, index_batch
from dispart.batches.modality import ModalitySpec
from dispart.models.base import LossOutput, MultimodalModel, mask_key
from dispart.models.latents import Latent, declare
from dispart.nn.encoders import GaussianHead
from dispart.nn.modality import build_decoder, build_pre_encoder
from dispart.objectives import kl_sum_to_prior

LATENT = "z"


class VAE(MultimodalModel):
    """A VAE on one modality. Other modalities in a batch are ignored by ``loss``."""

    name = "vae"

    def __init__(self, modality: ModalitySpec, latent_dim: int = 64, hidden: int = 512) -> None:
        super().__init__([modality])
        self.modality = modality.name
        self.latent_dim, self.hidden = latent_dim, hidden
        self.latents = declare(Latent(LATENT, latent_dim, (modality.name,), "content", symbol="z"))
        self.pre = build_pre_encoder(modality, hidden)
        self.head = GaussianHead(self.pre.out_dim, latent_dim)
        self.decoder = build_decoder(modality, latent_dim, hidden)

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
        return {LATENT: self.head(self.pre(batch[self.modality]))}

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
        rec = self.reconstruction_log_prob({LATENT: q[LATENT].rsample()}, self.modality, x)
        kl_prior = kl_sum_to_prior(q)
        elbo = rec - kl_prior
        return LossOutput(-elbo.mean(), {f"rec_{self.modality}": -rec.mean(),
                                         "kl": kl_prior.mean(), "elbo": elbo.mean()})

    def hparams(self) -> dict:
        return self._hparams(latent_dim=self.latent_dim, hidden=self.hidden)
