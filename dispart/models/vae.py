"""Unimodal VAE (Kingma & Welling, 2014), the VAE-sp / VAE-im baselines of PVAE Table 1.

Generative model p: z ~ N(0, I); x ~ N(decoder(z), I). Inference model r(z | x).
Networks are PVAE's for that modality.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from torch.distributions import Independent

from dispart.data.batch import Batch
from dispart.models.base import LossOutput, MultimodalModel
from dispart.nn.encoders import GaussianHead
from dispart.nn.modality import ModalitySpec, build_decoder, build_pre_encoder
from dispart.objectives import kl_sum_to_prior

LATENT = "z"


class VAE(MultimodalModel):
    """A VAE on one modality. Other modalities in a batch are ignored by ``loss``."""

    name = "vae"

    def __init__(self, modality: ModalitySpec, latent_dim: int = 64, hidden: int = 512) -> None:
        super().__init__([modality])
        self.modality = modality.name
        self.latent_dim, self.hidden = latent_dim, hidden
        self.pre = build_pre_encoder(modality, hidden)
        self.head = GaussianHead(self.pre.out_dim, latent_dim)
        self.decoder = build_decoder(modality, latent_dim, hidden)

    def present(self, batch: Batch) -> tuple[str, ...]:
        return (self.modality,) if self.modality in batch else ()

    def latent_names(self, modality: str) -> tuple[str, ...]:
        return (LATENT,) if modality == self.modality else ()

    def encode(self, batch: Batch) -> dict[str, Independent]:
        if self.modality not in batch:
            raise ValueError(f"vae: this model infers from {self.modality!r} only; "
                             f"batch has {sorted(batch)}")
        self.check_input(self.modality, batch[self.modality])
        return {LATENT: self.head(self.pre(batch[self.modality]))}

    def decode(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        if modality != self.modality:
            raise ValueError(f"vae: this model generates {self.modality!r} only, not {modality!r}")
        if self.specs[modality].kind == "sequence":
            if lengths is None:
                raise ValueError(f"decoding sequence modality {modality!r} needs lengths")
            return self.decoder(latents[LATENT], lengths)
        return self.decoder(latents[LATENT])

    def loss(self, batch: Batch) -> LossOutput:
        q = self.encode(batch)
        x = batch[self.modality]
        mean = self.decode({LATENT: q[LATENT].rsample()}, self.modality, self.lengths_of(x))
        rec = self.log_likelihood(self.modality, mean, x)
        kl_prior = kl_sum_to_prior(q)
        elbo = rec - kl_prior
        return LossOutput(-elbo.mean(), {f"rec_{self.modality}": -rec.mean(),
                                         "kl": kl_prior.mean(), "elbo": elbo.mean()})

    def hparams(self) -> dict:
        return {
            "name": self.name,
            "modalities": [s.to_dict() for s in self.specs.values()],
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
        }
