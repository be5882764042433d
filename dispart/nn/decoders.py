"""Decoders: latent vector -> mean of the observation distribution.

PVAE Appendix B: the speech decoder is a one-layer LSTM fed the same latent vector at every
step, followed by a linear layer shared across steps; the image decoder is FC 512 -> FC
7x7x16 -> two 4x4 stride-2 transposed convolutions (8 channels, then the image channels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SequenceDecoder(nn.Module):
    """(B, L) latent and (B,) lengths -> (B, T_max, D) frame means, zero past each length.

    Frames past a sequence's length are computed (see SequenceEncoder for why) but zeroed, so
    they carry no value or gradient into any loss.
    """

    def __init__(self, latent_dim: int, output_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.lstm = nn.LSTM(latent_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, output_dim)
        self.output_dim = output_dim

    def forward(self, z: Tensor, lengths: Tensor) -> Tensor:
        t_max = int(lengths.max())
        h, _ = self.lstm(z.unsqueeze(1).expand(-1, t_max, -1).contiguous())
        mean = self.out(h)
        valid = torch.arange(t_max, device=z.device)[None, :] < lengths.to(z.device)[:, None]
        return mean * valid.unsqueeze(-1)


class ImageDecoder(nn.Module):
    """(B, L) latent -> (B, C, H, W) pixel means (H, W divisible by 4)."""

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        hidden: int = 512,
        base_channels: int = 16,
        mid_channels: int = 8,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        self.base = (base_channels, h // 4, w // 4)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, base_channels * (h // 4) * (w // 4)),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(base_channels, mid_channels, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(mid_channels, c, kernel_size=4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(-1, *self.base))
