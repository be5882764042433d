"""Small builders shared by the model tests: flat "vector" modalities and random batches of them;
networks with known outputs and numpy closed forms, so objectives can be checked against values
computed by hand (independently of the model's code)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dispart.batches.modality import ModalitySpec
from dispart.nn.encoders import diag_gaussian


def vec(name: str, d: int = 3) -> ModalitySpec:
    return ModalitySpec(name, "vector", (d,))


def vec_batch(names, b: int = 6, d: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(b, d, generator=g) for n in names}


# ------------------------------------------------------------------ networks with known outputs
class FixedHead(nn.Module):
    """A Gaussian head that ignores its input: always N(mean, exp(logvar)) (B rows)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.logvar = mean, logvar

    def forward(self, h):
        return diag_gaussian(self.mean, self.logvar)


class FixedExpertHead(FixedHead):
    """An MVAE expert head that ignores its input: always (mean, raw log-variance)."""

    def forward(self, h):
        return self.mean, self.logvar


class LinearDecoder(nn.Module):
    """params = z W^T + c; for sequences the same frame for each of max(lengths) frames, NOT
    zeroed past a sequence's length (so only the likelihood's mask can drop padded frames)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, z, lengths=None):
        out = z @ self.weight.T + self.bias
        if lengths is None:
            return out
        return out[:, None].expand(-1, int(lengths.max()), -1)


def known_gaussian(g: torch.Generator, b: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, logvar), (b, d) each, from a seeded generator."""
    return torch.randn(b, d, generator=g), 0.5 * torch.randn(b, d, generator=g)


# ------------------------------------------------------------------ closed forms (float64 numpy)
def np64(t) -> np.ndarray:
    return t.detach().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def kl_diag(m1, lv1, m2, lv2) -> np.ndarray:
    """KL(N(m1, e^lv1) || N(m2, e^lv2)) per row, summed over the last axis."""
    m1, lv1, m2, lv2 = map(np64, (m1, lv1, m2, lv2))
    return 0.5 * (lv2 - lv1 + (np.exp(lv1) + (m1 - m2) ** 2) / np.exp(lv2) - 1).sum(-1)


def kl_std(m, lv) -> np.ndarray:
    """KL(N(m, e^lv) || N(0, I)) per row."""
    return kl_diag(m, lv, np.zeros_like(np64(m)), np.zeros_like(np64(lv)))


def unit_gauss_logpdf(x, mean) -> np.ndarray:
    """Element-wise log N(x; mean, 1)."""
    return -0.5 * math.log(2 * math.pi) - 0.5 * (np64(x) - np64(mean)) ** 2


def sample(mean, logvar, eps) -> np.ndarray:
    """The reparameterised sample mean + std * eps."""
    return np64(mean) + np.exp(0.5 * np64(logvar)) * np64(eps)


def rbf(a, b) -> np.ndarray:
    """PVAE's kernel exp(-||a - b||^2 / 2) row by row."""
    return np.exp(-0.5 * ((np64(a) - np64(b)) ** 2).sum(-1))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lstm_prior_params(prior, z) -> tuple[np.ndarray, np.ndarray]:
    """(mean, logvar) (B, T, D) of an LSTMPrior's p(z_t | z_<t), by a numpy loop over frames
    (PyTorch gate order i, f, g, o), reading z_<t from ``z`` (B, T, D) and zeros at t = 0."""
    lstm, head = prior.lstm, prior.head
    w_ih, w_hh = np64(lstm.weight_ih_l0), np64(lstm.weight_hh_l0)
    b = np64(lstm.bias_ih_l0) + np64(lstm.bias_hh_l0)
    w_out, b_out = np64(head.weight), np64(head.bias)
    z = np64(z)
    n, t_max, d = z.shape
    hdim = w_hh.shape[1]
    h, c = np.zeros((n, hdim)), np.zeros((n, hdim))
    means, logvars = [], []
    for t in range(t_max):
        x = np.zeros((n, d)) if t == 0 else z[:, t - 1]
        gates = x @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = np.split(gates, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out = h @ w_out.T + b_out
        means.append(out[:, :d])
        logvars.append(out[:, d:])
    return np.stack(means, 1), np.stack(logvars, 1)


def normal_log_prob(x, mean, logvar) -> np.ndarray:
    """log N(x; mean, e^logvar) summed over the last axis."""
    x, mean, logvar = map(np64, (x, mean, logvar))
    return (-0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / np.exp(logvar))).sum(-1)
