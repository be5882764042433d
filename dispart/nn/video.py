"""Frame encoders and decoders for image sequences: a video is a sequence of images.

A video batch is a :class:`~dispart.batches.batch.Sequences` with data (B, T, C, H, W). The
encoder applies an image encoder (:class:`~dispart.nn.encoders.ImageEncoder`, a stack of 4x4
stride-2 convolutions: 64x64x3 sprites, 3-channel mouth crops, 28x28 digits) to every valid
frame, the time axis folded into the batch; the decoder maps per-frame latents (and static
ones, broadcast over time) back to (B, T, C, H, W) with a transposed-convolution stack.
Padded frames are never computed and come out as exact zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dispart.nn.encoders import ImageEncoder
from dispart.nn.frames import FramewiseDecoder, FramewiseEncoder


def _check_image_shape(image_shape: Sequence[int], who: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{who}: image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}"
        )
    return shape  # type: ignore[return-value]


class ConvImageDecoder(nn.Module):
    """(N, L) latent -> (N, C, H, W) pixel parameters: FC ``hidden`` -> FC to (channels[0], H/2^k,
    W/2^k) -> k 4x4 stride-2 transposed convolutions through channels[1:] to C (k = len(channels)).

    With ``channels=(16, 8)`` this is :class:`~dispart.nn.decoders.ImageDecoder` (PVAE Appendix B);
    (64, 64, 32, 32) suits 64x64 sprites. H and W must be divisible by 2^k.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (16, 8),
        hidden: int = 512,
    ) -> None:
        super().__init__()
        c, h, w = _check_image_shape(image_shape, "ConvImageDecoder")
        channels = tuple(int(ch) for ch in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"ConvImageDecoder: channels must be positive, got {channels}")
        k = 2 ** len(channels)
        if h % k or w % k:
            raise ValueError(
                f"ConvImageDecoder: image_shape {(c, h, w)} needs H and W divisible by 2^len(channels) = {k}"
            )
        self.image_shape = (c, h, w)
        self.base = (channels[0], h // k, w // k)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, channels[0] * (h // k) * (w // k)), nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels, channels[1:] + (c,), strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        self.deconv = nn.Sequential(*layers[:-1])  # no ReLU on the output parameters

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(-1, *self.base))


class VideoEncoder(FramewiseEncoder):
    """(B, T, C, H, W) Sequences -> (B, T, out_dim): an image encoder on every valid frame.

    ``image_encoder`` maps (N, C, H, W) -> (N, out_dim) and exposes ``out_dim``; by default an
    :class:`ImageEncoder` with the given ``channels`` and ``hidden``.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (4, 8),
        hidden: int = 512,
        image_encoder: nn.Module | None = None,
    ) -> None:
        shape = _check_image_shape(image_shape, "VideoEncoder")
        if image_encoder is None:
            if 2 ** len(channels) > min(shape[1:]):
                raise ValueError(
                    f"VideoEncoder: {len(channels)} stride-2 convolutions shrink image_shape {shape} "
                    "to nothing"
                )
            image_encoder = ImageEncoder(shape, tuple(channels), hidden)
        super().__init__(image_encoder, shape)


class VideoDecoder(FramewiseDecoder):
    """[static..., z_t] per valid frame -> (B, T, C, H, W) pixel parameters, zero past each length.

    ``image_decoder`` maps (N, sum of latent dims) -> (N, C, H, W); by default a
    :class:`ConvImageDecoder` with the given ``channels`` and ``hidden``.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        dynamic_dims: Sequence[int] = (),
        static_dims: Sequence[int] = (),
        channels: Sequence[int] = (16, 8),
        hidden: int = 512,
        image_decoder: nn.Module | None = None,
    ) -> None:
        shape = _check_image_shape(image_shape, "VideoDecoder")
        in_dim = sum(dynamic_dims) + sum(static_dims)
        if in_dim == 0:
            raise ValueError("VideoDecoder: dynamic_dims and static_dims are both empty")
        if image_decoder is None:
            image_decoder = ConvImageDecoder(in_dim, shape, channels, hidden)
        super().__init__(image_decoder, shape, dynamic_dims, static_dims)
