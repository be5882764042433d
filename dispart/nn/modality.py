"""The networks built for one modality (from its :class:`~dispart.batches.modality.ModalitySpec`).

Every kind gets a pre-encoder (observation -> one (B, hidden) vector per example, for static
latents) and a decoder (one static latent vector -> the observation's likelihood parameters):

- "sequence" (B, T, D) feature frames: :class:`SequenceEncoder` / :class:`SequenceDecoder`
  (PVAE Appendix B, an LSTM each);
- "frames" (B, T, C, H, W) image sequences (video): :class:`ClipEncoder` (an image encoder on
  every valid frame, then an LSTM summarising the clip by its last valid state, as
  SequenceEncoder does for speech) / :class:`ClipDecoder` (an LSTM fed the latent at every step,
  as SequenceDecoder, then an image decoder on every valid frame's state);
- "image" (B, C, H, W): :class:`ImageEncoder` / :class:`ImageDecoder` (or, for a model that
  names a style part of its latent, :class:`WarpedImageDecoder`: see IMAGE_DECODERS);
- "categorical", "vector": :class:`MLPEncoder` / :class:`MLPDecoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec, as_one_hot
from dispart.nn.decoders import ImageDecoder, SequenceDecoder, WarpedImageDecoder
from dispart.nn.encoders import ImageEncoder, SequenceEncoder
from dispart.nn.frames import FrameLSTMEncoder, MeanBiLSTMEncoder, MelConvBiLSTMEncoder, SequenceSummary
from dispart.nn.video import ConvImageDecoder, VideoDecoder, VideoEncoder

# Convolution channels of the per-frame networks of "frames" modalities: those of the PVAE image
# networks (ImageEncoder (4, 8), ImageDecoder (16, 8)).
FRAME_ENCODER_CHANNELS = (4, 8)
FRAME_DECODER_CHANNELS = (16, 8)


# The activations of the MLP networks ("vector" and "categorical" modalities): "relu", or "swish"
# (x * sigmoid(x), as MVAE's reference code uses).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "swish": nn.SiLU}


# The initialisation of the first layer of a "categorical" modality's MLP (a Linear on one-hot
# classes): "linear" (torch's Linear default, U(+-1/sqrt(classes)) weights and bias) or
# "embedding" (N(0, 1) weights as MVAE's reference code's nn.Embedding, and a zero-initialised bias
# that is trained; nn.Embedding has none, and on one-hot inputs the bias adds nothing the weights
# cannot express). See docs/results.md (MVAE Tables 2-3) for what it changes.
CATEGORICAL_INITS = ("linear", "embedding")


# The decoders of "image" modalities: "paper" (PVAE Appendix B's ImageDecoder on the whole latent)
# or "warp" (WarpedImageDecoder: the content part of the latent draws, the style part only warps
# and thickens the drawing; for models whose latent has a style part, PVAE's z^m).
IMAGE_DECODERS = ("paper", "warp")


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class MLPEncoder(nn.Module):
    """(B, D) vectors (or (B,) class indices when ``categorical``) -> (B, hidden): two layers with
    ``activation`` (see ACTIVATIONS); ``categorical_init`` (see CATEGORICAL_INITS) initialises the
    first layer of a categorical input."""

    def __init__(self, input_dim: int, hidden: int = 512, categorical: bool = False,
                 activation: str = "relu", categorical_init: str = "linear") -> None:
        super().__init__()
        if categorical_init not in CATEGORICAL_INITS:
            raise ValueError(f"categorical_init must be one of {list(CATEGORICAL_INITS)}, "
                             f"got {categorical_init!r}")
        self.input_dim, self.out_dim, self.categorical = input_dim, hidden, categorical
        act = _activation(activation)
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), act(),
                                 nn.Linear(hidden, hidden), act())
        if categorical and categorical_init == "embedding":
            nn.init.normal_(self.net[0].weight)
            nn.init.zeros_(self.net[0].bias)

    def forward(self, x: Tensor) -> Tensor:
        x = as_one_hot(x, self.input_dim) if self.categorical else x.float()
        return self.net(x)


class MLPDecoder(nn.Module):
    """(B, L) latent -> (B, D) likelihood parameters (means or logits): ``layers`` hidden layers
    of width ``hidden`` with ``activation`` (see ACTIVATIONS) + linear."""

    def __init__(self, latent_dim: int, output_dim: int, hidden: int = 512,
                 activation: str = "relu", layers: int = 2) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"MLPDecoder: layers must be >= 1, got {layers}")
        self.output_dim = output_dim
        act = _activation(activation)
        body: list[nn.Module] = []
        for i in range(layers):
            body += [nn.Linear(latent_dim if i == 0 else hidden, hidden), act()]
        self.net = nn.Sequential(*body, nn.Linear(hidden, output_dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ClipEncoder(nn.Module):
    """(B, T, C, H, W) image-sequence Sequences -> (B, hidden), one vector per clip.

    A :class:`~dispart.nn.video.VideoEncoder` maps every valid frame to ``hidden`` features
    (padded frames are never computed), a one-layer forward LSTM runs over them and the state at
    each clip's last valid frame summarises it (:class:`~dispart.nn.frames.SequenceSummary`,
    mode "last"), so padding changes neither the output nor any gradient.
    """

    def __init__(self, frame_shape: Sequence[int], hidden: int = 512,
                 channels: Sequence[int] = FRAME_ENCODER_CHANNELS) -> None:
        super().__init__()
        self.frames = VideoEncoder(frame_shape, channels, hidden)
        self.summary = SequenceSummary(FrameLSTMEncoder(self.frames.out_dim, hidden), "last")
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.out_dim = self.summary.out_dim

    def forward(self, x: Sequences) -> Tensor:
        return self.summary(Sequences(self.frames(x), x.lengths))


class CroppedImageDecoder(nn.Module):
    """(N, L) -> (N, C, H, W) for any H, W: a :class:`~dispart.nn.video.ConvImageDecoder` for
    H, W rounded up to multiples of 2^len(channels), cropped to the top-left H x W."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], channels: Sequence[int],
                 hidden: int) -> None:
        super().__init__()
        c, h, w = (int(n) for n in image_shape)
        k = 2 ** len(tuple(channels))
        padded = (c, -(-h // k) * k, -(-w // k) * k)
        self.net = ConvImageDecoder(latent_dim, padded, channels, hidden)
        self.image_shape = (c, h, w)

    def forward(self, z: Tensor) -> Tensor:
        _, h, w = self.image_shape
        return self.net(z)[..., :h, :w]


class ClipDecoder(nn.Module):
    """(B, L) static latent and (B,) lengths -> (B, max(lengths), C, H, W) frame parameters.

    As :class:`~dispart.nn.decoders.SequenceDecoder` for speech, a one-layer LSTM is fed the
    same latent at every step (so frames can change over time); a
    :class:`~dispart.nn.video.VideoDecoder` maps the state of every valid frame to an image
    (FC ``hidden`` -> transposed convolutions). Frames past each length are exactly zero.
    """

    def __init__(self, latent_dim: int, frame_shape: Sequence[int], hidden: int = 512,
                 channels: Sequence[int] = FRAME_DECODER_CHANNELS) -> None:
        super().__init__()
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.lstm = nn.LSTM(latent_dim, hidden, batch_first=True)
        image = CroppedImageDecoder(hidden, self.frame_shape, channels, hidden)
        self.frames = VideoDecoder(self.frame_shape, dynamic_dims=(hidden,), image_decoder=image)

    def forward(self, z: Tensor, lengths: Tensor) -> Tensor:
        if z.dim() != 2:
            raise ValueError(f"ClipDecoder expects a (B, L) static latent, got {tuple(z.shape)}")
        lengths = lengths.long()
        t_max = int(lengths.max())
        h, _ = self.lstm(z.unsqueeze(1).expand(-1, t_max, -1).contiguous())
        return self.frames(h, (), lengths)  # runs on valid frames only


SEQUENCE_ENCODERS = ("lstm", "bilstm", "conv_bilstm")


def build_pre_encoder(spec: ModalitySpec, hidden: int = 512, sequence_encoder: str = "lstm",
                      activation: str = "relu", categorical_init: str = "linear",
                      image_channels: int = 4) -> nn.Module:
    """Observation -> (B, hidden) vector; the module exposes ``out_dim``. ``sequence_encoder`` picks
    the reader of "sequence" modalities: "lstm" (the paper's, :class:`SequenceEncoder`) or
    "bilstm" (:class:`~dispart.nn.frames.MeanBiLSTMEncoder`) or "conv_bilstm" (the same behind
    convolutions along the Mel axis, :class:`~dispart.nn.frames.MelConvBiLSTMEncoder`);
    ``activation`` that of the MLPs of "categorical" and "vector" modalities (the other networks
    keep their ReLUs);
    ``categorical_init`` the first layer's of "categorical" ones (see CATEGORICAL_INITS);
    ``image_channels`` the channels of the first convolution of "image" ones (the second has
    twice as many; 4 is PVAE Appendix B's (4, 8))."""
    _activation(activation)
    if image_channels < 1:
        raise ValueError(f"image_channels must be >= 1, got {image_channels}")
    if sequence_encoder not in SEQUENCE_ENCODERS:
        raise ValueError(f"sequence_encoder must be one of {SEQUENCE_ENCODERS}, got {sequence_encoder!r}")
    if spec.kind == "sequence":
        if sequence_encoder == "bilstm":
            return MeanBiLSTMEncoder(spec.shape[0], hidden)
        if sequence_encoder == "conv_bilstm":
            return MelConvBiLSTMEncoder(spec.shape[0], hidden)
        return SequenceEncoder(spec.shape[0], hidden)
    if spec.kind == "frames":
        return ClipEncoder(spec.shape, hidden)
    if spec.kind == "image":
        return ImageEncoder(spec.shape, (image_channels, 2 * image_channels), hidden)  # type: ignore[arg-type]
    if spec.kind in ("categorical", "vector"):
        return MLPEncoder(spec.shape[0], hidden, categorical=spec.kind == "categorical",
                          activation=activation, categorical_init=categorical_init)
    raise ValueError(f"modality {spec.name!r}: unknown kind {spec.kind!r}")


def build_decoder(spec: ModalitySpec, latent_dim: int, hidden: int = 512,
                  activation: str = "relu", mlp_layers: int = 2, image_decoder: str = "paper",
                  style_dim: int = 0) -> nn.Module:
    """(B, latent_dim) [+ (B,) lengths for "sequence" and "frames"] -> likelihood parameters with
    the observation's shape (means for Gaussian likelihoods, logits for Bernoulli and categorical
    ones): (B, max(lengths), *spec.shape) for the dynamic kinds, zero past each length.
    ``activation`` and ``mlp_layers`` (hidden layers): those of the MLPs of "categorical" and
    "vector" modalities. ``image_decoder`` (see IMAGE_DECODERS): "warp" makes the last
    ``style_dim`` latent dimensions of an "image" modality a style that only warps and thickens
    what the others draw (other kinds ignore it)."""
    _activation(activation)
    if image_decoder not in IMAGE_DECODERS:
        raise ValueError(f"image_decoder must be one of {list(IMAGE_DECODERS)}, got {image_decoder!r}")
    if spec.kind == "image" and image_decoder == "warp":
        if not 0 < style_dim < latent_dim:
            raise ValueError(f"modality {spec.name!r}: the 'warp' image decoder needs a style part "
                             f"0 < style_dim < latent_dim ({latent_dim}), got {style_dim}")
        return WarpedImageDecoder(latent_dim - style_dim, style_dim, spec.shape,  # type: ignore[arg-type]
                                  hidden=hidden)
    if spec.kind == "sequence":
        return SequenceDecoder(latent_dim, spec.shape[0], hidden)
    if spec.kind == "frames":
        return ClipDecoder(latent_dim, spec.shape, hidden)
    if spec.kind == "image":
        return ImageDecoder(latent_dim, spec.shape, hidden=hidden)  # type: ignore[arg-type]
    if spec.kind in ("categorical", "vector"):
        return MLPDecoder(latent_dim, spec.shape[0], hidden, activation, mlp_layers)
    raise ValueError(f"modality {spec.name!r}: unknown kind {spec.kind!r}")

