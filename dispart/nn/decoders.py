"""Decoders: latent vector -> mean of the observation distribution.

PVAE Appendix B: the speech decoder is a one-layer LSTM fed the same latent vector at every
step, followed by a linear layer shared across steps; the image decoder is FC 512 -> FC
7x7x16 -> two 4x4 stride-2 transposed convolutions (8 channels, then the image channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SequenceDecoder(nn.Module):
    """(B, L) latent and (B,) lengths -> (B, T_max, D) frame means, zero past each length.

    Frames past a sequence's length are computed (see SequenceEncoder for why) but zeroed, so
    they carry no value or gradient into any loss.

    The LSTM's input is the same z at every step, so its input projection W_ih z + b_ih + b_hh
    is the same at every step too. When gradients are recorded on the CPU (training) and
    ``hoist`` is True, it is computed once per sequence and the recurrence runs as a loop of
    ``addmm``s on it (:meth:`hoisted_states`): the backward pass then needs no per-step input
    gradient or weight gradient of W_ih, which made a training step a few percent faster than
    the fused oneDNN LSTM kernel on the expanded input (docs/results.md, Throughput). Without
    gradients (evaluation, generation) or on a GPU the fused kernel is faster and is used. Both
    paths use the same ``nn.LSTM`` parameters (the state-dict keys are unchanged) and give the
    same states to float tolerance.
    """

    def __init__(self, latent_dim: int, output_dim: int, hidden: int = 512, hoist: bool = True) -> None:
        super().__init__()
        self.lstm = nn.LSTM(latent_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, output_dim)
        self.output_dim = output_dim
        self.hoist = hoist

    def forward(self, z: Tensor, lengths: Tensor) -> Tensor:
        t_max = int(lengths.max())
        if self._hoisted(z):
            h = self.hoisted_states(z, t_max)
        else:
            h, _ = self.lstm(z.unsqueeze(1).expand(-1, t_max, -1).contiguous())
        mean = self.out(h)
        valid = torch.arange(t_max, device=z.device)[None, :] < lengths.to(z.device)[:, None]
        return mean * valid.unsqueeze(-1)

    def _hoisted(self, z: Tensor) -> bool:
        """Whether :meth:`forward` runs :meth:`hoisted_states`: ``hoist``, on the CPU, recording gradients."""
        return (self.hoist and z.device.type == "cpu" and torch.is_grad_enabled()
                and (z.requires_grad or self.lstm.weight_hh_l0.requires_grad))

    def hoisted_states(self, z: Tensor, steps: int) -> Tensor:
        """(B, steps, hidden) LSTM states for the input z at every step, with the input projection
        computed once: gates_t = (W_ih z + b_ih + b_hh) + W_hh h_{t-1} (PyTorch's gate order i, f, g, o)."""
        lstm = self.lstm
        x_gates = F.linear(z, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
        w_hh = lstm.weight_hh_l0.t()
        h = z.new_zeros(z.shape[0], lstm.hidden_size)
        c = torch.zeros_like(h)
        states = []
        for _ in range(steps):
            i, f, g, o = torch.addmm(x_gates, h, w_hh).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        return torch.stack(states, dim=1)


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


# Bounds of WarpedImageDecoder's transform: each entry of the 2x2 linear part differs from the
# identity's by at most WARP_LINEAR (0.4: determinant >= 0.2, so no mirror image, no 180-degree
# turn that would make a 6 a 9), the shift is at most WARP_SHIFT of the half-width.
WARP_LINEAR = 0.4
WARP_SHIFT = 0.25


class WarpedImageDecoder(nn.Module):
    """(B, content_dim + style_dim) latent [z^s, z^m] -> (B, C, H, W) pixel means (or logits),
    where the style part can only *redraw* what the content part draws (not the paper's).

    The content z^s draws an image through the paper's :class:`ImageDecoder`; the style z^m goes
    through a small MLP to a bounded affine transform (slant, size, rotation, position: the
    linear part within ``WARP_LINEAR`` of the identity per entry, the shift within
    ``WARP_SHIFT``) applied by bilinear resampling, and to a stroke weight a in (-1, 1) that
    blends the warped image towards its 3x3 dilation (a > 0: thicker strokes) or erosion (a < 0:
    thinner). A style latent that reaches the image only through these few numbers cannot draw
    another digit, so writing style (slant, ink) can be transferred without the digit following
    it. At initialisation the transform is the identity and a = 0.
    """

    def __init__(self, content_dim: int, style_dim: int, image_shape: tuple[int, int, int] = (1, 28, 28),
                 hidden: int = 512, style_hidden: int = 64) -> None:
        super().__init__()
        if content_dim < 1 or style_dim < 1:
            raise ValueError(f"WarpedImageDecoder: content_dim ({content_dim}) and style_dim "
                             f"({style_dim}) must be >= 1")
        self.content_dim, self.style_dim = content_dim, style_dim
        self.template = ImageDecoder(content_dim, image_shape, hidden=hidden)
        self.style = nn.Sequential(nn.Linear(style_dim, style_hidden), nn.ReLU(),
                                   nn.Linear(style_hidden, 7))
        nn.init.zeros_(self.style[-1].weight)
        nn.init.zeros_(self.style[-1].bias)
        self.register_buffer("identity", torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
                             persistent=False)

    def transform(self, style: Tensor) -> tuple[Tensor, Tensor]:
        """(B, style_dim) -> ((B, 2, 3) affine matrices in grid coordinates, (B,) stroke weights)."""
        raw = torch.tanh(self.style(style))
        linear = raw[:, :4].view(-1, 2, 2) * WARP_LINEAR
        shift = raw[:, 4:6].unsqueeze(-1) * WARP_SHIFT
        theta = self.identity + torch.cat([linear, shift], dim=-1)
        return theta, raw[:, 6]

    def forward(self, z: Tensor) -> Tensor:
        if z.shape[-1] != self.content_dim + self.style_dim:
            raise ValueError(f"WarpedImageDecoder: latent of size {z.shape[-1]}, expected "
                             f"{self.content_dim} (content) + {self.style_dim} (style)")
        image = self.template(z[:, :self.content_dim])
        theta, stroke = self.transform(z[:, self.content_dim:])
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        image = F.grid_sample(image, grid, padding_mode="border", align_corners=False)
        dilated = F.max_pool2d(image, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-image, 3, stride=1, padding=1)
        a = stroke.view(-1, 1, 1, 1)
        return image + a.clamp(min=0) * (dilated - image) + (-a).clamp(min=0) * (eroded - image)
