"""Priors owned by the generative model: shapes, the LSTM prior against a numpy loop, sampling
that respects lengths, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import lstm_prior_params, normal_log_prob

from dispart.models.priors import LSTMPrior, StandardNormalPrior, frame_mask


def test_standard_normal_prior_shapes_and_values():
    static = StandardNormalPrior(3)
    p = static.distribution(4)
    assert p.batch_shape == (4,) and p.event_shape == (3,)
    x = torch.tensor([[0.0, 1.0, -2.0]] * 4)
    expected = -0.5 * (3 * np.log(2 * np.pi) + 0 + 1 + 4)
    assert np.allclose(p.log_prob(x).numpy(), expected, rtol=1e-6)
    dyn = StandardNormalPrior(2, dynamic=True)
    q = dyn.distribution(3, lengths=torch.tensor([5, 2, 1]))
    assert q.batch_shape == (3, 5) and q.event_shape == (2,)
    assert dyn.distribution(3, z=torch.zeros(3, 7, 2)).batch_shape == (3, 7)
    assert static.sample(5).shape == (5, 3)
    assert not list(static.state_dict())  # nothing saved: old weight files keep loading


def test_frame_mask():
    m = frame_mask(torch.tensor([3, 1, 2]))
    assert m.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert frame_mask(torch.tensor([1]), 3).tolist() == [[True, False, False]]


def test_sampling_respects_lengths():
    torch.manual_seed(0)
    lengths = torch.tensor([4, 1, 3])
    for prior in (StandardNormalPrior(2, dynamic=True), LSTMPrior(2, hidden=5)):
        z = prior.sample(3, lengths)
        assert z.shape == (3, 4, 2)
        for b, n in enumerate(lengths.tolist()):
            assert torch.all(z[b, n:] == 0)
            assert torch.all(z[b, :n] != 0)


def test_lstm_prior_log_prob_matches_a_hand_rolled_loop():
    torch.manual_seed(1)
    prior = LSTMPrior(3, hidden=4)
    z = torch.randn(2, 5, 3)
    p = prior.distribution(2, torch.tensor([5, 3]), z=z)
    assert p.batch_shape == (2, 5) and p.event_shape == (3,)
    mean, logvar = lstm_prior_params(prior, z)
    assert np.allclose(p.mean.detach().numpy(), mean, atol=1e-5)
    assert np.allclose(p.variance.detach().log().numpy(), logvar, atol=1e-5)
    assert np.allclose(p.log_prob(z).detach().numpy(), normal_log_prob(z, mean, logvar), atol=1e-4)


def test_lstm_prior_frame_t_sees_only_earlier_frames():
    torch.manual_seed(2)
    prior = LSTMPrior(2, hidden=3)
    z = torch.randn(1, 4, 2)
    changed = z.clone()
    changed[0, 2] += 5.0  # frames 0..2 of p do not depend on z_2
    a = prior.distribution(1, z=z).mean
    b = prior.distribution(1, z=changed).mean
    assert torch.equal(a[0, :3], b[0, :3]) and not torch.equal(a[0, 3], b[0, 3])


def test_lstm_prior_ancestral_sample_follows_its_conditionals():
    # The sample's frame t is drawn from p(z_t | z_<t) of the sample itself: with a tiny fixed
    # variance it equals the teacher-forced mean.
    torch.manual_seed(3)
    prior = LSTMPrior(2, hidden=3)
    with torch.no_grad():
        prior.head.bias[2:] = -40.0  # log-variance -40: sigma ~ 2e-9
        prior.head.weight[2:] = 0.0
    z = prior.sample(2, torch.tensor([4, 4]))
    mean = prior.distribution(2, z=z).mean
    assert torch.allclose(z, mean, atol=1e-6)


def test_prior_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs lengths"):
        StandardNormalPrior(2, dynamic=True).distribution(3)
    with pytest.raises(ValueError, match="lengths must have shape"):
        LSTMPrior(2, 3).sample(3, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="needs z"):
        LSTMPrior(2, 3).distribution(3, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"z must be \(3, T, 2\)"):
        LSTMPrior(2, 3).distribution(3, z=torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="size must be >= 1"):
        StandardNormalPrior(0)
