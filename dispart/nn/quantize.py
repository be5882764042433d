"""Vector quantisation (VQ-VAE, van den Oord et al. 2017, section 3): a codebook of K vectors.

:class:`VectorQuantizer` maps each row z_e of an (M, D) tensor to its nearest codebook vector
e_k (squared Euclidean distance) and returns, per row:

- ``z_q``: the straight-through value z_e + sg(e_k - z_e): e_k forward, the identity backward,
  so the decoder's gradient reaches the encoder unchanged (eq. 3's gradient copy);
- ``commitment``: beta ||z_e - sg(e_k)||^2 (trains the encoder only);
- ``codebook``: ||sg(z_e) - e_k||^2, the codebook loss (trains the codebook; zero with EMA).

With ``ema=True`` (the paper's appendix A.1) the codebook is not a parameter but a buffer
updated in training mode by exponential moving averages of the counts N_k and sums m_k of the
rows assigned to each code, e_k = m_k / N_k, N_k Laplace-smoothed (a code that is never chosen
keeps a finite value). With ``ema=False`` the codebook is a parameter trained by the codebook loss.

The first training call (``update=True``) sets the codebook to K rows of its input drawn at
random (with replacement when there are fewer than K rows): codes start where the encodings
are, so few of them are dead from the start. With EMA updates, a code whose moving-average
count falls below ``restart`` rows per batch (the encoder has moved away from it) is restarted
on a random row of the batch (Dhariwal et al. 2020, Jukebox's random restarts; ``restart=0``
turns this off). Under DDP (``torch.distributed`` initialised) the EMA counts and sums are summed
over processes and the rows drawn by rank 0 are used everywhere, so every rank keeps the same
codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Quantized:
    """What :meth:`VectorQuantizer.forward` returns, one entry per input row (M rows).

    Attributes:
        z_q: (M, D) straight-through quantised vectors (the code forward, identity gradient).
        indices: (M,) int64 index of the chosen code.
        commitment: (M,) beta ||z_e - sg(e)||^2.
        codebook: (M,) ||sg(z_e) - e||^2 (zeros with EMA updates: the codebook has no gradient).
    """

    z_q: Tensor
    indices: Tensor
    commitment: Tensor
    codebook: Tensor


def _all_reduce(t: Tensor) -> Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


class VectorQuantizer(nn.Module):
    """A codebook of ``num_codes`` vectors of size ``dim``; rows are quantised to the nearest.

    Args:
        num_codes: K.
        dim: D, the size of each code (the last axis of the input).
        beta: weight of the commitment loss (the paper's 0.25).
        ema: update the codebook by exponential moving averages (a buffer) instead of the
            codebook loss (a parameter).
        decay: the EMA decay gamma (0.99 in the paper).
        restart: with EMA, codes whose moving-average count is below this many rows per batch
            are restarted on random input rows (0: never).
        eps: Laplace smoothing of the EMA counts.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = True,
                 decay: float = 0.99, restart: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        for name, v in (("num_codes", num_codes), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"VectorQuantizer: {name} must be an integer >= 1, got {v!r}")
        if not beta >= 0:
            raise ValueError(f"VectorQuantizer: beta must be >= 0, got {beta!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"VectorQuantizer: decay must be in [0, 1), got {decay!r}")
        if not restart >= 0:
            raise ValueError(f"VectorQuantizer: restart must be >= 0, got {restart!r}")
        self.num_codes, self.dim, self.beta, self.ema = num_codes, dim, float(beta), bool(ema)
        self.decay, self.restart, self.eps = float(decay), float(restart), float(eps)
        init = torch.randn(num_codes, dim)
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("code_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def nearest(self, z: Tensor) -> Tensor:
        """(M,) index of the nearest code of each row of ``z`` (M, D) (squared distance)."""
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer expects (M, {self.dim}) rows, got {tuple(z.shape)}")
        e = self.codebook.detach()
        d = z.detach().pow(2).sum(1, keepdim=True) - 2 * z.detach() @ e.T + e.pow(2).sum(1)[None]
        return d.argmin(dim=1)

    def lookup(self, indices: Tensor) -> Tensor:
        """The code vectors of ``indices`` (any shape) -> (*indices.shape, D)."""
        return self.codebook[indices]

    @torch.no_grad()
    def quantize(self, z: Tensor) -> Tensor:
        """(M, D) -> the nearest code of each row (no gradient, no update)."""
        return self.lookup(self.nearest(z))

    def forward(self, z: Tensor, update: bool = False) -> Quantized:
        """Quantise (M, D) rows; ``update`` (training) initialises / EMA-updates the codebook
        first, from these rows, and the rows are then quantised with the updated codebook."""
        if update:
            self._update(z.detach())
        idx = self.nearest(z)
        e = self.lookup(idx)
        commitment = self.beta * (z - e.detach()).pow(2).sum(dim=1)
        codebook = (z.detach() - e).pow(2).sum(dim=1) if not self.ema else z.new_zeros(len(z))
        z_q = z + (e - z).detach()
        return Quantized(z_q, idx, commitment, codebook)

    @torch.no_grad()
    def _update(self, z: Tensor) -> None:
        if not bool(self.initialised):
            self._init_from(z)
        if not self.ema:
            return
        idx = self.nearest(z)
        onehot = torch.zeros(len(z), self.num_codes, device=z.device, dtype=z.dtype)
        onehot[torch.arange(len(z), device=z.device), idx] = 1
        counts = _all_reduce(onehot.sum(0))
        sums = _all_reduce(onehot.T @ z)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
        self.codebook.copy_(self.code_sum / smoothed[:, None])
        if self.restart > 0:
            dead = self.cluster_size < self.restart  # the same on every rank (summed counts)
            if bool(dead.any()):
                picked = self._draw_rows(z, int(dead.sum()))
                self.codebook[dead] = picked
                self.code_sum[dead] = picked
                self.cluster_size[dead] = 1.0

    @staticmethod
    def _draw_rows(z: Tensor, k: int) -> Tensor:
        """``k`` rows of ``z`` at random (without replacement when there are enough), the same
        on every DDP rank (rank 0's)."""
        if len(z) >= k:
            rows = torch.randperm(len(z), device=z.device)[:k]
        else:
            rows = torch.randint(0, len(z), (k,), device=z.device)
        picked = z[rows].clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(picked, src=0)
        return picked

    @torch.no_grad()
    def _init_from(self, z: Tensor) -> None:
        picked = self._draw_rows(z, self.num_codes)
        self.codebook.data.copy_(picked)
        if self.ema:
            self.code_sum.copy_(picked)
            self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    def perplexity(self, indices: Tensor) -> Tensor:
        """exp(entropy) of the code usage in ``indices``: 1 (one code) .. K (all codes equally)."""
        counts = torch.bincount(indices.flatten(), minlength=self.num_codes).to(torch.float32)
        p = counts / counts.sum().clamp_min(1)
        return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
