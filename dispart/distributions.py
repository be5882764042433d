"""Distributions shared by all models: Gaussian posteriors/priors and observation likelihoods.

Everything is built on ``torch.distributions``; this module only adds what those objects do
not know about: masks for padded sequence frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from dispart.data.batch import Modality, Sequences

LOG_2PI = math.log(2 * math.pi)


def standard_normal(like: Independent) -> Independent:
    """The N(0, I) prior with the batch and event shape of ``like``."""
    mean = like.mean
    return Independent(Normal(torch.zeros_like(mean), torch.ones_like(mean)), 1)


def kl(q: Independent, p: Independent) -> Tensor:
    """KL(q || p) per sample, (B,)."""
    return kl_divergence(q, p)


def kl_to_prior(q: Independent) -> Tensor:
    """KL(q || N(0, I)) per sample, (B,)."""
    return kl_divergence(q, standard_normal(q))


class UnitGaussianLikelihood:
    """p(x | z) = N(x; mean(z), I), summed over every (valid) element of a sample.

    For :class:`Sequences` padded frames are masked out, so they contribute neither value nor
    gradient.
    """

    name = "gaussian"

    def log_prob(self, mean: Tensor, x: Modality) -> Tensor:
        """(B,) log-likelihood in nats; ``mean`` has the shape of ``x`` (padded data for Sequences)."""
        if isinstance(x, Sequences):
            # Decoders emit max(lengths) frames; extra all-padding frames of x are dropped.
            x = Sequences(x.data[:, : mean.shape[1]], x.lengths)
            elem = Normal(mean, 1.0).log_prob(x.data)
            mask = x.mask().unsqueeze(-1)
            return torch.where(mask, elem, torch.zeros_like(elem)).sum(dim=(1, 2))
        elem = Normal(mean, 1.0).log_prob(x)
        return elem.flatten(1).sum(dim=1)


LIKELIHOODS = {"gaussian": UnitGaussianLikelihood}


def make_likelihood(name: str) -> UnitGaussianLikelihood:
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
