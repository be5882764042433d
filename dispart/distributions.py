"""Distributions shared by all models: Gaussian posteriors/priors and observation likelihoods.

Everything is built on ``torch.distributions``; this module only adds what those objects do
not know about: masks for padded frames of sequences (feature vectors (B, T, D) or images
(B, T, C, H, W) for video), and the link between what a decoder emits (its *parameters*: a
mean for Gaussians, logits for Bernoulli and categorical likelihoods) and the mean returned by
``model.decode``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from dispart.batches.batch import Modality, Sequences

LOG_2PI = math.log(2 * math.pi)


def standard_normal(like: Independent) -> Independent:
    """The N(0, I) prior with the batch and event shape of ``like``."""
    mean = like.mean
    return Independent(Normal(torch.zeros_like(mean), torch.ones_like(mean)), 1)


def standard_normal_of(shape: tuple[int, ...], device=None, dtype=None) -> Independent:
    """N(0, I) with event shape ``shape[-1:]`` and batch shape ``shape[:-1]``."""
    zeros = torch.zeros(shape, device=device, dtype=dtype)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


def kl(q: Independent, p: Independent) -> Tensor:
    """KL(q || p) per sample, (B,)."""
    return kl_divergence(q, p)


def kl_to_prior(q: Independent) -> Tensor:
    """KL(q || N(0, I)) per sample, (B,)."""
    return kl_divergence(q, standard_normal(q))


class Likelihood:
    """p(x | z) given the decoder's output ``params``; summed over every (valid) element.

    Subclasses define the element-wise log density and the mean. For :class:`Sequences` padded
    frames are masked out, so they contribute neither value nor gradient.
    """

    name = "likelihood"

    def elementwise_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """The mean of p(x | z) (what ``model.decode`` returns)."""
        raise NotImplementedError

    def params_from_mean(self, mean: Tensor) -> Tensor:
        """Inverse of :meth:`mean` (clamped where the link is infinite)."""
        raise NotImplementedError

    def log_prob(self, params: Tensor, x: Modality) -> Tensor:
        """(B,) log-likelihood in nats, summed over every element after the batch dimension.

        ``params`` has the shape of ``x``: (B, *shape), or for :class:`Sequences` of any frame
        shape (B, T, *frame_shape) with T = max(lengths) (extra all-padding frames of ``x`` are
        dropped); frames past each length are masked (mask (B, T, 1, ..., 1)), so their values,
        however large, give neither value nor gradient.
        """
        if isinstance(x, Sequences):
            fits = (params.dim() == x.data.dim() and params.shape[0] == x.batch_size
                    and int(x.lengths.max()) <= params.shape[1] <= x.max_length
                    and tuple(params.shape[2:]) == x.frame_shape)
            if not fits:
                raise ValueError(
                    f"{self.name} likelihood: parameters of shape {tuple(params.shape)} do not fit "
                    f"Sequences of data shape {tuple(x.data.shape)} (max length "
                    f"{int(x.lengths.max())}): expected (B, T, *frame shape), max length <= T <= T_max")
            # Decoders emit max(lengths) frames; extra all-padding frames of x are dropped.
            x = Sequences(x.data[:, : params.shape[1]], x.lengths)
            elem = self.elementwise_log_prob(params, x.data)
            mask = x.mask()
            mask = mask.view(*mask.shape, *([1] * (elem.dim() - 2)))
            return torch.where(mask, elem, torch.zeros_like(elem)).sum(dim=tuple(range(1, elem.dim())))
        return self.elementwise_log_prob(params, x).flatten(1).sum(dim=1)

    def log_prob_of_mean(self, mean: Tensor, x: Modality) -> Tensor:
        return self.log_prob(self.params_from_mean(mean), x)


class UnitGaussianLikelihood(Likelihood):
    """p(x | z) = N(x; mean(z), I); the decoder emits the mean."""

    name = "gaussian"

    def elementwise_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return Normal(params, 1.0).log_prob(x)

    def mean(self, params: Tensor) -> Tensor:
        return params

    def params_from_mean(self, mean: Tensor) -> Tensor:
        return mean


class ScaledGaussianLikelihood(Likelihood):
    """p(x | z) = N(x; mean(z), diag(scale^2)) with a given ``scale`` (a tensor broadcasting
    against one example's elements, e.g. (E,) per feature, or a scalar); the decoder emits the
    mean. MDVAE's ``obs_scale="optimal"`` passes the square root of its per-dimension variance."""

    name = "gaussian (scaled)"

    def __init__(self, scale: Tensor) -> None:
        self.scale = scale

    def elementwise_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return Normal(params, self.scale).log_prob(x)

    def mean(self, params: Tensor) -> Tensor:
        return params

    def params_from_mean(self, mean: Tensor) -> Tensor:
        return mean


class BernoulliLikelihood(Likelihood):
    """p(x | z) = prod Bernoulli(x; sigmoid(logits(z))) for binarised data (e.g. binary MNIST).

    The decoder emits logits. Targets in [0, 1] that are not exactly 0/1 give the usual
    binary cross-entropy (support checks are off); binarise data for a proper likelihood
    (:func:`dispart.batches.labels.binarize`).
    """

    name = "bernoulli"

    def elementwise_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return Bernoulli(logits=params, validate_args=False).log_prob(x.to(params.dtype))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def params_from_mean(self, mean: Tensor) -> Tensor:
        return torch.logit(mean, eps=1e-6)


class CategoricalLikelihood(Likelihood):
    """p(x | z) = Categorical(x; softmax(logits(z))) for a label modality of shape (C,).

    The decoder emits (B, C) logits; ``x`` is either (B,) class indices or (B, C) one-hot
    (or soft) vectors, for which the log-likelihood is sum_c x_c log p_c.
    """

    name = "categorical"

    def log_prob(self, params: Tensor, x: Modality) -> Tensor:
        if isinstance(x, Sequences):
            raise ValueError("the categorical likelihood is for (B,) or (B, C) labels, not sequences")
        if x.dim() == 1:
            return Categorical(logits=params).log_prob(x.long())
        return (x.to(params.dtype) * torch.log_softmax(params, dim=-1)).sum(dim=-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.softmax(params, dim=-1)

    def params_from_mean(self, mean: Tensor) -> Tensor:
        return torch.log(mean.clamp_min(1e-12))


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "gaussian": UnitGaussianLikelihood,
    "bernoulli": BernoulliLikelihood,
    "categorical": CategoricalLikelihood,
}


def make_likelihood(name: str) -> Likelihood:
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
