"""VQ-VAE (van den Oord et al., 2017), frame-wise: the first stage of MDVAE's two-stage training.

One VQ-VAE per modality, without temporal modelling (Sadok et al. 2023, "two-stage training"):
every valid frame of a sequence is encoded, quantised and decoded on its own. Registered as
"vq_vae" (``dispart train`` trains one alone; MDVAE's trainer trains one per modality).

- Spectral frames ("sequence" kind, (D_in,)): an MLP (two ReLU layers of ``hidden``) maps a frame
  to ``frame_codes`` vectors of ``code_dim`` (a product quantiser: each vector picks its own code),
  and an MLP decodes them back.
- Image frames ("frames" kind, (C, H, W)): ``downsample`` 4x4 stride-2 convolutions (0: auto, one
  fewer than DSAE uses, 64x64 -> 8x8) of ``conv_width`` channels, a 3x3 and a 1x1 convolution
  give a map of ``code_dim`` channels whose every position is quantised; transposed
  convolutions decode it.
- :class:`~dispart.nn.quantize.VectorQuantizer`: nearest code, straight-through gradient,
  commitment loss beta ||z_e - sg(e)||^2, codebook by EMA updates (``ema``, default) or by the
  codebook loss; codes start on encodings of the first batch and (EMA) unused codes restart on
  random encodings (``restart``).

Objective per sequence (summed over its valid frames, averaged over the batch): -log p(x | z_q)
(the modality's likelihood, unit Gaussian for standardised spectra and video) + commitment
(+ codebook loss without EMA). Logged terms: rec_<m>, commitment, codebook (without EMA),
perplexity (exp entropy of the code usage in the batch).

In the model API the VQ-VAE has one latent "e" (dynamic, role "content", symbol z_q): per frame
the flattened codes, ``frame_codes * code_dim`` numbers (positions x code_dim for video).
``encode`` returns the quantised encodings as the mean of a unit-variance Gaussian (the VQ-VAE
has no posterior distribution; evaluation reads posterior means, and ``decode(encode(x).mean)``
is the VQ-VAE's reconstruction); ``decode`` quantises its input and decodes it (the generative
model of a VQ-VAE reads codes only); ``sample_prior`` draws every position's code uniformly from
the codebook (the VQ-VAE's prior). ``generative.priors["e"]`` is a N(0, I) placeholder that only
the generic ``elbo`` / ``prior`` helpers read: the VQ-VAE's objective has no KL term (a uniform
prior over K codes contributes the constant log K per position).

For stage 2, :meth:`FrameVQ.encode_frames` gives the *pre-quantisation* encodings z_e,
:meth:`FrameVQ.decode_frames` decodes (quantised) encodings to frames, and
:meth:`VQVAE.frame_state` is the weights of the encoder, quantiser and decoder as
:class:`FrameVQ` names them (MDVAE loads them into its frozen copy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from dispart.batches.batch import Batch, Sequences
from dispart.batches.modality import ModalitySpec
from dispart.distributions import Likelihood, make_likelihood
from dispart.models.base import Generative, LossOutput, MultimodalModel
from dispart.models.latents import Latent, declare
from dispart.models.priors import StandardNormalPrior, frame_mask
from dispart.nn.quantize import VectorQuantizer

LATENT = "e"  # the one latent of a VQ-VAE (used only in this file; declarations carry roles)


@dataclass(frozen=True)
class VQVAEConfig:
    """Frame-wise VQ-VAE hyper-parameters (the modality comes from the data).

    Attributes:
        code_dim: D, the size of each code vector.
        codebook_size: K, the number of codes (512 in van den Oord et al.).
        hidden: width of the MLPs of spectral frames.
        conv_width: channels of the convolutions of image frames.
        downsample: stride-2 convolutions of image frames (0: auto, 64x64 -> 8x8 positions).
        frame_codes: code vectors per spectral frame (a product quantiser; video frames have
            one per position of the downsampled map instead).
        beta: weight of the commitment loss (0.25 in the paper).
        ema: codebook updated by exponential moving averages (else by the codebook loss).
        decay: the EMA decay (0.99 in the paper).
        restart: with EMA, a code used by fewer than this many positions per batch (moving
            average) is restarted on a random encoding of the batch (0: never).
    """

    code_dim: int = 16
    codebook_size: int = 512
    hidden: int = 256
    conv_width: int = 64
    downsample: int = 0
    frame_codes: int = 8
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    restart: float = 1.0


class Encodings(Sequences):
    """Per-frame VQ-VAE encodings (B, T, E) of a modality, zero past each length: what MDVAE's
    likelihood is a density over (a marker type, so raw frames are never taken for them)."""


def auto_downsample(image_shape: Sequence[int]) -> int:
    """Stride-2 convolutions for a (C, H, W) frame when ``downsample`` is 0: one fewer than
    DSAE's :func:`~dispart.models.dsae.conv_layers` (64x64 -> 8x8, 32x32 -> 8x8), at least 1."""
    from dispart.models.dsae import conv_layers

    return max(1, conv_layers(image_shape) - 1)


class ConvCodeEncoder(nn.Module):
    """(N, C, H, W) -> (N, P, D): ``k`` 4x4 stride-2 convolutions, a 3x3 and a 1x1 convolution;
    the (D, H / 2^k, W / 2^k) map read position by position (row-major), P = (H / 2^k)(W / 2^k)."""

    def __init__(self, image_shape: Sequence[int], code_dim: int, width: int, k: int) -> None:
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        if k < 1 or h % 2 ** k or w % 2 ** k:
            raise ValueError(f"vq_vae: {k} stride-2 convolutions need H and W of {tuple(image_shape)} "
                             f"divisible by {2 ** k}")
        layers: list[nn.Module] = []
        for i in range(k):
            layers += [nn.Conv2d(c if i == 0 else width, width, 4, stride=2, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, code_dim, 1)]
        self.net = nn.Sequential(*layers)
        self.map_shape = (h // 2 ** k, w // 2 ** k)
        self.positions = self.map_shape[0] * self.map_shape[1]

    def forward(self, x: Tensor) -> Tensor:
        z = self.net(x)  # (N, D, h, w)
        return z.flatten(2).transpose(1, 2)  # (N, h*w, D)


class ConvCodeDecoder(nn.Module):
    """(N, P, D) -> (N, C, H, W) frame parameters: the inverse layout of :class:`ConvCodeEncoder`,
    a 3x3 convolution and ``k`` 4x4 stride-2 transposed convolutions."""

    def __init__(self, image_shape: Sequence[int], code_dim: int, width: int, k: int) -> None:
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        self.code_dim, self.map_shape = code_dim, (h // 2 ** k, w // 2 ** k)
        layers: list[nn.Module] = [nn.Conv2d(code_dim, width, 3, padding=1), nn.ReLU()]
        for i in range(k):
            last = i == k - 1
            layers.append(nn.ConvTranspose2d(width, c if last else width, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        n = z.shape[0]
        return self.net(z.transpose(1, 2).reshape(n, self.code_dim, *self.map_shape))


class MLPCodeEncoder(nn.Module):
    """(N, D_in) -> (N, P, D): two ReLU layers of ``hidden`` and a linear map to P * D."""

    def __init__(self, input_dim: int, code_dim: int, hidden: int, positions: int) -> None:
        super().__init__()
        self.positions, self.code_dim = positions, code_dim
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, positions * code_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(x.shape[0], self.positions, self.code_dim)


class MLPCodeDecoder(nn.Module):
    """(N, P, D) -> (N, D_out): two ReLU layers of ``hidden`` and a linear output layer."""

    def __init__(self, output_dim: int, code_dim: int, hidden: int, positions: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(positions * code_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, output_dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.flatten(1))


def check_config(who: str, spec: ModalitySpec, config: VQVAEConfig) -> None:
    """ValueError naming ``who`` and the field when ``config`` does not suit ``spec``."""
    if spec.kind not in ("sequence", "frames"):
        raise ValueError(f"{who}: a frame-wise VQ-VAE takes 'sequence' or 'frames' modalities, got "
                         f"{spec.name!r} of kind {spec.kind!r}")
    for field in ("code_dim", "codebook_size", "hidden", "conv_width", "frame_codes"):
        v = getattr(config, field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{who}: {field} must be an integer >= 1, got {v!r}")
    if isinstance(config.downsample, bool) or not isinstance(config.downsample, int) or config.downsample < 0:
        raise ValueError(f"{who}: downsample must be an integer >= 0 (0: auto), got {config.downsample!r}")
    if not config.beta >= 0:
        raise ValueError(f"{who}: beta must be >= 0, got {config.beta!r}")
    if not 0 <= config.decay < 1:
        raise ValueError(f"{who}: decay must be in [0, 1), got {config.decay!r}")
    if not config.restart >= 0:
        raise ValueError(f"{who}: restart must be >= 0, got {config.restart!r}")
    if spec.kind == "frames":
        k = config.downsample or auto_downsample(spec.shape)
        _, h, w = spec.shape
        if h % 2 ** k or w % 2 ** k:
            raise ValueError(f"{who}: frames of shape {spec.shape} cannot be downsampled {k} times "
                             f"(H and W must be divisible by {2 ** k}); set downsample")


class FrameVQOps:
    """Frame-level operations on an ``encoder`` ((N, *frame) -> (N, P, D)), a ``quantizer``
    (:class:`VectorQuantizer`) and a ``decoder`` ((N, P, D) -> (N, *frame) parameters) of one
    modality ``spec``; ``positions`` P, ``code_dim`` D, ``frame_likelihood`` p(x_t | codes)."""

    spec: ModalitySpec
    positions: int
    code_dim: int
    frame_likelihood: Likelihood
    encoder: nn.Module
    quantizer: VectorQuantizer
    decoder: nn.Module

    @property
    def encoding_dim(self) -> int:
        """E = P * D numbers per frame."""
        return self.positions * self.code_dim

    def encode_frames(self, x: Sequences) -> Tensor:
        """(B, T, E) pre-quantisation encodings z_e of every valid frame, zero past each length."""
        mask = x.mask()
        z = self.encoder(x.data[mask]).flatten(1)
        return z.new_zeros(*mask.shape, z.shape[1]).index_put((mask,), z)

    def quantize_frames(self, e: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, E) encodings -> the nearest codes position by position (no gradient), zero
        past each length."""
        mask = frame_mask(lengths.to(e.device), e.shape[1])
        rows = e[mask].reshape(-1, self.code_dim)
        q = self.quantizer.quantize(rows).reshape(-1, self.encoding_dim)
        return e.new_zeros(e.shape).index_put((mask,), q)

    def decode_frames(self, e: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, E) (quantised) encodings -> (B, T, *frame) decoder parameters, zero past each
        length (the decoder runs on valid frames only)."""
        if e.dim() != 3 or e.shape[-1] != self.encoding_dim:
            raise ValueError(f"{self.spec.name!r} VQ-VAE decoder expects (B, T, {self.encoding_dim}) "
                             f"encodings, got {tuple(e.shape)}")
        mask = frame_mask(lengths.to(e.device), e.shape[1])
        out = self.decoder(e[mask].reshape(-1, self.positions, self.code_dim))
        return out.new_zeros(*mask.shape, *out.shape[1:]).index_put((mask,), out)

    def decode_codes(self, e: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, E) encodings -> quantised -> decoded: (B, T, *frame) means of p(x_t | codes)."""
        params = self.decode_frames(self.quantize_frames(e, lengths), lengths)
        mean = self.frame_likelihood.mean(params)
        mask = frame_mask(lengths.to(e.device), e.shape[1])
        return mean * mask.view(*mask.shape, *([1] * (mean.dim() - 2))).to(mean.dtype)

    def sample_codes(self, n: int, lengths: Tensor) -> Tensor:
        """(n, T, E) encodings whose every position holds a code drawn uniformly, zero past
        each length (T = max(lengths))."""
        t = int(lengths.max())
        idx = torch.randint(0, self.quantizer.num_codes, (n, t, self.positions),
                            device=self.quantizer.codebook.device)
        e = self.quantizer.lookup(idx).reshape(n, t, self.encoding_dim)
        return e * frame_mask(lengths.to(e.device), t)[..., None].to(e.dtype)


def build_networks(spec: ModalitySpec, config: VQVAEConfig
                   ) -> tuple[nn.Module, VectorQuantizer, nn.Module, int]:
    """(encoder, quantizer, decoder, positions) of a frame-wise VQ-VAE over ``spec``."""
    check_config("vq_vae", spec, config)
    d = config.code_dim
    if spec.kind == "sequence":
        p = config.frame_codes
        encoder: nn.Module = MLPCodeEncoder(spec.shape[0], d, config.hidden, p)
        decoder: nn.Module = MLPCodeDecoder(spec.shape[0], d, config.hidden, p)
    else:
        k = config.downsample or auto_downsample(spec.shape)
        encoder = ConvCodeEncoder(spec.shape, d, config.conv_width, k)
        decoder = ConvCodeDecoder(spec.shape, d, config.conv_width, k)
        p = encoder.positions
    quantizer = VectorQuantizer(config.codebook_size, d, config.beta, config.ema, config.decay,
                                config.restart)
    return encoder, quantizer, decoder, p


class FrameVQ(nn.Module, FrameVQOps):
    """A frame-wise VQ-VAE of one modality as a plain module (``encoder``, ``quantizer``,
    ``decoder``): MDVAE's frozen first stage."""

    def __init__(self, spec: ModalitySpec, config: VQVAEConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        self.encoder, self.quantizer, self.decoder, self.positions = build_networks(spec, config)
        self.code_dim = config.code_dim
        self.frame_likelihood = make_likelihood(spec.likelihood)


class VQInference(nn.Module):
    """The VQ-VAE's encoder and quantiser (weights under ``inference.``)."""

    def __init__(self, encoder: nn.Module, quantizer: VectorQuantizer) -> None:
        super().__init__()
        self.encoder, self.quantizer = encoder, quantizer


class VQVAE(MultimodalModel, FrameVQOps):
    """Frame-wise VQ-VAE over one "sequence" or "frames" modality; latent "e" (see the module
    docstring)."""

    name = "vq_vae"
    config_class = VQVAEConfig

    def __init__(self, modalities: Sequence[ModalitySpec], code_dim: int = 16, codebook_size: int = 512,
                 hidden: int = 256, conv_width: int = 64, downsample: int = 0, frame_codes: int = 8,
                 beta: float = 0.25, ema: bool = True, decay: float = 0.99, restart: float = 1.0) -> None:
        super().__init__(modalities)
        if len(modalities) != 1:
            raise ValueError(f"vq_vae takes one modality (one VQ-VAE per modality), got "
                             f"{[s.name for s in modalities]}")
        spec = modalities[0]
        config = VQVAEConfig(code_dim, codebook_size, hidden, conv_width, downsample, frame_codes,
                             float(beta), bool(ema), float(decay), float(restart))
        encoder, quantizer, decoder, positions = build_networks(spec, config)
        self.spec, self.modality, self.positions = spec, spec.name, positions
        self.code_dim, self.codebook_size = code_dim, codebook_size
        self.hidden, self.conv_width = hidden, conv_width
        self.downsample, self.frame_codes = downsample, frame_codes
        self.beta, self.ema, self.decay, self.restart = float(beta), bool(ema), float(decay), float(restart)
        self.frame_likelihood = self.likelihoods[spec.name]
        self.latents = declare(Latent(LATENT, self.encoding_dim, (spec.name,), role="content",
                                      dynamic=True, symbol="z_q"))
        self.inference = VQInference(encoder, quantizer)
        self.generative = Generative(priors={LATENT: StandardNormalPrior(self.encoding_dim, dynamic=True)},
                                     decoders={spec.name: decoder})

    # the FrameVQOps parts, where the model API keeps them
    @property
    def encoder(self) -> nn.Module:  # type: ignore[override]
        return self.inference.encoder

    @property
    def quantizer(self) -> VectorQuantizer:  # type: ignore[override]
        return self.inference.quantizer

    @property
    def decoder(self) -> nn.Module:  # type: ignore[override]
        return self.generative.decoders[self.modality]

    def frame_state(self) -> dict[str, Tensor]:
        """The weights and buffers as :class:`FrameVQ` names them (encoder., quantizer., decoder.)."""
        state = {k: v for k, v in self.inference.state_dict().items()}
        state.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        return state

    # ----------------------------------------------------------------------------- API
    def _input(self, batch: Batch) -> Sequences:
        present = self.check_inputs(batch)
        if self.modality not in present:
            raise ValueError(f"vq_vae: encodes {self.modality!r}; the batch has {sorted(batch)}")
        if self.partial_masks(batch):
            raise ValueError(f"vq_vae: {self.modality!r} has rows marked absent; drop them first")
        return batch[self.modality]

    def encode(self, batch: Batch) -> dict[str, Independent]:
        """{"e": N(z_q, I)}: the quantised encodings (B, T, E) as the mean (see the module docstring)."""
        x = self._input(batch)
        with torch.no_grad():
            z_q = self.quantize_frames(self.encode_frames(x), x.lengths)
        return {LATENT: Independent(Normal(z_q, torch.ones_like(z_q)), 1)}

    def decode_params(self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
                      ) -> Tensor:
        """Decoder parameters (B, T, *frame) of the quantised ``latents["e"]`` (B, T, E)."""
        if modality != self.modality:
            raise ValueError(f"vq_vae: decodes {self.modality!r} only, got {modality!r}")
        if lengths is None:
            raise ValueError(f"vq_vae: decoding {modality!r} needs lengths ((B,) frames per sequence)")
        if LATENT not in latents:
            raise ValueError(f"vq_vae: decoding needs the latent {LATENT!r}, got {sorted(latents)}")
        e = latents[LATENT]
        return self.decode_frames(self.quantize_frames(e, lengths), lengths)

    def decode(self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
               ) -> Tensor:
        """Means (B, T, *frame) of p(x_t | codes) of the quantised ``latents["e"]``, zero past
        each length."""
        params = self.decode_params(latents, modality, lengths)
        mean = self.frame_likelihood.mean(params)
        mask = frame_mask(torch.as_tensor(lengths).to(mean.device), mean.shape[1])
        return mean * mask.view(*mask.shape, *([1] * (mean.dim() - 2))).to(mean.dtype)

    def sample_prior(self, batch_size: int, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Every position's code drawn uniformly from the codebook: {"e": (B, T, E)}."""
        if lengths is None:
            raise ValueError("vq_vae.sample_prior: lengths is required ((B,) frames per sequence)")
        return {LATENT: self.sample_codes(batch_size, torch.as_tensor(lengths))}

    def loss(self, batch: Batch) -> LossOutput:
        """Reconstruction + commitment (+ codebook) per sequence, summed over valid frames;
        in training mode the codebook is initialised / EMA-updated from the batch first."""
        x = self._input(batch)
        mask = x.mask()
        z_e = self.encoder(x.data[mask])  # (N, P, D)
        n, p, d = z_e.shape
        q = self.quantizer(z_e.reshape(n * p, d), update=self.training)
        frames = self.decoder(q.z_q.view(n, p, d))
        params = frames.new_zeros(*mask.shape, *frames.shape[1:]).index_put((mask,), frames)
        rec = self.frame_likelihood.log_prob(params, x)

        def per_row(v: Tensor) -> Tensor:
            return v.new_zeros(mask.shape).index_put((mask,), v.view(n, p).sum(1)).sum(1)

        commitment, codebook = per_row(q.commitment), per_row(q.codebook)
        total = -rec + commitment + codebook
        terms = {f"rec_{self.modality}": -rec.mean(), "commitment": commitment.mean()}
        if not self.ema:
            terms["codebook"] = codebook.mean()
        terms["perplexity"] = self.quantizer.perplexity(q.indices)
        return LossOutput(total.mean(), terms)

    @torch.no_grad()
    def reconstruct(self, batch: Batch, modality: str | None = None) -> Tensor:
        """Encode, quantise, decode: (B, T, *frame) means (eval mode, restored)."""
        if modality is not None and modality != self.modality:
            raise ValueError(f"vq_vae: reconstructs {self.modality!r} only, got {modality!r}")
        was = self.training
        self.eval()
        try:
            x = self._input(batch)
            return self.decode_codes(self.encode_frames(x), x.lengths)
        finally:
            self.train(was)
