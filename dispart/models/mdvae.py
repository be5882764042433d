"""Multimodal dynamical VAE (MDVAE; Sadok, Leglaive, Girin, Alameda-Pineda, Seguier 2023), trained
in two stages inside frozen frame-wise VQ-VAEs (:mod:`dispart.models.vqvae`).

Observations. Stage 1 trains one VQ-VAE per modality; stage 2 models the sequences of their
*pre-quantisation* encodings e^(m)_t = E_m(x^(m)_t) (flattened, (B, T, E_m)): p(x | z) below is a
unit-variance Gaussian over e^(m)_t, and ``decode`` maps its mean through the frozen VQ-VAE
(quantise, decode) back to frames. The frozen VQ-VAEs are part of the model (``vq.<modality>.``
weights, ``requires_grad=False``, always in eval mode), so a run folder is self-contained.

Generative model (slides, "MDVAE generative model"), for an audio ("sequence") modality a and a
video ("frames") modality v:

    p(x_a, x_v, z_av, z_a, z_v, w) = p(w) prod_t p(x_a,t | z_av,t, z_a,t, w) p(x_v,t | z_av,t, z_v,t, w)
                                     p(z_av,t | z_av,<t) p(z_a,t | z_a,<t) p(z_v,t | z_v,<t)

with p(w) = N(0, I) and the three dynamic priors DSAE's learned :class:`LSTMPrior`, teacher-forced
on the posterior sample in the ELBO (as DSAE); the decoders are per-frame MLPs fed
[w, z_av,t, z_m,t] (:class:`FrameMLPDecoder`).

Inference (slides, "MDVAE inference model", by d-separation):

- q(w | x_a, x_v): a bi-LSTM over the per-frame features of both modalities, both directions'
  final states (DSAE's q(f | x_1:T), :class:`SequenceSummary` "ends");
- q(z_av,t | z_av,1:t-1, x_a,t:T, x_v,t:T, w): a *backward* LSTM over [features_a, features_v, w]
  (its state at t has seen frames t..T) combined with a *forward* LSTM over the previous values
  z_av,1:t-1 (:class:`RecurrentPosterior`);
- q(z_m,t | z_m,1:t-1, x_m,t:T, z_av,t, w) for m = a, v: a backward LSTM over [features_m, w], the
  forward LSTM over z_m,1:t-1, and z_av,t fed to the head at time t only.

The ELBO (``loss``) draws w, then z_av,1:T step by step (each draw feeds the next step), then
z_a and z_v given the z_av draw; all draws are reparameterised and the same draws feed the
decoders and the teacher-forced priors (``elbo(..., samples=...)``):

    ELBO = sum_m log p(e^(m) | .) - KL(q(w) || p(w)) - sum_t [KL(z_av,t) + KL(z_a,t) + KL(z_v,t)]

``obs_scale``: "unit" (the default, the slides' p(e_t | .) with variance 1 in every dimension) or
"optimal": a per-dimension variance per modality set to its maximum-likelihood value, the mean
squared residual of that dimension over the batch's valid frames (floored at MIN_OBS_SCALE^2,
held fixed in the gradient: by the envelope theorem that is the exact gradient of the ELBO
maximised over the variances; the "optimal sigma" calibrated decoder of Rybkin, Daniilidis and
Levine 2021, here per dimension). An exponential moving average of it (buffer ``obs_var_<m>``)
is the variance outside training. Why: the VQ-VAE encodings of GRID vary by ~0.02 within a
10-frame window against ~0.5 across windows, so at unit variance the dynamics cost almost nothing
to ignore and the dynamic latents collapse.

``beta_w`` / ``beta_z`` weigh the static and dynamic KL terms in the training loss (1, 1: the
ELBO; the logged "elbo" is always unweighted). ``encode`` (posterior means, for evaluation,
generation and denoising) feeds each recurrence with the posterior *means* of the previous steps
and conditions on the mean of q(w) (and of z_av,t for the private latents).

Latents and roles: w (static, informed by both modalities, role "style": the speaker's identity and
global state, like DSAE's f); z_av (dynamic, both modalities, role "content": lip movements and
phonetic content shared by audio and video, what is clustered against the class); z_a and z_v
(dynamic, one modality each, role "style": the modality-specific dynamics). MDVAE infers from
both modalities together: ``encode`` of one modality alone is a ValueError (the paper's unimodal
counterparts are separate models).

Unimodal counterparts A-DSAE / V-DSAE (``model.modalities=[audio]`` or ``[video]``): the same
class over one modality, latents w (static, "style") and z (dynamic, "content", size ``zav_dim``):
q(w | x), q(z_t | z_1:t-1, x_t:T, w), p(e_t | z_t, w) -- DSAE with MDVAE's inference structure, on
the same stage-1 VQ-VAE encodings (``stage1_dir`` reuses an MDVAE run's VQ-VAEs).

Experiment helpers: :meth:`MDVAE.reconstruct` (encode and decode through the VQ-VAE: denoising),
:meth:`MDVAE.transfer` (decode a sequence with some latents taken from another: swapping z_av,
z_v, or both), :meth:`MDVAE.load_stage1` (copy a trained :class:`~dispart.models.vqvae.VQVAE`
into the frozen front end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, Modality, Sequences
from dispart.batches.modality import ModalitySpec
from dispart.distributions import ScaledGaussianLikelihood, make_likelihood
from dispart.models.base import Generative, LossOutput, MultimodalModel
from dispart.models.latents import Latent, declare
from dispart.models.priors import LSTMPrior, StandardNormalPrior, frame_mask
from dispart.models.vqvae import VQVAE, Encodings, FrameVQ, VQVAEConfig, check_config
from dispart.nn.encoders import GaussianHead, diag_gaussian
from dispart.nn.frames import (
    FrameLSTMDecoder,
    FrameLSTMEncoder,
    FrameMLPDecoder,
    FramewiseEncoder,
    SequenceSummary,
    reverse_within_lengths,
    zero_padding,
)
from dispart.nn.modality import MLPEncoder

# Latent names, used only inside this file (the declarations carry roles and symbols).
STATIC, SHARED, SINGLE = "w", "z_av", "z"
PRIVATE = {"sequence": "z_a", "frames": "z_v"}  # the private latent of the audio / video modality
SYMBOLS = {STATIC: "w", SHARED: "z^av_t", SINGLE: "z_t", "z_a": "z^a_t", "z_v": "z^v_t"}
DECODERS = ("mlp", "lstm")
OBS_SCALES = ("unit", "optimal")
MIN_OBS_SCALE = 1e-3  # floor of the "optimal" per-dimension observation scale
OBS_VAR_MOMENTUM = 0.99  # EMA of the batch variances kept for evaluation


@dataclass(frozen=True)
class MDVAEConfig:
    """MDVAE hyper-parameters (the modalities come from the data).

    The slides give no sizes; these defaults are ours (configs/mdvae_grid.yaml states its own).

    Attributes:
        w_dim: size of the static audio-visual latent w.
        zav_dim: size of each dynamic audio-visual z_av,t (of z_t in A-DSAE / V-DSAE).
        za_dim, zv_dim: sizes of each private z_a,t (audio) and z_v,t (video).
        hidden: width of the per-frame feature MLPs, of the inference LSTMs and of the decoders.
        prior_hidden: hidden units of the LSTM priors.
        decoder: "mlp" (p(e_t | .) depends on frame t's latents only, as in the slides) or
            "lstm" (an LSTM over them).
        obs_scale: "unit" (p(e_t | .) = N(mean, I)) or "optimal" (N(mean, diag(s_m^2)) with
            s_m^2 the batch's per-dimension mean squared residual; see the module docstring).
        beta_w, beta_z: weights of the static and of the dynamic KL terms in the training loss.
        vq_*: the stage-1 VQ-VAE of every modality (the fields of
            :class:`~dispart.models.vqvae.VQVAEConfig`): the frozen front end is built with them
            and stage 1 is trained with them.
        stage1_epochs: epochs of each stage-1 VQ-VAE (0: ``train.epochs``); read by the trainer.
        stage1_dir: a folder holding finished stage-1 runs ``stage1_<modality>`` to reuse (e.g.
            an MDVAE run folder, so that V-DSAE decodes through MDVAE's VQ-VAE); "": train them
            in the run folder. Read by the trainer.
    """

    w_dim: int = 32
    zav_dim: int = 16
    za_dim: int = 8
    zv_dim: int = 16
    hidden: int = 256
    prior_hidden: int = 256
    decoder: str = "mlp"
    obs_scale: str = "unit"
    beta_w: float = 1.0
    beta_z: float = 1.0
    vq_code_dim: int = 16
    vq_codebook_size: int = 512
    vq_hidden: int = 256
    vq_conv_width: int = 64
    vq_downsample: int = 0
    vq_frame_codes: int = 8
    vq_beta: float = 0.25
    vq_ema: bool = True
    vq_decay: float = 0.99
    vq_restart: float = 1.0
    stage1_epochs: int = 0
    stage1_dir: str = ""

    def stage1_config(self) -> VQVAEConfig:
        """The stage-1 VQ-VAE's config (the ``vq_*`` fields without their prefix)."""
        return VQVAEConfig(**{f.name: getattr(self, f"vq_{f.name}") for f in fields(VQVAEConfig)})


class RecurrentPosterior(nn.Module):
    """q(z_t | z_1:t-1, u_t:T, c_t) for a dynamic latent z: batch shape (B, T), event (D,).

    A backward LSTM over the inputs u (B, T, F) (state g_t: frames t..n of the sequence, reversed
    within each length) and a forward LSTM over the previous values z_1:t-1 (state h_t, a zero
    vector before z_1) meet in a ReLU layer with the per-frame condition c_t (e.g. z_av,t; none
    for z_av itself), then a linear Gaussian head. The previous values are:

    - ``given`` (B, T, D): teacher forcing, all frames in parallel (tests, ablations);
    - otherwise this posterior's own draws (``sample=True``, reparameterised) or means, one frame
      at a time.

    Parameters past each length are N(0, I)'s and the values returned there are zero.
    """

    def __init__(self, in_dim: int, cond_dim: int, z_dim: int, hidden: int) -> None:
        super().__init__()
        self.z_dim, self.cond_dim = z_dim, cond_dim
        self.backward_lstm = FrameLSTMEncoder(in_dim, hidden)
        self.rnn = nn.LSTM(z_dim, hidden, batch_first=True)
        self.combine = nn.Sequential(nn.Linear(2 * hidden + cond_dim, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 2 * z_dim)

    def future(self, u: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, H) backward states g_t (frames t..n of each sequence), zero past each length."""
        rev = reverse_within_lengths(zero_padding(u, lengths), lengths)
        return reverse_within_lengths(self.backward_lstm(Sequences(rev, lengths)), lengths)

    def forward(self, u: Tensor, lengths: Tensor, cond: Tensor | None = None, sample: bool = False,
                given: Tensor | None = None) -> tuple[Independent, Tensor]:
        """(q, z): the posterior and the values fed to the recurrence (the given ones, the draws
        or the means), (B, T, D) zero past each length."""
        b, t_max = u.shape[:2]
        if (cond is None) != (self.cond_dim == 0):
            raise ValueError(f"RecurrentPosterior: expects a condition of {self.cond_dim} dims per frame, "
                             f"got {None if cond is None else tuple(cond.shape)}")
        g = self.future(u, lengths)
        parts = [g] if cond is None else [g, cond]
        mask = frame_mask(lengths.to(u.device), t_max)[..., None]
        if given is not None:
            if tuple(given.shape) != (b, t_max, self.z_dim):
                raise ValueError(f"RecurrentPosterior: given must be ({b}, {t_max}, {self.z_dim}), "
                                 f"got {tuple(given.shape)}")
            prev = torch.cat([given.new_zeros(b, 1, self.z_dim), given[:, :-1]], dim=1)
            h, _ = self.rnn(prev)
            params = self.out(self.combine(torch.cat([*parts, h], dim=-1)))
            q = self._gaussian(params, lengths)
            return q, given * mask.to(given.dtype)
        state = None
        prev = u.new_zeros(b, 1, self.z_dim)
        means, logvars, values = [], [], []
        for t in range(t_max):
            h, state = self.rnn(prev, state)
            x = torch.cat([p[:, t:t + 1] for p in parts] + [h], dim=-1)
            mean, logvar = self.out(self.combine(x)).chunk(2, dim=-1)
            prev = diag_gaussian(mean, logvar).rsample() if sample else mean
            means.append(mean)
            logvars.append(logvar)
            values.append(prev)
        q = self._gaussian(torch.cat([torch.cat(means, 1), torch.cat(logvars, 1)], dim=-1), lengths)
        return q, torch.cat(values, dim=1) * mask.to(u.dtype)

    @staticmethod
    def _gaussian(params: Tensor, lengths: Tensor) -> Independent:
        mean, logvar = zero_padding(params, lengths).chunk(2, dim=-1)
        return diag_gaussian(mean, logvar)


class MDVAEInference(nn.Module):
    """The encoders: per-frame feature MLPs over each modality's encodings (``features``),
    q(w | x) (``w_summary`` + ``w_head``), q(z_av | .) (``shared``, the single z of A-/V-DSAE)
    and q(z_m | .) per modality (``private``, multimodal only)."""

    def __init__(self, enc_dims: Mapping[str, int], private: Mapping[str, tuple[str, int]], w_dim: int,
                 shared_dim: int, hidden: int) -> None:
        super().__init__()
        self.features = nn.ModuleDict({m: FramewiseEncoder(MLPEncoder(d, hidden))
                                       for m, d in enc_dims.items()})
        feat = hidden * len(enc_dims)
        self.w_summary = SequenceSummary(FrameLSTMEncoder(feat, hidden, bidirectional=True), mode="ends")
        self.w_head = GaussianHead(self.w_summary.out_dim, w_dim)
        self.shared = RecurrentPosterior(feat + w_dim, 0, shared_dim, hidden)
        self.private = nn.ModuleDict({m: RecurrentPosterior(hidden + w_dim, shared_dim, d, hidden)
                                      for m, (_, d) in private.items()})


class MDVAE(MultimodalModel):
    """MDVAE over one audio ("sequence") and one video ("frames") modality, or A-DSAE / V-DSAE
    over one of them (see the module docstring)."""

    name = "mdvae"
    config_class = MDVAEConfig

    def __init__(self, modalities: Sequence[ModalitySpec], w_dim: int = 32, zav_dim: int = 16,
                 za_dim: int = 8, zv_dim: int = 16, hidden: int = 256, prior_hidden: int = 256,
                 decoder: str = "mlp", obs_scale: str = "unit", beta_w: float = 1.0, beta_z: float = 1.0,
                 vq_code_dim: int = 16,
                 vq_codebook_size: int = 512, vq_hidden: int = 256, vq_conv_width: int = 64,
                 vq_downsample: int = 0, vq_frame_codes: int = 8, vq_beta: float = 0.25,
                 vq_ema: bool = True, vq_decay: float = 0.99, vq_restart: float = 1.0, stage1_epochs: int = 0,
                 stage1_dir: str = "") -> None:
        super().__init__(modalities)
        kinds = sorted(s.kind for s in modalities)
        if kinds not in (["sequence"], ["frames"], ["frames", "sequence"]):
            raise ValueError(f"mdvae takes one 'sequence' (audio) and one 'frames' (video) modality, or "
                             f"one of them (A-DSAE / V-DSAE); got kinds {[s.kind for s in modalities]} "
                             f"({[s.name for s in modalities]})")
        for name, v, low in (("w_dim", w_dim, 1), ("zav_dim", zav_dim, 1), ("za_dim", za_dim, 1),
                             ("zv_dim", zv_dim, 1), ("hidden", hidden, 1), ("prior_hidden", prior_hidden, 1),
                             ("stage1_epochs", stage1_epochs, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"mdvae: {name} must be an integer >= {low}, got {v!r}")
        for name, b in (("beta_w", beta_w), ("beta_z", beta_z)):
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not b >= 0:
                raise ValueError(f"mdvae: {name} must be a number >= 0, got {b!r}")
        if decoder not in DECODERS:
            raise ValueError(f"mdvae: decoder must be one of {list(DECODERS)}, got {decoder!r}")
        if obs_scale not in OBS_SCALES:
            raise ValueError(f"mdvae: obs_scale must be one of {list(OBS_SCALES)}, got {obs_scale!r}")
        # every config field under its own name: MultimodalModel.config reads them back
        self.w_dim, self.zav_dim, self.za_dim, self.zv_dim = w_dim, zav_dim, za_dim, zv_dim
        self.hidden, self.prior_hidden, self.decoder = hidden, prior_hidden, decoder
        self.obs_scale = obs_scale
        self.beta_w, self.beta_z = float(beta_w), float(beta_z)
        self.vq_code_dim, self.vq_codebook_size, self.vq_hidden = vq_code_dim, vq_codebook_size, vq_hidden
        self.vq_conv_width, self.vq_downsample = vq_conv_width, vq_downsample
        self.vq_frame_codes = vq_frame_codes
        self.vq_beta, self.vq_ema, self.vq_decay = float(vq_beta), bool(vq_ema), float(vq_decay)
        self.vq_restart = float(vq_restart)
        self.stage1_epochs, self.stage1_dir = stage1_epochs, stage1_dir
        vq_config = self.config.stage1_config()
        for s in modalities:
            check_config("mdvae (vq_*)", s, vq_config)

        # the frozen stage-1 front end, one VQ-VAE per modality
        self.vq = nn.ModuleDict({s.name: FrameVQ(s, vq_config) for s in modalities})
        self.vq.requires_grad_(False)
        self.vq.eval()
        # p(x | z) is a unit Gaussian over the encodings (read by the generic likelihood helpers)
        self.likelihoods = {s.name: make_likelihood("gaussian") for s in modalities}
        enc_dims = {m: self.vq[m].encoding_dim for m in self.modalities}
        if obs_scale == "optimal":  # s_m^2 (E_m,) outside training: EMA of the batch values
            for m, d in enc_dims.items():
                self.register_buffer(f"obs_var_{m}", torch.ones(d))

        names = [s.name for s in modalities]
        self.multimodal = len(modalities) == 2
        shared = SHARED if self.multimodal else SINGLE
        sizes = {"sequence": za_dim, "frames": zv_dim}
        self.private_latents = ({s.name: (PRIVATE[s.kind], sizes[s.kind]) for s in modalities}
                                if self.multimodal else {})
        self.shared_latent = shared
        self.latents = declare(
            Latent(STATIC, w_dim, tuple(names), role="style", dynamic=False, symbol=SYMBOLS[STATIC]),
            Latent(shared, zav_dim, tuple(names), role="content", dynamic=True, symbol=SYMBOLS[shared]),
            *(Latent(n, d, (m,), role="style", dynamic=True, symbol=SYMBOLS[n])
              for m, (n, d) in self.private_latents.items()),
        )
        self.inference = MDVAEInference(enc_dims, self.private_latents, w_dim, zav_dim, hidden)
        decoders: dict[str, nn.Module] = {}
        for m in names:
            dyn = (zav_dim,) + ((self.private_latents[m][1],) if self.multimodal else ())
            cls = FrameMLPDecoder if decoder == "mlp" else FrameLSTMDecoder
            decoders[m] = cls(enc_dims[m], dyn, (w_dim,), hidden)
        priors = {STATIC: StandardNormalPrior(w_dim), shared: LSTMPrior(zav_dim, prior_hidden)}
        priors.update({n: LSTMPrior(d, prior_hidden) for n, d in self.private_latents.values()})
        self.generative = Generative(priors=priors, decoders=decoders)

    # ----------------------------------------------------------------------------- stage 1
    def train(self, mode: bool = True) -> MDVAE:
        """Training mode for everything but the frozen VQ-VAEs (always in eval mode)."""
        super().train(mode)
        self.vq.eval()
        return self

    def stage1_config(self) -> VQVAEConfig:
        """The config every stage-1 VQ-VAE of this model must have."""
        return self.config.stage1_config()

    @torch.no_grad()
    def load_stage1(self, modality: str, vqvae: VQVAE) -> None:
        """Copy the weights of a trained stage-1 ``vqvae`` of ``modality`` into the frozen front
        end (ValueError when its modality or its VQ-VAE config differ from this model's)."""
        if modality not in self.vq:
            raise ValueError(f"mdvae: no modality {modality!r}; it has {list(self.vq)}")
        if not isinstance(vqvae, VQVAE):
            raise ValueError(f"mdvae: stage 1 of {modality!r} must be a vq_vae model, "
                             f"got {type(vqvae).__name__}")
        if vqvae.spec != self.specs[modality]:
            raise ValueError(f"mdvae: the stage-1 VQ-VAE was trained on {vqvae.spec.to_dict()}, this "
                             f"model's {modality!r} is {self.specs[modality].to_dict()}")
        if vqvae.config != self.stage1_config():
            raise ValueError(f"mdvae: the stage-1 VQ-VAE of {modality!r} has config {vqvae.config}, this "
                             f"model's vq_* fields give {self.stage1_config()}")
        self.vq[modality].load_state_dict(vqvae.frame_state())
        self.vq.requires_grad_(False)
        self.vq.eval()

    # ----------------------------------------------------------------------------- observations
    def observed(self, modality: str, x: Modality) -> Encodings:
        """What p(x^m | z) is a density over: the frozen VQ-VAE's pre-quantisation encodings of
        ``x`` (B, T, E_m), zero past each length (no gradient; ``x`` already encoded is returned)."""
        if isinstance(x, Encodings):
            return x
        self.check_input(modality, x)
        with torch.no_grad():
            return Encodings(self.vq[modality].encode_frames(x), x.lengths)

    def _inputs(self, batch: Batch) -> dict[str, Encodings]:
        """The encodings of every modality of the model; ValueError if one is missing, has
        rows marked absent, or the lengths differ between modalities."""
        present = [m for m in self.present(batch)]
        missing = [m for m in self.modalities if m not in present]
        if missing:
            what = "needs it"
            if self.multimodal:
                what = ("infers from both modalities together (q(w | x_a, x_v)); for unimodal inference "
                        "train A-DSAE / V-DSAE (model.modalities=[one of them])")
            raise ValueError(f"mdvae: the batch lacks {missing} (it has {sorted(batch)}); the model {what}")
        if self.partial_masks(batch):
            raise ValueError(f"mdvae: modalities {sorted(self.partial_masks(batch))} have rows marked "
                             "absent; drop them first")
        enc = {m: self.observed(m, batch[m]) for m in self.modalities}
        lengths = [e.lengths for e in enc.values()]
        if any(not torch.equal(lengths[0], ln) for ln in lengths[1:]):
            raise ValueError(f"mdvae: the modalities must have the same number of frames per example, got "
                             f"lengths {[ln.tolist() for ln in lengths]}")
        return enc

    # ----------------------------------------------------------------------------- inference
    def infer(self, batch: Batch, sample: bool = False, given: Mapping[str, Tensor] | None = None
              ) -> tuple[dict[str, Independent], dict[str, Tensor]]:
        """Posteriors and the values each recurrence and condition was fed.

        ``batch``: the model's modalities (raw frames or :class:`Encodings`). ``sample``: draw w,
        then z_av step by step, then the private latents (the ELBO's draws); otherwise means.
        ``given`` (latent -> value): use these values instead (w (B, D); a dynamic latent
        (B, T, D) teacher-forces its own recurrence and conditions the private latents).
        Returns (q: latent -> Independent, z: latent -> the value used).
        """
        enc = self._inputs(batch)
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.latents))
        if unknown:
            raise ValueError(f"mdvae.infer: given names unknown latents {unknown}; "
                             f"latents {list(self.latents)}")
        inf = self.inference
        lengths = next(iter(enc.values())).lengths
        h = {m: inf.features[m](e) for m, e in enc.items()}
        both = torch.cat([h[m] for m in self.modalities], dim=-1)
        q: dict[str, Independent] = {STATIC: inf.w_head(inf.w_summary(Sequences(both, lengths)))}
        z: dict[str, Tensor] = {}
        z[STATIC] = given[STATIC] if STATIC in given else (q[STATIC].rsample() if sample else q[STATIC].mean)
        t_max = both.shape[1]
        w_t = z[STATIC][:, None].expand(-1, t_max, -1)
        s = self.shared_latent
        q[s], z[s] = inf.shared(torch.cat([both, w_t], dim=-1), lengths, sample=sample, given=given.get(s))
        for m, (name, _) in self.private_latents.items():
            q[name], z[name] = inf.private[m](torch.cat([h[m], w_t], dim=-1), lengths, cond=z[s],
                                              sample=sample, given=given.get(name))
        return q, z

    def encode(self, batch: Batch) -> dict[str, Independent]:
        """q(w | x) (B,) and every q(z_1:T | .) (B, T), each recurrence fed the previous means and
        conditioned on the means of w (and z_av)."""
        return self.infer(batch)[0]

    # ----------------------------------------------------------------------------- generative
    def decode_params(self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
                      ) -> Tensor:
        """Means (B, T, E_m) of the Gaussian p(e^m_t | z_av,t, z_m,t, w) over the VQ-VAE encodings,
        zero past each length."""
        if modality not in self.specs:
            raise ValueError(f"mdvae: no modality {modality!r}; it has {list(self.specs)}")
        if lengths is None:
            raise ValueError(f"mdvae: decoding {modality!r} needs lengths ((B,) frames per sequence)")
        names = self.decoder_latents(modality)
        missing = [k for k in names if k not in latents]
        if missing:
            raise ValueError(f"mdvae: decoding {modality!r} needs latents {missing} (it reads {list(names)})")
        lengths = torch.as_tensor(lengths)
        dyn = [latents[k] for k in names if self.latents[k].dynamic]
        return self.generative.decoders[modality](dyn, [latents[STATIC]], lengths)

    def decode(self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None) -> Tensor:
        """Frames (B, T, *frame): the mean encodings quantised and decoded by the frozen VQ-VAE
        (its likelihood's mean), zero past each length."""
        e = self.decode_params(latents, modality, lengths)
        return self.vq[modality].decode_codes(e, torch.as_tensor(lengths))

    def reconstruction_log_prob(self, latents: Mapping[str, Tensor], modality: str, x: Modality) -> Tensor:
        """(B,) log p(e^m | latents) of the encodings of ``x`` (raw frames or :class:`Encodings`)."""
        enc = self.observed(modality, x)
        params = self.decode_params(latents, modality, enc.lengths)
        if self.obs_scale == "unit":
            return self.likelihoods[modality].log_prob(params, enc)
        var = getattr(self, f"obs_var_{modality}")
        if self.training:
            var = self.residual_variance(params, enc)
            with torch.no_grad():
                getattr(self, f"obs_var_{modality}").lerp_(var, 1 - OBS_VAR_MOMENTUM)
        return ScaledGaussianLikelihood(var.sqrt()).log_prob(params, enc)

    @staticmethod
    def residual_variance(params: Tensor, enc: Encodings) -> Tensor:
        """(E,) per-dimension mean squared residual of the means ``params`` (B, T, E) against the
        encodings over the valid frames, floored at MIN_OBS_SCALE^2, without gradient."""
        with torch.no_grad():
            mask = frame_mask(enc.lengths.to(params.device), params.shape[1])
            resid = (enc.data[:, : params.shape[1]] - params)[mask]  # (valid frames, E)
            return resid.pow(2).mean(0).clamp_min(MIN_OBS_SCALE ** 2)

    def loss(self, batch: Batch) -> LossOutput:
        """-ELBO averaged over the batch (KL weights ``beta_w``, ``beta_z``). Terms: rec_<m>
        (-log p of the encodings), kl_<latent> (dynamic ones summed over valid frames), elbo."""
        enc = self._inputs(batch)
        q, z = self.infer(enc, sample=True)
        out = self.elbo(enc, q, self.modalities, samples=z)
        objective = out.value
        if (self.beta_w, self.beta_z) != (1.0, 1.0):
            dynamic = sum(out.kl[k] for k in out.kl if k != STATIC)
            objective = (sum(out.rec[m] for m in self.modalities) - self.beta_w * out.kl[STATIC]
                         - self.beta_z * dynamic)
        terms = {f"rec_{m}": -out.rec[m].mean() for m in self.modalities}
        terms.update({f"kl_{k}": out.kl[k].mean() for k in self.latents})
        terms["elbo"] = out.value.mean()
        return LossOutput(-objective.mean(), terms)

    # ----------------------------------------------------------------------------- experiments
    def _eval_call(self, fn):  # run ``fn`` in eval mode without gradients, restoring the mode
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                return fn()
        finally:
            self.train(was)

    def posterior_means(self, batch: Batch) -> dict[str, Tensor]:
        """latent -> posterior mean ((B, D) or (B, T, D)), eval mode, no gradients."""
        return self._eval_call(lambda: {k: v.mean for k, v in self.encode(batch).items()})

    def reconstruct(self, batch: Batch, modality: str | None = None) -> Tensor:
        """Encode ``batch`` (posterior means) and decode ``modality`` (default: the video
        modality, or the only one) through the frozen VQ-VAE: (B, T, *frame) (denoising)."""
        if modality is None:
            frames = [m for m, s in self.specs.items() if s.kind == "frames"]
            modality = frames[0] if frames else self.modalities[0]
        if modality not in self.specs:
            raise ValueError(f"mdvae: no modality {modality!r}; it has {list(self.specs)}")

        def run() -> Tensor:
            enc = self._inputs(batch)
            z = {k: v.mean for k, v in self.encode(enc).items()}
            return self.decode(z, modality, next(iter(enc.values())).lengths)

        return self._eval_call(run)

    def transfer(self, target: Batch, source: Batch, latents: Sequence[str] = (SHARED,),
                 modalities: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Decode ``target`` with the latents named in ``latents`` taken from ``source`` (row b
        from row b): e.g. ("z_av",) transfers lip movements, ("z_v",) head and eye movements,
        ("z_av", "z_v") both, while w (identity) stays the target's.

        Every latent is the posterior mean of its own sequence (each sequence encoded with its
        own w and z_av, as the slides' swapping experiments encode each sequence). Dynamic latents
        from ``source`` must cover the target's lengths (frames beyond are cut). Returns
        modality -> (B, T_target, *frame) decoded through the VQ-VAEs.
        """
        unknown = [k for k in latents if k not in self.latents]
        if unknown:
            raise ValueError(f"mdvae.transfer: unknown latents {unknown}; the model has {list(self.latents)}")
        modalities = list(modalities or self.modalities)

        def run() -> dict[str, Tensor]:
            enc_t, enc_s = self._inputs(target), self._inputs(source)
            lengths = next(iter(enc_t.values())).lengths
            src_len = next(iter(enc_s.values())).lengths
            if len(src_len) != len(lengths) or bool((src_len < lengths).any()):
                raise ValueError(f"mdvae.transfer: source rows must be at least as long as the target's "
                                 f"(target {lengths.tolist()}, source {src_len.tolist()})")
            z = {k: v.mean for k, v in self.encode(enc_t).items()}
            zs = {k: v.mean for k, v in self.encode(enc_s).items()}
            t = int(lengths.max())
            for k in latents:
                z[k] = zs[k][:, :t] if self.latents[k].dynamic else zs[k]
                if self.latents[k].dynamic:
                    z[k] = z[k] * frame_mask(lengths.to(z[k].device), t)[..., None].to(z[k].dtype)
            return {m: self.decode(z, m, lengths) for m in modalities}

        return self._eval_call(run)
