"""MVAE and MVAE-Q (Wu & Goodman, 2018): one latent z, a product of Gaussian experts.

Generative model p (``model.generative``): z ~ N(0, I); x^m ~ p(x^m | decoder_m(z)) for every
modality m (Gaussian, Bernoulli or categorical likelihood, see ModalitySpec.likelihood).
Inference: one expert per modality, q~(z | x^m); for the modalities X present,

    MVAE:   q(z | X) ∝ p(z) prod_{m in X} q~(z | x^m)              (product with a prior expert)
    MVAE-Q: q(z | X) = prod_{m in X} q(z | x^m) / p(z)^(|X| - 1)   (product and quotient, eq. 4)

so any subset of modalities (and per-row masks) can be encoded. MVAE-Q's quotient needs every
expert's variance below the prior's; experts are parametrised to satisfy it
(:func:`dispart.nn.experts.constrained_logvar`).

Objective, sub-sampled as in eq. (5), for the modalities X present in a batch:

    ELBO(X) + sum_{m in X} ELBO(x^m) + sum_{j=1..k} ELBO(X_j)

with X_j drawn uniformly among the subsets of X with 2 <= |X_j| < |X| (none exist when
|X| <= 2, then k is ignored); ELBO(Y) = E_q(z|Y)[sum_{m in Y} lambda_m log p(x^m | z)]
- beta KL(q(z | Y) || p(z)) (eq. 2). beta is annealed linearly from 0 over ``anneal_steps``
training steps (calls of ``loss`` in training mode with gradients on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, Modality
from dispart.batches.modality import ModalitySpec
from dispart.models.base import Elbo, Generative, LossOutput, MultimodalModel, standard_priors
from dispart.models.latents import Latent, declare
from dispart.nn.encoders import diag_gaussian
from dispart.nn.experts import (
    ExpertHead,
    constrained_logvar,
    product_of_experts,
    product_quotient_of_experts,
)
from dispart.nn.modality import build_decoder, build_pre_encoder
from dispart.objectives import linear_anneal

LATENT = "z"


@dataclass(frozen=True)
class MVAEConfig:
    """MVAE / MVAE-Q hyper-parameters (the quotient is fixed by the model name, not here).

    k: random subsets in the sub-sampled objective; lambdas: per-modality likelihood weights
    (None: 1 for every modality); beta: KL weight after annealing over ``anneal_steps`` steps;
    activation: of the MLP experts and decoders ("relu", or "swish" as the reference code);
    decoder_layers: hidden layers of the MLP decoders (2; the reference code's MNIST decoders: 3);
    categorical_init: first layer of the experts of categorical modalities, "linear" or
    "embedding" (N(0, 1) weights as the reference code's nn.Embedding; see dispart.nn.modality).
    """

    latent_dim: int = 96
    hidden: int = 512
    k: int = 0
    lambdas: dict[str, float] | None = None
    beta: float = 1.0
    anneal_steps: int = 0
    activation: str = "relu"
    decoder_layers: int = 2
    categorical_init: str = "linear"


class Expert(nn.Module):
    """q~(z | x^m): a pre-encoder and a head emitting (mean, raw log-variance)."""

    def __init__(self, spec: ModalitySpec, latent_dim: int, hidden: int, activation: str = "relu",
                 categorical_init: str = "linear") -> None:
        super().__init__()
        self.pre = build_pre_encoder(spec, hidden, activation=activation, categorical_init=categorical_init)
        self.head = ExpertHead(self.pre.out_dim, latent_dim)

    def forward(self, x: Modality) -> tuple[Tensor, Tensor]:
        return self.head(self.pre(x))


def random_subsets(names: Sequence[str], k: int, generator: torch.Generator | None = None
                   ) -> list[tuple[str, ...]]:
    """k subsets of ``names`` drawn uniformly (with replacement) among those with
    2 <= size < len(names); [] when there are none (len(names) <= 2) or k = 0."""
    n = len(names)
    if n <= 2 or k <= 0:
        return []
    out = []
    while len(out) < k:  # rejection sampling: acceptance (2^n - n - 2) / 2^n >= 3/8
        keep = torch.rand(n, generator=generator) < 0.5
        size = int(keep.sum())
        if 2 <= size < n:
            out.append(tuple(m for m, b in zip(names, keep.tolist(), strict=True) if b))
    return out


class MVAEInference(nn.Module):
    """MVAE's inference model: one expert q~(z | x^m) per modality (``experts``)."""

    def __init__(self, specs: Sequence[ModalitySpec], latent_dim: int, hidden: int,
                 activation: str = "relu", categorical_init: str = "linear") -> None:
        super().__init__()
        self.experts = nn.ModuleDict({s.name: Expert(s, latent_dim, hidden, activation, categorical_init)
                                      for s in specs})


class MVAE(MultimodalModel):
    """MVAE (``quotient=False``) or MVAE-Q (``quotient=True``, name "mvae_q")."""

    name = "mvae"
    config_class = MVAEConfig

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        latent_dim: int = 64,
        hidden: int = 512,
        k: int = 0,
        lambdas: Mapping[str, float] | None = None,
        beta: float = 1.0,
        anneal_steps: int = 0,
        activation: str = "relu",
        decoder_layers: int = 2,
        categorical_init: str = "linear",
        quotient: bool = False,
    ) -> None:
        super().__init__(modalities)
        self.activation = activation
        self.latent_dim, self.hidden, self.k = latent_dim, hidden, int(k)
        self.beta, self.anneal_steps, self.quotient = float(beta), int(anneal_steps), bool(quotient)
        self.latents = declare(Latent(LATENT, latent_dim, tuple(self.specs), "content", symbol="z"))
        if self.k < 0:
            raise ValueError(f"mvae: k must be >= 0, got {k}")
        unknown = sorted(set(lambdas or {}) - set(self.specs))
        if unknown:
            raise ValueError(f"mvae: lambdas for unknown modalities {unknown}")
        self.lambdas = {m: float((lambdas or {}).get(m, 1.0)) for m in self.specs}
        if self.quotient:
            self.name = "mvae_q"
        # Experts before decoders, and registered first: the same initial weights for a seed
        # and the same parameter order (optimizer states of older checkpoints) as before.
        self.categorical_init = categorical_init
        self.inference = MVAEInference(modalities, latent_dim, hidden, activation, categorical_init)
        self.decoder_layers = int(decoder_layers)
        decoders = {s.name: build_decoder(s, latent_dim, hidden, activation, self.decoder_layers)
                    for s in modalities}
        self.generative = Generative(standard_priors(self.latents), decoders)
        # Training steps seen, for beta annealing; saved with the weights so resuming continues.
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))

    @property
    def experts(self) -> nn.ModuleDict:
        """modality -> expert (``inference.experts``)."""
        return self.inference.experts

    @classmethod
    def legacy_prefixes(cls, modalities: Sequence[str]) -> tuple[tuple[str, str], ...]:
        return (("experts.", "inference.experts."), ("decoders.", "generative.decoders."))

    # ------------------------------------------------------------------ latents / inference
    def expert_params(self, modality: str, x: Modality) -> tuple[Tensor, Tensor]:
        """(mean, log-variance) of q~(z | x^m) (MVAE) or q(z | x^m) (MVAE-Q, constrained)."""
        mean, raw = self.experts[modality](x)
        return mean, (constrained_logvar(raw) if self.quotient else raw)

    def combine(self, params: Mapping[str, tuple[Tensor, Tensor]],
                masks: Mapping[str, Tensor] | None = None) -> Independent:
        """q(z | X) from the experts' (mean, logvar) of the modalities in ``params``."""
        names = list(params)
        means = torch.stack([params[m][0] for m in names])
        logvars = torch.stack([params[m][1] for m in names])
        mask = None
        if masks:
            b = means.shape[1]
            mask = torch.stack([masks[m].to(means.device) if m in masks
                                else torch.ones(b, dtype=torch.bool, device=means.device)
                                for m in names])
        zeros = torch.zeros_like(means[0])
        if self.quotient:
            mean, logvar = product_quotient_of_experts(means, logvars, zeros, zeros, mask)
        else:  # prior expert N(0, I) always present
            means = torch.cat([zeros[None], means])
            logvars = torch.cat([zeros[None], logvars])
            if mask is not None:
                mask = torch.cat([torch.ones_like(mask[:1]), mask])
            mean, logvar = product_of_experts(means, logvars, mask)
        return diag_gaussian(mean, logvar)

    def encode(self, batch: Batch) -> dict[str, Independent]:
        """q(z | X) from any non-empty subset of modalities; per-row masks drop experts per row."""
        present = self.check_inputs(batch)
        if not present:
            raise ValueError(f"{self.name}: cannot infer from an empty batch; give any of "
                             f"{list(self.specs)}")
        params = {m: self.expert_params(m, batch[m]) for m in present}
        return {LATENT: self.combine(params, self.partial_masks(batch))}

    def decode_params(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        return self.run_decoder(self.decoders[modality], latents[LATENT], modality, lengths)

    # ------------------------------------------------------------------ objective
    def current_beta(self) -> float:
        """beta at the current training step (linear warm-up over ``anneal_steps``)."""
        return linear_anneal(int(self.anneal_step), self.anneal_steps, self.beta)

    def elbo_subsets(self, present: Sequence[str]) -> list[tuple[str, ...]]:
        """The subsets whose ELBOs make up the sub-sampled objective for ``present``:
        the full set, every single modality (if more than one), and k random subsets."""
        full = tuple(present)
        out = [full]
        if len(full) > 1:
            out += [(m,) for m in full]
        return out + random_subsets(full, self.k)

    def subset_elbo(self, batch: Batch, subset: Sequence[str],
                    params: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                    beta: float = 1.0, weighted: bool = True) -> Elbo:
        """Per-sample ELBO(subset) (eq. 2) with q(z | subset) from the experts' ``params``
        (computed if not given); ``value`` weighs log-likelihoods by lambda_m if ``weighted``."""
        if params is None:
            params = {m: self.expert_params(m, batch[m]) for m in subset}
        q = {LATENT: self.combine({m: params[m] for m in subset})}
        lam = self.lambdas if weighted else dict.fromkeys(subset, 1.0)
        return self.elbo(batch, q, subset, weights=lam, beta=beta)

    def loss(self, batch: Batch) -> LossOutput:
        out = self.grouped_loss(batch, self._loss)
        if self.training and torch.is_grad_enabled():
            self.anneal_step += 1
        return out

    def _loss(self, batch: Batch) -> LossOutput:
        present = self.check_inputs(batch)
        beta = self.current_beta()
        params = {m: self.expert_params(m, batch[m]) for m in present}
        subsets = self.elbo_subsets(present)
        total = None
        terms: dict[str, Tensor] = {}
        random_elbos = []
        for i, subset in enumerate(subsets):
            out = self.subset_elbo(batch, subset, params, beta)
            value, rec, kl = out.value, out.rec, out.kl_total
            total = value if total is None else total + value
            plain = (torch.stack(list(rec.values())).sum(dim=0) - kl).mean()
            if i == 0:
                terms.update({f"rec_{m}": -v.mean() for m, v in rec.items()})
                terms.update({"kl": kl.mean(), "elbo": plain})
            elif len(subset) == 1 and i <= len(present):
                terms[f"elbo_{subset[0]}"] = plain
            else:
                random_elbos.append(plain)
        if random_elbos:
            terms["elbo_random_subsets"] = torch.stack(random_elbos).mean()
        terms["n_elbo_terms"] = torch.tensor(float(len(subsets)))
        terms["beta"] = torch.tensor(beta)
        return LossOutput(-total.mean(), terms)
