"""JMVAE-kl (Suzuki et al., 2016): one joint latent z shared by every modality.

Generative model p: z ~ N(0, I); x^m ~ N(decoder_m(z), I) for every modality m.
Inference models: joint q(z | X) from the concatenated pre-encodings; unimodal r_m(z | x^m),
pulled towards q by the KL terms of eq. (2):

    L_JMkl = E_q[sum_m log p(x^m | z)] - KL(q(z|X) || p(z)) - alpha * sum_m KL(q(z|X) || r_m(z|x^m)).

Networks are those of PVAE (the PVAE paper's baseline), with z of size semantic + styles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.data.batch import Batch
from dispart.models.base import LossOutput, MultimodalModel
from dispart.nn.encoders import GaussianHead
from dispart.nn.modality import ModalitySpec, build_decoder, build_pre_encoder
from dispart.objectives import coherence_kl, kl_sum_to_prior

LATENT = "z"


class JMVAE(MultimodalModel):
    """JMVAE-kl; ``alpha = 0`` gives the plain joint ELBO of JMVAE (unimodal encoders untrained)."""

    name = "jmvae_kl"

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        latent_dim: int = 96,
        hidden: int = 512,
        alpha: float = 0.1,
    ) -> None:
        super().__init__(modalities)
        if len(modalities) < 2:
            raise ValueError("JMVAE needs at least two modalities")
        self.latent_dim, self.hidden, self.alpha = latent_dim, hidden, alpha
        self.decoders = nn.ModuleDict(
            {s.name: build_decoder(s, latent_dim, hidden) for s in modalities}
        )
        self.joint_pre = nn.ModuleDict({s.name: build_pre_encoder(s, hidden) for s in modalities})
        self.joint_head = GaussianHead(sum(p.out_dim for p in self.joint_pre.values()), latent_dim)
        self.unimodal_pre = nn.ModuleDict(
            {s.name: build_pre_encoder(s, hidden) for s in modalities}
        )
        self.unimodal_head = nn.ModuleDict(
            {s.name: GaussianHead(self.unimodal_pre[s.name].out_dim, latent_dim)
             for s in modalities}
        )

    def latent_names(self, modality: str) -> tuple[str, ...]:
        return (LATENT,)

    def _unimodal(self, modality: str, x) -> Independent:
        return self.unimodal_head[modality](self.unimodal_pre[modality](x))

    def encode(self, batch: Batch) -> dict[str, Independent]:
        present = self.present(batch)
        for m in present:
            self.check_input(m, batch[m])
        if len(present) == len(self.specs):
            h = torch.cat([self.joint_pre[m](batch[m]) for m in self.specs], dim=-1)
            return {LATENT: self.joint_head(h)}
        if len(present) == 1:
            return {LATENT: self._unimodal(present[0], batch[present[0]])}
        raise ValueError(
            f"jmvae_kl: cannot infer from modalities {list(present)}; give all of "
            f"{list(self.specs)} or exactly one"
        )

    def decode(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        if self.specs[modality].kind == "sequence":
            if lengths is None:
                raise ValueError(f"decoding sequence modality {modality!r} needs lengths")
            return self.decoders[modality](latents[LATENT], lengths)
        return self.decoders[modality](latents[LATENT])

    def loss(self, batch: Batch) -> LossOutput:
        present = self.present(batch)
        if len(present) != len(self.specs):
            missing = sorted(set(self.specs) - set(present))
            raise ValueError(f"jmvae_kl.loss needs every modality; missing {missing}")
        q = self.encode(batch)
        z = {LATENT: q[LATENT].rsample()}
        rec = {
            m: self.log_likelihood(m, self.decode(z, m, self.lengths_of(batch[m])), batch[m])
            for m in present
        }
        kl_prior = kl_sum_to_prior(q)
        elbo = torch.stack(list(rec.values())).sum(dim=0) - kl_prior
        r = {m: {LATENT: self._unimodal(m, batch[m])} for m in present}
        kl_uni = coherence_kl(q, r)
        loss = (-elbo + self.alpha * kl_uni).mean()
        terms = {f"rec_{m}": -v.mean() for m, v in rec.items()}
        terms.update({"kl": kl_prior.mean(), "elbo": elbo.mean(), "kl_unimodal": kl_uni.mean()})
        return LossOutput(loss, terms)

    def hparams(self) -> dict:
        return {
            "name": self.name,
            "modalities": [s.to_dict() for s in self.specs.values()],
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "alpha": self.alpha,
        }
