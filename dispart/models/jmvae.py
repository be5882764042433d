"""JMVAE-kl (Suzuki et al., 2016): one joint latent z shared by every modality.

Generative model p (``model.generative``): z ~ N(0, I); x^m ~ N(decoder_m(z), I) for every modality m.
Inference models: joint q(z | X) from the concatenated pre-encodings; unimodal r_m(z | x^m),
pulled towards q by the KL terms of eq. (2):

    L_JMkl = E_q[sum_m log p(x^m | z)] - KL(q(z|X) || p(z)) - alpha * sum_m KL(q(z|X) || r_m(z|x^m)).

Networks are those of PVAE (the PVAE paper's baseline), with z of size semantic + styles.

M modalities: the joint encoder reads all M, the KL terms run over the M unimodal encoders.
JMVAE-kl has encoders for the full set and for single modalities only: a subset of
2 <= |S| < M modalities has no encoder of its own and ``encode`` refuses it (MVAE's PoE, or
PVAE's product/quotient of unimodal posteriors, handle it). Training needs complete examples.

:class:`PlainJMVAE` ("jmvae") is JMVAE without the KL terms (eq. 1): no unimodal encoders; as in
the paper, missing modalities are given to the joint encoder as zeros, for any subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, Modality, Sequences
from dispart.batches.modality import ModalitySpec, as_one_hot
from dispart.models.base import Generative, LossOutput, MultimodalModel, standard_priors
from dispart.models.latents import Latent, declare
from dispart.nn.encoders import GaussianHead
from dispart.nn.modality import build_decoder, build_pre_encoder
from dispart.objectives import coherence_kl

LATENT = "z"


@dataclass(frozen=True)
class JMVAEConfig:
    """JMVAE-kl hyper-parameters: size of z, network width, weight of the unimodal KL terms."""

    latent_dim: int = 96
    hidden: int = 512
    alpha: float = 0.1


@dataclass(frozen=True)
class PlainJMVAEConfig:
    """JMVAE (no KL terms) hyper-parameters: size of z and network width."""

    latent_dim: int = 96
    hidden: int = 512


def zeros_for(spec: ModalitySpec, batch_size: int, like: Tensor) -> Modality:
    """The all-zero input JMVAE gives its joint encoder for a missing modality: (B, *shape), or
    for "sequence"/"frames" one all-zero frame per row, Sequences (B, 1, *frame shape)."""
    if spec.dynamic:
        return Sequences(like.new_zeros(batch_size, 1, *spec.shape),
                         torch.ones(batch_size, dtype=torch.int64))
    return like.new_zeros(batch_size, *spec.shape)


def _zero_rows(x: Modality, keep: Tensor, spec: ModalitySpec) -> Modality:
    """``x`` with the rows where ``keep`` (B,) is False replaced by the zero input (for Sequences
    of any frame shape: every frame zero, length 1)."""
    if isinstance(x, Sequences):
        k = keep.to(x.data.device)
        k = k.view(-1, *([1] * (x.data.dim() - 1)))
        return Sequences(x.data * k, torch.where(keep.cpu(), x.lengths, 1))
    if spec.kind == "categorical":
        x = as_one_hot(x, spec.shape[0])
    k = keep.to(x.device)
    return x * k.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


class JMVAEInference(nn.Module):
    """JMVAE's inference model: joint q(z | X) (``joint_pre`` per modality, concatenated, then
    ``joint_head``) and, for JMVAE-kl, unimodal r_m(z | x^m) (``unimodal_pre``, ``unimodal_head``)."""

    def __init__(self, specs: Sequence[ModalitySpec], latent_dim: int, hidden: int, unimodal: bool
                 ) -> None:
        super().__init__()
        self.joint_pre = nn.ModuleDict({s.name: build_pre_encoder(s, hidden) for s in specs})
        self.joint_head = GaussianHead(sum(p.out_dim for p in self.joint_pre.values()), latent_dim)
        if unimodal:
            self.unimodal_pre = nn.ModuleDict({s.name: build_pre_encoder(s, hidden) for s in specs})
            self.unimodal_head = nn.ModuleDict(
                {s.name: GaussianHead(self.unimodal_pre[s.name].out_dim, latent_dim) for s in specs}
            )

    def joint(self, batch: Batch) -> Independent:
        """q(z | X) from every modality of ``batch`` (in the order the model declares them)."""
        h = torch.cat([pre(batch[m]) for m, pre in self.joint_pre.items()], dim=-1)
        return self.joint_head(h)

    def unimodal(self, modality: str, x: Modality) -> Independent:
        """r_m(z | x^m)."""
        return self.unimodal_head[modality](self.unimodal_pre[modality](x))


class JMVAE(MultimodalModel):
    """JMVAE-kl; ``alpha = 0`` gives the plain joint ELBO of JMVAE (unimodal encoders untrained)."""

    name = "jmvae_kl"
    config_class = JMVAEConfig
    zero_fill = False  # infer from missing modalities with zero inputs to the joint encoder

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
        self.latents = declare(Latent(LATENT, latent_dim, tuple(self.specs), "content", symbol="z"))
        # Built in this order (decoders, joint, unimodal) so a seed gives the same weights as before.
        decoders = {s.name: build_decoder(s, latent_dim, hidden) for s in modalities}
        self.generative = Generative(standard_priors(self.latents), decoders)
        self.inference = JMVAEInference(modalities, latent_dim, hidden, unimodal=not self.zero_fill)

    @classmethod
    def legacy_prefixes(cls, modalities: Sequence[str]) -> tuple[tuple[str, str], ...]:
        return (("decoders.", "generative.decoders."), ("joint_pre.", "inference.joint_pre."),
                ("joint_head.", "inference.joint_head."), ("unimodal_pre.", "inference.unimodal_pre."),
                ("unimodal_head.", "inference.unimodal_head."))

    def _unimodal(self, modality: str, x: Modality) -> Independent:
        return self.inference.unimodal(modality, x)

    def _joint(self, batch: Batch) -> Independent:
        return self.inference.joint(batch)

    def _zero_filled(self, batch: Batch, present: Sequence[str]) -> dict[str, Modality]:
        first = batch[present[0]]
        like = first.data if isinstance(first, Sequences) else first
        n = first.batch_size if isinstance(first, Sequences) else int(first.shape[0])
        like = like.float()
        masks = self.partial_masks(batch)
        out: dict[str, Modality] = {}
        for m, spec in self.specs.items():
            if m not in present:
                out[m] = zeros_for(spec, n, like)
            elif m in masks:
                out[m] = _zero_rows(batch[m], masks[m], spec)
            else:
                out[m] = batch[m]
        return out

    def encode(self, batch: Batch) -> dict[str, Independent]:
        present = self.check_inputs(batch)
        if not present:
            raise ValueError(f"{self.name}: cannot infer from an empty batch; give any of "
                             f"{list(self.specs)}")
        if self.zero_fill:
            return {LATENT: self._joint(self._zero_filled(batch, present))}
        partial = self.partial_masks(batch)
        if partial:
            raise ValueError(f"{self.name}.encode: modalities {sorted(partial)} are missing in some "
                             "rows; encode each presence group (model.split_by_presence)")
        if len(present) == len(self.specs):
            return {LATENT: self._joint(batch)}
        if len(present) == 1:
            return {LATENT: self._unimodal(present[0], batch[present[0]])}
        raise ValueError(
            f"{self.name}: cannot infer from modalities {list(present)}; give all of "
            f"{list(self.specs)} or exactly one (JMVAE-kl has no encoder for other subsets)"
        )

    def decode_params(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        return self.run_decoder(self.decoders[modality], latents[LATENT], modality, lengths)

    def _check_complete(self, batch: Batch) -> tuple[str, ...]:
        present = self.present(batch)
        if len(present) != len(self.specs):
            missing = sorted(set(self.specs) - set(present))
            raise ValueError(f"{self.name}.loss needs every modality; missing {missing} "
                             "(JMVAE is trained on complete examples only)")
        partial = self.partial_masks(batch)
        if partial:
            raise ValueError(f"{self.name}.loss needs every modality in every row; some rows miss "
                             f"{sorted(partial)} (JMVAE is trained on complete examples only)")
        return present

    def _elbo(self, batch: Batch, present: Sequence[str]):
        q = {LATENT: self._joint(batch)}
        for m in present:
            self.check_input(m, batch[m])
        out = self.elbo(batch, q, present)
        return q, out.rec, out.kl_total, out.value

    def loss(self, batch: Batch) -> LossOutput:
        present = self._check_complete(batch)
        q, rec, kl_prior, elbo = self._elbo(batch, present)
        r = {m: {LATENT: self._unimodal(m, batch[m])} for m in present}
        kl_uni = coherence_kl(q, r)
        loss = (-elbo + self.alpha * kl_uni).mean()
        terms = {f"rec_{m}": -v.mean() for m, v in rec.items()}
        terms.update({"kl": kl_prior.mean(), "elbo": elbo.mean(), "kl_unimodal": kl_uni.mean()})
        return LossOutput(loss, terms)


class PlainJMVAE(JMVAE):
    """JMVAE without KL terms (Suzuki et al. eq. 1): the joint ELBO only; missing modalities are
    zeros at the joint encoder's input (any subset, and per-row masks, at inference)."""

    name = "jmvae"
    config_class = PlainJMVAEConfig
    zero_fill = True

    def __init__(self, modalities: Sequence[ModalitySpec], latent_dim: int = 96, hidden: int = 512
                 ) -> None:
        super().__init__(modalities, latent_dim, hidden, alpha=0.0)

    def loss(self, batch: Batch) -> LossOutput:
        present = self._check_complete(batch)
        _, rec, kl_prior, elbo = self._elbo(batch, present)
        terms = {f"rec_{m}": -v.mean() for m, v in rec.items()}
        terms.update({"kl": kl_prior.mean(), "elbo": elbo.mean()})
        return LossOutput(-elbo.mean(), terms)
