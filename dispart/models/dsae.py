"""Disentangled Sequential Autoencoder (Li & Mandt, 2018), section 2 (eqs. 1-4).

Generative model, eq. (1): p(x_1:T, z_1:T, f) = p(f) prod_t p(z_t | z_<t) p(x_t | z_t, f), z_0 = 0:

- p(f) = N(0, I) (:class:`StandardNormalPrior`), f static, role "style" (the speaker, the
  character's look);
- p(z_t | z_<t): the learned :class:`LSTMPrior`, z_1:T dynamic, role "content" (what changes
  over time); during training it is teacher-forced on the *posterior* sample of z_1:T
  (``MultimodalModel.kl_to_priors``), so KL_t = KL(q(z_t | .) || p(z_t | z_<t = sample));
- p(x_t | z_t, f): a frame decoder fed [f, z_t] (an MLP or an LSTM for spectral frames, a
  transposed-convolution stack per frame for images).

Inference, ``q`` in the config:

- "factorised", eq. (3): q(f | x_1:T) prod_t q(z_t | x_t): every frame is encoded on its own
  (MLP for spectral frames, convolutions for images) and a per-frame Gaussian head gives
  q(z_t | x_t); q(f | x_1:T) reads the per-frame features with a bi-LSTM (both directions'
  final states);
- "full", eq. (4): q(f | x_1:T) q(z_1:T | f, x_1:T): a bi-LSTM over [features_t, f], then a
  forward LSTM over its states, then the per-frame head. The ELBO draws f first and uses the
  SAME draw for q(z_1:T | f, x) and for p(x_t | z_t, f) (``elbo(..., samples={f: draw})``).
  ``encode`` (posterior means for evaluation and generation) conditions q(z_1:T | f, x) on the
  mean of q(f | x_1:T).

Generation helpers: :meth:`DSAE.swap` (f of one sequence, z_1:T of another),
:meth:`DSAE.generate` (any of f, z_1:T fixed, the others drawn from their priors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, Sequences
from dispart.batches.modality import ModalitySpec
from dispart.models.base import Generative, LossOutput, MultimodalModel, PriorSample, _as_lengths
from dispart.models.latents import Latent, declare
from dispart.models.priors import LSTMPrior, StandardNormalPrior, frame_mask
from dispart.nn.encoders import GaussianHead
from dispart.nn.frames import (
    FrameGaussianHead,
    FrameLSTMDecoder,
    FrameLSTMEncoder,
    FrameMLPDecoder,
    FramewiseEncoder,
    SequenceSummary,
    zero_padding,
)
from dispart.nn.modality import MLPEncoder
from dispart.nn.video import VideoDecoder, VideoEncoder

STATIC, DYNAMIC = "f", "z"  # latent names: used only inside this file (declarations carry roles)
Q_CHOICES = ("factorised", "full")
ENCODERS = {"sequence": ("mlp",), "frames": ("conv",)}  # "auto" picks the first
DECODERS = {"sequence": ("mlp", "lstm"), "frames": ("conv",)}


@dataclass(frozen=True)
class DSAEConfig:
    """DSAE hyper-parameters (the modality comes from the data).

    Defaults: the 16-dim f and z_t of the paper's Table 2 (TIMIT, factorised q: EER 4.78% from
    mu_f); configs/dsae_sprites.yaml and configs/dsae_speech.yaml state the per-data sizes.

    Attributes:
        f_dim: size of the static latent f.
        z_dim: size of each dynamic latent z_t.
        hidden: width of the frame MLPs, of the encoder LSTMs (per direction) and of the decoder.
        prior_hidden: hidden units of the LSTM prior p(z_t | z_<t).
        q: "factorised" (eq. 3) or "full" (eq. 4).
        frame_encoder: "auto" | "mlp" (spectral frames) | "conv" (image frames).
        frame_decoder: "auto" | "mlp" | "lstm" (spectral frames) | "conv" (image frames).
        conv_width: channels of the convolution stacks of image frames.
        beta_f, beta_z: weights of KL(q(f) || p(f)) and of the dynamic KL in the training loss
            (1, 1: the paper's ELBO; the logged "elbo" term is always the unweighted ELBO).
        z_colour_jitter: image frames only, not the paper's: in training, q(z_t | .) reads the
            frames with their colour channels shuffled and scaled per sequence
            (:func:`colour_jitter`) while q(f | x_1:T) and the likelihood see the true frames, so
            z_1:T cannot say which colours a character wears and the decoder must take them
            from f. Evaluation and generation encode the true frames.
    """

    f_dim: int = 16
    z_dim: int = 16
    hidden: int = 256
    prior_hidden: int = 256
    q: str = "factorised"
    frame_encoder: str = "auto"
    frame_decoder: str = "auto"
    conv_width: int = 64
    beta_f: float = 1.0
    beta_z: float = 1.0
    z_colour_jitter: bool = False


JITTER_GAIN = (0.6, 1.4)  # range of the per-channel gains of colour_jitter


def colour_jitter(frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, T, C, H, W) frames in [0, 1] -> the same frames with, per sequence, the C channels in
    a random order and each scaled by a gain uniform in ``JITTER_GAIN``, clipped to [0, 1]
    (zeros stay zero: padding and black background are kept)."""
    if frames.dim() != 5:
        raise ValueError(f"colour_jitter needs (B, T, C, H, W) frames, got {tuple(frames.shape)}")
    b, _, c = frames.shape[:3]
    order = torch.argsort(torch.rand(b, c, generator=generator, device=frames.device), dim=1)
    shuffled = torch.gather(frames, 2, order[:, None, :, None, None].expand_as(frames))
    low, high = JITTER_GAIN
    gain = low + (high - low) * torch.rand(b, 1, c, 1, 1, generator=generator, device=frames.device)
    return (shuffled * gain.to(frames.dtype)).clamp(0.0, 1.0)


def conv_layers(image_shape: Sequence[int]) -> int:
    """Number of stride-2 (de)convolutions for a (C, H, W) frame: the largest k <= 4 with H and W
    divisible by 2^k and the smallest side still >= 4 after k halvings (64x64 -> 4, 32x32 -> 3,
    28x28 -> 2)."""
    _, h, w = (int(s) for s in image_shape)
    k = 0
    while k < 4 and h % 2 ** (k + 1) == 0 and w % 2 ** (k + 1) == 0 and min(h, w) // 2 ** (k + 1) >= 4:
        k += 1
    return k


def _choice(value: str, allowed: tuple[str, ...], field: str, kind: str) -> str:
    if value == "auto":
        return allowed[0]
    if value not in allowed:
        raise ValueError(f"dsae: {field}={value!r} does not suit a {kind!r} modality; "
                         f"choose 'auto' or one of {list(allowed)}")
    return value


class DSAEInference(nn.Module):
    """q(f | x_1:T) and q(z_1:T | x) ("factorised") or q(z_1:T | f, x_1:T) ("full").

    ``frames``: per-frame features (B, T, F), zero past each length; ``f_summary`` + ``f_head``:
    q(f | x_1:T), batch shape (B,); ``z_head`` (after ``z_bilstm`` + ``z_rnn`` for "full"):
    q(z_t | .), batch shape (B, T).
    """

    def __init__(self, spec: ModalitySpec, f_dim: int, z_dim: int, hidden: int, q: str,
                 encoder: str, conv_width: int) -> None:
        super().__init__()
        self.q = q
        if encoder == "mlp":
            self.frames = FramewiseEncoder(MLPEncoder(spec.shape[0], hidden))
        else:
            k = conv_layers(spec.shape)
            self.frames = VideoEncoder(spec.shape, channels=(conv_width,) * k, hidden=hidden)
        feat = self.frames.out_dim
        self.f_summary = SequenceSummary(FrameLSTMEncoder(feat, hidden, bidirectional=True), mode="ends")
        self.f_head = GaussianHead(self.f_summary.out_dim, f_dim)
        if q == "full":
            self.z_bilstm = FrameLSTMEncoder(feat + f_dim, hidden, bidirectional=True)
            self.z_rnn = FrameLSTMEncoder(self.z_bilstm.out_dim, hidden)
            self.z_head = FrameGaussianHead(hidden, z_dim)
        else:
            self.z_head = FrameGaussianHead(feat, z_dim)

    def features(self, x: Sequences) -> Tensor:
        """(B, T, F) per-frame features, zero past each length."""
        return self.frames(x)

    def q_f(self, h: Tensor, lengths: Tensor) -> Independent:
        """q(f | x_1:T) from the features (B, T, F): batch shape (B,), event (f_dim,)."""
        return self.f_head(self.f_summary(Sequences(h, lengths)))

    def q_z(self, h: Tensor, lengths: Tensor, f: Tensor | None = None) -> Independent:
        """q(z_t | x_t) (factorised) or q(z_t | f, x_1:T) (full, ``f`` (B, f_dim) required):
        batch shape (B, T), event (z_dim,); parameters past each length are N(0, I)'s."""
        if self.q == "factorised":
            return self.z_head(h, lengths)
        if f is None:
            raise ValueError("dsae (full q): q(z_1:T | f, x_1:T) needs a value of f")
        hf = torch.cat([h, f[:, None].expand(-1, h.shape[1], -1)], dim=-1)
        states = self.z_bilstm(Sequences(zero_padding(hf, lengths), lengths))
        return self.z_head(self.z_rnn(Sequences(states, lengths)), lengths)


class DSAE(MultimodalModel):
    """DSAE over one "sequence" (spectral frames (B, T, D)) or "frames" (video (B, T, C, H, W))
    modality; latents f (static, style, "f") and z (dynamic, content, "z_t")."""

    name = "dsae"
    config_class = DSAEConfig

    def __init__(self, modalities: Sequence[ModalitySpec], f_dim: int = 16, z_dim: int = 16,
                 hidden: int = 256, prior_hidden: int = 256, q: str = "factorised",
                 frame_encoder: str = "auto", frame_decoder: str = "auto", conv_width: int = 64,
                 beta_f: float = 1.0, beta_z: float = 1.0, z_colour_jitter: bool = False) -> None:
        super().__init__(modalities)
        kinds = [s.kind for s in modalities]
        if len(modalities) != 1 or kinds[0] not in ("sequence", "frames"):
            raise ValueError(f"dsae takes one 'sequence' or 'frames' modality, got kinds {kinds} "
                             f"({[s.name for s in modalities]})")
        if q not in Q_CHOICES:
            raise ValueError(f"dsae: q must be 'factorised' or 'full', got {q!r}")
        for field, v in (("f_dim", f_dim), ("z_dim", z_dim), ("hidden", hidden),
                         ("prior_hidden", prior_hidden), ("conv_width", conv_width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"dsae: {field} must be an integer >= 1, got {v!r}")
        for field, b in (("beta_f", beta_f), ("beta_z", beta_z)):
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not b >= 0:
                raise ValueError(f"dsae: {field} must be a number >= 0, got {b!r}")
        spec = modalities[0]
        if z_colour_jitter and (spec.kind != "frames" or spec.shape[0] < 2):
            raise ValueError(f"dsae: z_colour_jitter needs colour image frames; {spec.name!r} is a "
                             f"{spec.kind!r} modality of shape {tuple(spec.shape)}")
        self.z_colour_jitter = bool(z_colour_jitter)
        enc = _choice(frame_encoder, ENCODERS[spec.kind], "frame_encoder", spec.kind)
        dec = _choice(frame_decoder, DECODERS[spec.kind], "frame_decoder", spec.kind)
        if spec.kind == "frames" and conv_layers(spec.shape) == 0:
            raise ValueError(f"dsae: frames of shape {spec.shape} are too small or odd-sized for "
                             "stride-2 convolutions (H and W must be even and >= 8)")
        self.modality = spec.name
        # every config field under its own name: MultimodalModel.config reads them back
        self.f_dim, self.z_dim, self.hidden, self.prior_hidden = f_dim, z_dim, hidden, prior_hidden
        self.q, self.frame_encoder, self.frame_decoder, self.conv_width = (
            q, frame_encoder, frame_decoder, conv_width)
        self.beta_f, self.beta_z = float(beta_f), float(beta_z)
        self.latents = declare(
            Latent(STATIC, f_dim, (spec.name,), role="style", dynamic=False, symbol="f"),
            Latent(DYNAMIC, z_dim, (spec.name,), role="content", dynamic=True, symbol="z_t"),
        )
        self.inference = DSAEInference(spec, f_dim, z_dim, hidden, q, enc, conv_width)
        if dec == "mlp":
            decoder: nn.Module = FrameMLPDecoder(spec.shape[0], (z_dim,), (f_dim,), hidden)
        elif dec == "lstm":
            decoder = FrameLSTMDecoder(spec.shape[0], (z_dim,), (f_dim,), hidden)
        else:
            k = conv_layers(spec.shape)
            channels = tuple([conv_width] * (k - k // 2) + [max(1, conv_width // 2)] * (k // 2))
            decoder = VideoDecoder(spec.shape, (z_dim,), (f_dim,), channels=channels, hidden=hidden)
        self.generative = Generative(
            priors={STATIC: StandardNormalPrior(f_dim), DYNAMIC: LSTMPrior(z_dim, prior_hidden)},
            decoders={spec.name: decoder},
        )

    # ----------------------------------------------------------------------------- inference
    def _input(self, batch: Batch) -> Sequences:
        present = self.check_inputs(batch)  # unknown keys, wrong shapes: ValueError naming them
        if self.modality not in present:
            raise ValueError(f"dsae: infers from {self.modality!r}; the batch has {sorted(batch)}")
        if self.partial_masks(batch):
            raise ValueError(f"dsae: {self.modality!r} has rows marked absent; drop them first")
        return batch[self.modality]

    def infer(self, batch: Batch, draw_f: bool = False
              ) -> tuple[dict[str, Independent], dict[str, Tensor]]:
        """Posteriors {f: (B,), z: (B, T)} and the pre-drawn samples the ELBO must reuse.

        Factorised q: no samples (the ELBO draws both). Full q: with ``draw_f`` one
        reparameterised f ~ q(f | x_1:T) is drawn here, q(z_1:T | f, x_1:T) is conditioned on it
        and it is returned as ``{f: draw}``; without, q(z_1:T | .) is conditioned on the mean of
        q(f | x_1:T) and no sample is returned.
        """
        x = self._input(batch)
        h = self.inference.features(x)
        q_f = self.inference.q_f(h, x.lengths)
        h_z = h
        if self.z_colour_jitter and self.training:  # q(z) reads recoloured frames (see DSAEConfig)
            h_z = self.inference.features(Sequences(colour_jitter(x.data), x.lengths))
        if self.q == "factorised":
            return {STATIC: q_f, DYNAMIC: self.inference.q_z(h_z, x.lengths)}, {}
        f = q_f.rsample() if draw_f else q_f.mean
        q_z = self.inference.q_z(h_z, x.lengths, f)
        return {STATIC: q_f, DYNAMIC: q_z}, ({STATIC: f} if draw_f else {})

    def encode(self, batch: Batch) -> dict[str, Independent]:
        """q(f | x_1:T) (B,) and q(z_1:T | .) (B, T); full q: z conditioned on the mean of q(f)."""
        return self.infer(batch)[0]

    # ----------------------------------------------------------------------------- generative
    def decode_params(self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
                      ) -> Tensor:
        """p(x_t | z_t, f) parameters (B, T, *frame), zero past each length; ``latents`` holds
        f (B, f_dim) and z (B, T, z_dim)."""
        if modality != self.modality:
            raise ValueError(f"dsae: decodes {self.modality!r} only, got {modality!r}")
        if lengths is None:
            raise ValueError(f"dsae: decoding {modality!r} needs lengths ((B,) frames per sequence)")
        missing = [k for k in (STATIC, DYNAMIC) if k not in latents]
        if missing:
            raise ValueError(f"dsae: decoding needs latents {missing} (it reads f and z)")
        return self.generative.decoders[modality](latents[DYNAMIC], latents[STATIC], lengths)

    def loss(self, batch: Batch) -> LossOutput:
        """-ELBO (eq. 2) averaged over the batch; KL of z_1:T to the LSTM prior teacher-forced on
        the posterior sample, summed over valid frames. Terms: rec_<m>, kl_f, kl_z, elbo."""
        q, samples = self.infer(batch, draw_f=True)
        m = self.modality
        out = self.elbo({m: batch[m]}, q, (m,), samples=samples)
        objective = out.value  # the ELBO; with KL weights: rec - beta_f KL_f - beta_z KL_z
        if (self.beta_f, self.beta_z) != (1.0, 1.0):
            objective = out.rec[m] - self.beta_f * out.kl[STATIC] - self.beta_z * out.kl[DYNAMIC]
        return LossOutput(-objective.mean(), {
            f"rec_{m}": -out.rec[m].mean(), "kl_f": out.kl[STATIC].mean(),
            "kl_z": out.kl[DYNAMIC].mean(), "elbo": out.value.mean()})

    # ----------------------------------------------------------------------------- generation
    @torch.no_grad()
    def swap(self, x_f: Sequences, x_z: Sequences) -> Tensor:
        """Feature swapping (section 2): row b decoded from the posterior mean of f of
        ``x_f[b]`` and of z_1:T of ``x_z[b]`` (full q: z inferred with x_z's own f, as the paper
        encodes each sequence with q). Returns (B, max(x_z lengths), *frame), zero past x_z's
        lengths; eval mode, the training mode restored."""
        if x_f.batch_size != x_z.batch_size:
            raise ValueError(f"dsae.swap: {x_f.batch_size} sequences give f but {x_z.batch_size} give z")
        was = self.training
        self.eval()
        try:
            f = self.encode({self.modality: x_f})[STATIC].mean
            z = self.encode({self.modality: x_z})[DYNAMIC].mean
            return self.decode({STATIC: f, DYNAMIC: z}, self.modality, x_z.lengths)
        finally:
            self.train(was)

    @torch.no_grad()
    def generate(self, lengths: Tensor | Sequence[int] | int, f: Tensor | None = None,
                 z: Tensor | None = None, n: int | None = None,
                 generator: torch.Generator | None = None) -> PriorSample:
        """Controlled generation (section 2): the latents not given are drawn from their priors.

        ``f`` (n, f_dim) fixed and z_1:T ~ LSTM prior: same content, new dynamics; ``z``
        (n, T, z_dim) fixed and f ~ N(0, I): same dynamics, new content; neither: unconditional.
        ``lengths``: (n,) or one int; ``n`` defaults to the rows of ``f`` or ``z``.
        Returns a :class:`PriorSample` (z: {f, z}, x: decoded means (n, T, *frame)).
        """
        rows = {int(t.shape[0]) for t in (f, z) if t is not None}
        if n is not None:
            rows.add(int(n))
        if len(rows) != 1:
            raise ValueError(f"dsae.generate: give n or f/z with the same number of rows, got {sorted(rows)}")
        n = rows.pop()
        ln = _as_lengths(n, lengths, "dsae.generate")
        device = next(self.parameters()).device
        if f is not None and tuple(f.shape) != (n, self.f_dim):
            raise ValueError(f"dsae.generate: f must be ({n}, {self.f_dim}), got {tuple(f.shape)}")
        if z is not None and (z.dim() != 3 or z.shape[-1] != self.z_dim or z.shape[1] < int(ln.max())):
            raise ValueError(f"dsae.generate: z must be ({n}, T >= {int(ln.max())}, {self.z_dim}), "
                             f"got {tuple(z.shape)}")
        was = self.training
        self.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                                       enabled=generator is not None):
                if generator is not None:
                    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator,
                                                        device=generator.device)))
                f_out = f.to(device) if f is not None else self.generative.priors[STATIC].sample(n)
                if z is not None:
                    z_out = z[:, :int(ln.max())].to(device)
                    z_out = z_out * frame_mask(ln.to(device), z_out.shape[1])[..., None].to(z_out.dtype)
                else:
                    z_out = self.generative.priors[DYNAMIC].sample(n, ln)
            latents = {STATIC: f_out, DYNAMIC: z_out}
            x = self.decode(latents, self.modality, ln)
        finally:
            self.train(was)
        return PriorSample(latents, x, ln)
