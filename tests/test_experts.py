"""Products and quotients of Gaussian experts against closed-form values; numerical stability."""

import math

import pytest
import torch
from torch.distributions import Normal

from dispart.nn.encoders import diag_gaussian
from dispart.nn.experts import (
    constrained_logvar,
    prior_floored_logvar,
    product_of_experts,
    product_quotient_of_experts,
    quotient_of_experts,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, 1)


def test_product_of_two_experts_closed_form():
    # N(1, 1) x N(3, 1/3): T = 1 + 3 = 4, mean = (1 + 9) / 4, var = 1/4.
    mean, logvar = product_of_experts(t(1.0, 3.0), torch.log(t(1.0, 1 / 3)))
    assert mean.item() == pytest.approx(2.5, rel=1e-6)
    assert logvar.exp().item() == pytest.approx(0.25, rel=1e-6)
    # With the prior expert N(0, 1): T = 5, mean = 10 / 5.
    mean, logvar = product_of_experts(t(0.0, 1.0, 3.0), torch.log(t(1.0, 1.0, 1 / 3)))
    assert mean.item() == pytest.approx(2.0, rel=1e-6)
    assert logvar.exp().item() == pytest.approx(0.2, rel=1e-6)


def test_product_density_is_normalised_product_of_densities():
    g = torch.Generator().manual_seed(0)
    means, logvars = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    mean, logvar = product_of_experts(means, logvars)
    xs = torch.randn(5, 2, 4, generator=g)
    prod = Normal(means[:, None], torch.exp(0.5 * logvars[:, None])).log_prob(xs[None]).sum(0)
    poe = Normal(mean, torch.exp(0.5 * logvar)).log_prob(xs)
    diff = poe - prod  # constant in x (the normaliser)
    assert torch.allclose(diff, diff[:1].expand_as(diff), atol=1e-4)


def test_masked_experts_are_ignored_whatever_their_values():
    means = torch.tensor([[[1.0]], [[float("nan")]], [[3.0]]]).expand(3, 2, 1).clone()
    logvars = torch.tensor([[[0.0]], [[1e30]], [[-1.0]]]).expand(3, 2, 1).clone()
    means[1, 1] = 5.0
    logvars[1, 1] = 0.5
    mask = torch.tensor([[True, True], [False, True], [True, True]])
    mean, logvar = product_of_experts(means, logvars, mask)
    ref0 = product_of_experts(means[[0, 2], :1], logvars[[0, 2], :1])
    ref1 = product_of_experts(means[:, 1:], logvars[:, 1:])
    assert torch.allclose(mean[0], ref0[0][0]) and torch.allclose(logvar[0], ref0[1][0])
    assert torch.allclose(mean[1], ref1[0][0]) and torch.allclose(logvar[1], ref1[1][0])
    with pytest.raises(ValueError, match="no expert"):
        product_of_experts(means, logvars, torch.zeros(3, 2, dtype=torch.bool))


@pytest.mark.parametrize("extreme", [1e4, -1e4, 80.0, -80.0, 1e30, -1e30])
def test_no_nan_with_extreme_log_variances(extreme):
    means = torch.randn(3, 4, 5, requires_grad=True)
    logvars = torch.zeros(3, 4, 5)
    logvars[1] = extreme
    logvars.requires_grad_(True)
    m0, m1, m2 = means.detach()
    # Closed forms. Product: an expert of variance e^extreme (> e^80) counts for nothing next to
    # two N(m, 1) experts (T = 2, mean (m0 + m2) / 2); one of variance e^-extreme dominates (its
    # mean, log-variance clamped at -30). Product/quotient with raw log-variances (0, x, 0):
    # constrained log-variances -log 2, -softplus(x), -log 2; for x -> -inf expert 1 is the
    # prior (T = 2 + 1 + 2 - 2 = 3, mean (2 m0 + m1 + 2 m2) / 3), for x -> +inf it dominates.
    if extreme > 0:
        product = ((m0 + m2) / 2, torch.full_like(m0, -math.log(2)))
        quotient = (m1, torch.full_like(m0, -30.0))
    else:
        product = (m1, torch.full_like(m0, -30.0))
        quotient = ((2 * m0 + m1 + 2 * m2) / 3, torch.full_like(m0, -math.log(3)))
    for fn, (want_mean, want_logvar) in (
            (lambda: product_of_experts(means, logvars), product),
            (lambda: product_quotient_of_experts(means, constrained_logvar(logvars),
                                                 torch.zeros(4, 5), torch.zeros(4, 5)), quotient)):
        mean, logvar = fn()
        assert torch.isfinite(mean).all() and torch.isfinite(logvar).all()
        assert torch.allclose(mean, want_mean, atol=1e-5)
        assert torch.allclose(logvar, want_logvar, atol=1e-5)
        q = diag_gaussian(mean, logvar)  # a valid Normal: positive finite scale
        (q.rsample().sum() + mean.sum() + logvar.sum()).backward()
        assert torch.isfinite(means.grad).all() and torch.isfinite(logvars.grad).all()
        means.grad = logvars.grad = None


def test_quotient_closed_form_and_constraint():
    # N(2, 1/4) / N(0, 1): T = 4 - 1 = 3, mean = (4 * 2 - 0) / 3, var = 1/3.
    mean, logvar = quotient_of_experts(t(2.0), torch.log(t(0.25)), t(0.0), t(0.0))
    assert mean.item() == pytest.approx(8 / 3, rel=1e-5)
    assert logvar.exp().item() == pytest.approx(1 / 3, rel=1e-5)
    # power 2 with N(1, 1/2) in the denominator: T = 4 - 2 * 2 ... invalid; with N(1, 1): T = 2.
    mean, logvar = quotient_of_experts(t(2.0), torch.log(t(0.25)), t(1.0), t(0.0), power=2.0)
    assert mean.item() == pytest.approx((8 - 2) / 2, rel=1e-5)
    assert logvar.exp().item() == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError, match="V2 > power"):
        quotient_of_experts(t(2.0), torch.log(t(0.25)), t(1.0), math.log(0.5) + t(0.0), power=2.0)


def test_product_quotient_is_product_over_prior_powers_with_masks():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(3, 4, 2, generator=g)
    logvars = constrained_logvar(torch.randn(3, 4, 2, generator=g))
    zeros = torch.zeros(4, 2)
    mask = torch.tensor([[True, True, False, True], [True, False, False, True],
                         [True, True, True, False]])
    mean, logvar = product_quotient_of_experts(means, logvars, zeros, zeros, mask)
    for b in range(4):
        idx = mask[:, b].nonzero().squeeze(1)
        n = len(idx)
        # precision = sum T_i - (n - 1) * 1; mean = sum T_i mu_i / precision.
        prec = torch.exp(-logvars[idx, b]).sum(0) - (n - 1)
        mu = (torch.exp(-logvars[idx, b]) * means[idx, b]).sum(0) / prec
        assert torch.allclose(logvar[b], -torch.log(prec), atol=1e-5)
        assert torch.allclose(mean[b], mu, atol=1e-5)
    # One expert: the expert itself (no quotient).
    assert torch.allclose(mean[2], means[2, 2], atol=1e-6)


def test_variance_constraints():
    raw = torch.linspace(-50, 50, 11)
    assert (constrained_logvar(raw) <= 0).all()
    assert (constrained_logvar(raw, 1.5) <= 1.5).all()
    # logvar = prior - softplus(raw), softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|).
    softplus = [max(x, 0.0) + math.log1p(math.exp(-abs(x))) for x in raw.tolist()]
    assert torch.allclose(constrained_logvar(raw), -torch.tensor(softplus), atol=1e-6)
    assert torch.allclose(constrained_logvar(raw, 1.5), 1.5 - torch.tensor(softplus), atol=1e-6)
    assert constrained_logvar(torch.tensor(0.0)).item() == pytest.approx(-math.log(2))
    assert torch.equal(prior_floored_logvar(torch.tensor([-1.0, 2.0])), torch.tensor([-1.0, 0.0]))
