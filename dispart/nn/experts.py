"""Products and quotients of diagonal Gaussian experts (MVAE, Wu & Goodman 2018, section 2.1).

A product of Gaussians N(mu_i, V_i) is Gaussian with precision T = sum_i T_i (T_i = 1 / V_i) and
mean mu = (sum_i T_i mu_i) / T. A quotient N(mu_1, V_1) / N(mu_2, V_2)^p is Gaussian with
precision T = T_1 - p T_2 and mean (T_1 mu_1 - p T_2 mu_2) / T, well defined only where
T_1 > p T_2 (V_2 > p V_1) element-wise.

Everything is computed from log-variances in log space (softmax / logsumexp / log1p), so
log-variances of +-1e4 give neither NaN nor inf; the resulting log-variance is clamped to
``LOGVAR_RANGE`` so that the Normal built from it has a positive, finite scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

LOGVAR_RANGE = (-30.0, 30.0)


def _clamp(logvar: Tensor) -> Tensor:
    return logvar.clamp(*LOGVAR_RANGE)


def product_of_experts(
    means: Tensor, logvars: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Product of N experts stacked on dim 0.

    Args:
        means, logvars: (N, B, D).
        mask: optional (N, B) bool, False where an expert is absent for that row (its values
            are ignored, whatever they are).
    Returns:
        (mean, logvar), each (B, D).
    """
    log_precision = -logvars
    if mask is not None:
        if not bool(mask.any(dim=0).all()):
            raise ValueError("product_of_experts: a row has no expert present")
        present = mask.unsqueeze(-1).expand_as(means)
        log_precision = log_precision.masked_fill(~present, float("-inf"))
        means = torch.where(present, means, torch.zeros_like(means))
    log_total = torch.logsumexp(log_precision, dim=0)
    weights = torch.softmax(log_precision, dim=0)  # T_i / T
    mean = (weights * means).sum(dim=0)
    return mean, _clamp(-log_total)


def quotient_of_experts(
    mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor, power: float | Tensor = 1.0
) -> tuple[Tensor, Tensor]:
    """N(mean1, V1) / N(mean2, V2)^power, element-wise.

    ``power`` is a number or a tensor broadcasting against the means (e.g. (B, 1): one power
    per row, 0 meaning "no quotient"). Raises ValueError where the result is not a Gaussian
    (power * T2 >= T1, i.e. the constraint V2 > power * V1 is violated).
    """
    power = torch.as_tensor(power, dtype=mean1.dtype, device=mean1.device)
    # r = power * T2 / T1, computed in log space; the quotient exists iff r < 1.
    log_r = torch.log(power) + (logvar1 - logvar2)
    r = torch.exp(log_r)
    if bool((r >= 1).any()):
        raise ValueError("quotient_of_experts: the denominator is not broader than the numerator "
                         "(need V2 > power * V1 element-wise)")
    mean = (mean1 - r * mean2) / (1 - r)
    logvar = logvar1 - torch.log1p(-r)
    return mean, _clamp(logvar)


def product_quotient_of_experts(
    means: Tensor,
    logvars: Tensor,
    prior_mean: Tensor,
    prior_logvar: Tensor,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """prod_i q(z | x_i) / p(z)^(n - 1) over the n experts present in each row (MVAE-Q, eq. 4).

    Args:
        means, logvars: (N, B, D) experts q(z | x_i).
        prior_mean, prior_logvar: (B, D) (or broadcastable) prior p(z).
        mask: optional (N, B) bool of present experts.
    """
    n = (torch.full(means.shape[:2], True, device=means.device) if mask is None else mask).sum(dim=0)
    mean, logvar = product_of_experts(means, logvars, mask)
    power = (n - 1).to(means.dtype).unsqueeze(-1)
    prior_mean = prior_mean.expand_as(mean)
    prior_logvar = prior_logvar.expand_as(mean)
    return quotient_of_experts(mean, logvar, prior_mean, prior_logvar, power)


def constrained_logvar(raw: Tensor, prior_logvar: Tensor | float = 0.0) -> Tensor:
    """The MVAE-Q variance constraint: an expert's variance never exceeds the prior's.

    logvar = prior_logvar - softplus(raw) <= prior_logvar, so every expert's precision is at
    least the prior's and prod_i q_i / p^(n-1) has precision T_0 + sum_i (T_i - T_0) >= T_0 > 0
    for any subset of experts.
    """
    return prior_logvar - softplus(raw)


def prior_floored_logvar(logvar: Tensor, prior_logvar: Tensor | float = 0.0) -> Tensor:
    """Clamp an expert's log-variance at the prior's (an expert broader than the prior is read
    as the prior itself), which makes the product/quotient form valid for any subset."""
    return torch.minimum(logvar, torch.as_tensor(prior_logvar, dtype=logvar.dtype, device=logvar.device))


class ExpertHead(nn.Module):
    """Linear map from a feature vector to an expert's (mean, raw log-variance), (B, D) each.

    Unlike :class:`dispart.nn.encoders.GaussianHead` it returns tensors, not a distribution:
    experts are combined in log-variance space before any Normal is built.
    """

    def __init__(self, in_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.linear = nn.Linear(in_dim, 2 * latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.linear(h).chunk(2, dim=-1)
        return mean, raw

