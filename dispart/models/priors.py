"""Priors p(z) owned by a model's generative model, for static and dynamic latents.

Every prior offers

- ``distribution(batch_size, lengths=None, z=None)``: an ``Independent`` Normal with event shape
  (D,) and batch shape (B,) for a static latent or (B, T) for a dynamic one (T = max(lengths),
  or z.shape[1]); a learned autoregressive prior is conditioned, teacher-forced, on the given
  z (B, T, D), so that ``distribution(...).log_prob(z)`` is log p(z_t | z_<t) per frame;
- ``sample(batch_size, lengths=None)``: z drawn from the prior, (B, D) static or (B, T, D)
  dynamic with the frames past each length set to zero.

Frames past a sequence's length are not masked here: KL terms and log-probabilities are summed
over valid frames with the frame mask (:func:`dispart.objectives.kl_dynamic`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal


def frame_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B, T) bool, True for frames t < lengths[b]; T = max_len or max(lengths)."""
    lengths = torch.as_tensor(lengths)
    t = int(lengths.max()) if max_len is None else int(max_len)
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def _check_lengths(name: str, batch_size: int, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        raise ValueError(f"{name}: a dynamic latent needs lengths ((B,) frames per sequence)")
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (batch_size,):
        raise ValueError(f"{name}: lengths must have shape ({batch_size},), got {tuple(lengths.shape)}")
    if bool((lengths < 1).any()):
        raise ValueError(f"{name}: lengths must be >= 1, got min {int(lengths.min())}")
    return lengths


class Prior(nn.Module):
    """Base class of priors: ``size`` D of one vector and whether the latent is ``dynamic``."""

    def __init__(self, size: int, dynamic: bool) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"{type(self).__name__}: size must be >= 1, got {size}")
        self.size, self.dynamic = int(size), bool(dynamic)
        # Follows .to(device/dtype); not saved (no key in state dicts).
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def distribution(self, batch_size: int, lengths: Tensor | None = None, z: Tensor | None = None
                     ) -> Independent:
        raise NotImplementedError

    def sample(self, batch_size: int, lengths: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def _frames(self, batch_size: int, lengths: Tensor | None, z: Tensor | None) -> int:
        """T for a dynamic latent, from z (B, T, D) if given, else max(lengths)."""
        if z is not None:
            if z.dim() != 3 or z.shape[0] != batch_size or z.shape[-1] != self.size:
                raise ValueError(f"{type(self).__name__}: z must be ({batch_size}, T, {self.size}), "
                                 f"got {tuple(z.shape)}")
            if lengths is not None:
                _check_lengths(type(self).__name__, batch_size, lengths)
            return int(z.shape[1])
        return int(_check_lengths(type(self).__name__, batch_size, lengths).max())


class StandardNormalPrior(Prior):
    """p(z) = N(0, I), per example (static) or independently per frame (dynamic)."""

    def __init__(self, size: int, dynamic: bool = False) -> None:
        super().__init__(size, dynamic)

    def distribution(self, batch_size: int, lengths: Tensor | None = None, z: Tensor | None = None
                     ) -> Independent:
        """N(0, I): batch shape (B,) static, (B, T) dynamic; event shape (D,)."""
        shape = (batch_size, self.size)
        if self.dynamic:
            shape = (batch_size, self._frames(batch_size, lengths, z), self.size)
        zeros = torch.zeros(shape, device=self._anchor.device, dtype=self._anchor.dtype)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def sample(self, batch_size: int, lengths: Tensor | None = None) -> Tensor:
        """(B, D) or (B, T, D) draws, frames past each length zeroed."""
        z = self.distribution(batch_size, lengths).sample()
        if self.dynamic:
            z = z * frame_mask(lengths.to(z.device), z.shape[1])[..., None].to(z.dtype)
        return z


class LSTMPrior(Prior):
    """Learned p(z_t | z_<t) = N(mu_t, diag sigma_t^2) for a dynamic latent (DSAE's prior).

    An LSTM (hidden units ``hidden``) reads z_<t, with a zero vector as the input at t = 0;
    a linear layer maps its state h_t to (mu_t, log sigma_t^2).
    """

    def __init__(self, size: int, hidden: int) -> None:
        super().__init__(size, dynamic=True)
        if int(hidden) < 1:
            raise ValueError(f"LSTMPrior: hidden must be >= 1, got {hidden}")
        self.hidden = int(hidden)
        self.lstm = nn.LSTM(self.size, self.hidden, batch_first=True)
        self.head = nn.Linear(self.hidden, 2 * self.size)

    def _normal(self, h: Tensor) -> Independent:
        mean, logvar = self.head(h).chunk(2, dim=-1)
        return Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)

    def distribution(self, batch_size: int, lengths: Tensor | None = None, z: Tensor | None = None
                     ) -> Independent:
        """p(z_t | z_<t) for t = 1..T, batch shape (B, T), teacher-forced on ``z`` (B, T, D)
        (the posterior sample during training). Frames past a length depend only on earlier
        frames, so valid frames never see padding."""
        if z is None:
            raise ValueError("LSTMPrior.distribution needs z (B, T, D): p(z_t | z_<t) is conditioned "
                             "on earlier frames; use sample() to draw from the prior")
        self._frames(batch_size, lengths, z)
        inputs = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
        h, _ = self.lstm(inputs)
        return self._normal(h)

    def sample(self, batch_size: int, lengths: Tensor | None = None) -> Tensor:
        """Ancestral sample (B, T, D), T = max(lengths); frames past each length zeroed."""
        lengths = _check_lengths("LSTMPrior", batch_size, lengths)
        t_max = int(lengths.max())
        x = torch.zeros(batch_size, 1, self.size, device=self._anchor.device,
                        dtype=self._anchor.dtype)
        state = None
        frames = []
        for _ in range(t_max):
            h, state = self.lstm(x, state)
            x = self._normal(h).sample()
            frames.append(x)
        z = torch.cat(frames, dim=1)
        return z * frame_mask(lengths.to(z.device), t_max)[..., None].to(z.dtype)
