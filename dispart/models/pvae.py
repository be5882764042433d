"""Partitioned VAE (Hsu & Glass, 2018).

Generative model p: z^s ~ N(0, I); z^m ~ N(0, I) for every modality m;
x^m ~ N(decoder_m([z^s, z^m]), I).
Inference models: multimodal q(z^s, z^1..z^M | X) = q(z^s | X) prod_m q(z^m | X) from the
concatenated pre-encodings; unimodal r_m(z^s, z^m | x^m) = r_m(z^s | x^m) r_m(z^m | x^m) with
pre-encoders of their own (not shared with q).
Objective (maximised in the paper): L + a_CH * CH + a_CM * CM, eqs. (7)-(9).
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
from dispart.objectives import (
    coherence_kl,
    cross_modal_hinge,
    kl_sum_to_prior,
    random_negatives,
)

SEMANTIC = "z_s"


def style(modality: str) -> str:
    """Name of the style latent of ``modality``, e.g. "z_audio"."""
    return f"z_{modality}"


class UnimodalInference(nn.Module):
    """r_m(z^s, z^m | x^m): a pre-encoder of its own and one Gaussian head per latent."""

    def __init__(self, spec: ModalitySpec, semantic_dim: int, style_dim: int, hidden: int) -> None:
        super().__init__()
        self.pre = build_pre_encoder(spec, hidden)
        self.heads = nn.ModuleDict({
            SEMANTIC: GaussianHead(self.pre.out_dim, semantic_dim),
            style(spec.name): GaussianHead(self.pre.out_dim, style_dim),
        })

    def forward(self, x) -> dict[str, Independent]:
        h = self.pre(x)
        return {name: head(h) for name, head in self.heads.items()}


class MultimodalInference(nn.Module):
    """q(z^s, z^1..z^M | X): pre-encoders per modality, concatenated, one head per latent."""

    def __init__(
        self, specs: Sequence[ModalitySpec], semantic_dim: int, style_dim: int, hidden: int
    ) -> None:
        super().__init__()
        self.pre = nn.ModuleDict({s.name: build_pre_encoder(s, hidden) for s in specs})
        width = sum(p.out_dim for p in self.pre.values())
        heads = {SEMANTIC: GaussianHead(width, semantic_dim)}
        heads.update({style(s.name): GaussianHead(width, style_dim) for s in specs})
        self.heads = nn.ModuleDict(heads)

    def forward(self, batch: Batch) -> dict[str, Independent]:
        h = torch.cat([pre(batch[name]) for name, pre in self.pre.items()], dim=-1)
        return {name: head(h) for name, head in self.heads.items()}


class PVAE(MultimodalModel):
    """Partitioned VAE with a shared semantic latent z_s and one style latent per modality."""

    name = "pvae"

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        semantic_dim: int = 32,
        style_dim: int = 32,
        hidden: int = 512,
        alpha_ch: float = 0.1,
        alpha_cm: float = 10.0,
        margin: float = 0.5,
    ) -> None:
        super().__init__(modalities)
        if len(modalities) < 2:
            raise ValueError("PVAE needs at least two modalities")
        self.semantic_dim, self.style_dim, self.hidden = semantic_dim, style_dim, hidden
        self.alpha_ch, self.alpha_cm, self.margin = alpha_ch, alpha_cm, margin
        # Generative model p(x^m | z^s, z^m).
        self.decoders = nn.ModuleDict(
            {s.name: build_decoder(s, semantic_dim + style_dim, hidden) for s in modalities}
        )
        # Inference models q (multimodal) and r_m (unimodal).
        self.joint = MultimodalInference(modalities, semantic_dim, style_dim, hidden)
        self.unimodal = nn.ModuleDict(
            {s.name: UnimodalInference(s, semantic_dim, style_dim, hidden) for s in modalities}
        )

    def latent_names(self, modality: str) -> tuple[str, ...]:
        return (SEMANTIC, style(modality))

    def encode(self, batch: Batch) -> dict[str, Independent]:
        present = self.present(batch)
        for m in present:
            self.check_input(m, batch[m])
        if len(present) == len(self.specs):
            return self.joint(batch)
        if len(present) == 1:
            return self.unimodal[present[0]](batch[present[0]])
        raise ValueError(
            f"pvae: cannot infer from modalities {list(present)}; give all of "
            f"{list(self.specs)} or exactly one"
        )

    def decode(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        z = torch.cat([latents[SEMANTIC], latents[style(modality)]], dim=-1)
        if self.specs[modality].kind == "sequence":
            if lengths is None:
                raise ValueError(f"decoding sequence modality {modality!r} needs lengths")
            return self.decoders[modality](z, lengths)
        return self.decoders[modality](z)

    def loss(self, batch: Batch, negative_index: Tensor | None = None) -> LossOutput:
        """-(L + a_CH CH + a_CM CM) averaged over the batch.

        Args:
            batch: every modality of the model, paired row by row.
            negative_index: (B,) rows used as X~ in CM; random by default.
        """
        present = self.present(batch)
        if len(present) != len(self.specs):
            missing = sorted(set(self.specs) - set(present))
            raise ValueError(f"pvae.loss needs every modality; missing {missing}")
        q = self.encode(batch)
        z = {name: post.rsample() for name, post in q.items()}
        rec = {
            m: self.log_likelihood(m, self.decode(z, m, self.lengths_of(batch[m])), batch[m])
            for m in present
        }
        kl_prior = kl_sum_to_prior(q)
        elbo = torch.stack(list(rec.values())).sum(dim=0) - kl_prior

        r = {m: self.unimodal[m](batch[m]) for m in present}
        ch = coherence_kl(q, r)
        b = next(iter(rec.values())).shape[0]
        if negative_index is None:
            negative_index = random_negatives(b).to(kl_prior.device)
        if self.alpha_cm > 0:
            cm = cross_modal_hinge({m: r[m][SEMANTIC].mean for m in present}, negative_index,
                                   self.margin)
        else:
            cm = torch.zeros_like(elbo)
        loss = (-elbo + self.alpha_ch * ch + self.alpha_cm * cm).mean()
        terms = {f"rec_{m}": -v.mean() for m, v in rec.items()}
        terms.update({"kl": kl_prior.mean(), "elbo": elbo.mean(), "ch_kl": ch.mean(),
                      "cm_hinge": cm.mean()})
        return LossOutput(loss, terms)

    def hparams(self) -> dict:
        return {
            "name": self.name,
            "modalities": [s.to_dict() for s in self.specs.values()],
            "semantic_dim": self.semantic_dim,
            "style_dim": self.style_dim,
            "hidden": self.hidden,
            "alpha_ch": self.alpha_ch,
            "alpha_cm": self.alpha_cm,
            "margin": self.margin,
        }
