"""Partitioned VAE (Hsu & Glass, 2018).

Generative model p (``model.generative``): z^s ~ N(0, I); z^m ~ N(0, I) for every modality m;
x^m ~ N(decoder_m([z^s, z^m]), I).
Inference models: multimodal q(z^s, z^1..z^M | X) = q(z^s | X) prod_m q(z^m | X) from the
concatenated pre-encodings; unimodal r_m(z^s, z^m | x^m) = r_m(z^s | x^m) r_m(z^m | x^m) with
pre-encoders of their own (not shared with q).
Objective (maximised in the paper): L + a_CH * CH + a_CM * CM, eqs. (7)-(9). Options that are
not the paper's, off by default (``PVAEConfig``): a KL weight on the style latents, a kernel
independence penalty between z^s and each z^m, a swap-and-re-encode consistency, an adversary
per style latent (critics ``critics[m]``, built only when it is on), a penalty on the
correlation of each z^m with the other modalities' z^s, a speaker penalty on z^s (the only
one that reads labels, the batch's "speaker" indices: a critic ``speaker_critic`` or a closed-form
correlation), an image decoder in which z^i can only warp and thicken what z^s draws
(``image_decoder="warp"``) and a weight per modality on its log-likelihood (``lambdas``).

Any number M >= 2 of modalities, and missing ones (docs/models.md): with every modality the
paper's q is used; from one modality r_m; from a subset S of 2 <= |S| < M modalities z^s is
the product of the unimodal r_m(z^s | x^m) divided by the prior |S| - 1 times (the true
posterior factorises so, as in MVAE-Q; each expert's variance is floored at the prior's so
the quotient exists) and z^m comes from r_m. Style latents of absent modalities keep their
prior. With ``allow_missing=True`` ``loss`` trains on any subset: the ELBO of the present
modalities under that inference model, CH over the present modalities (0 for one) and CM over
the present pairs (0 for one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, Sequences
from dispart.batches.modality import ModalitySpec
from dispart.models.base import Generative, LossOutput, MultimodalModel, standard_priors
from dispart.models.latents import Latent, declare
from dispart.nn.encoders import GaussianHead, diag_gaussian
from dispart.nn.experts import prior_floored_logvar, product_quotient_of_experts
from dispart.nn.frames import zero_padding
from dispart.nn.modality import build_decoder, build_pre_encoder
from dispart.objectives import (
    coherence_kl,
    correlation_matrix,
    cross_correlation,
    cross_modal_hinge,
    kernel_dependence,
    label_confusion,
    random_negatives,
    running_cross_correlation,
    style_content_critic,
)

SEMANTIC = "z_s"
SPEAKER = "speaker"  # batch key of the (B,) speaker indices that alpha_speaker reads
SPEAKER_PENALTIES = ("critic", "xcorr")
SPEECH = "audio"  # the modality whose speaker "speaker" names
CRITIC_WIDTH = 128  # hidden units of the optional style critics (alpha_adv)


@dataclass(frozen=True)
class PVAEConfig:
    """PVAE hyper-parameters (modalities come from the data): latent sizes, network width, and the
    weights of the coherence KL (alpha_ch) and cross-modal hinge (alpha_cm, margin).

    Not in the paper (defaults switch them off): ``style_beta`` weighs the KL of every style
    latent to its prior (a beta-VAE on z^m only: less room in z^m for the content), or only of the
    style latents of the modalities named in ``style_beta_on`` ("audio", "audio,image"; "all":
    every one); ``alpha_indep``
    weighs a kernel independence penalty (normalised HSIC, ``objectives.kernel_dependence``)
    between the unimodal means of z^s and of z^m, per modality (z^m should not predict what z^s
    holds, nor z^s the speaker that z^m holds); ``alpha_swap`` weighs a swap-and-re-encode
    consistency: x~ = decode_m(z^s of another row, z^m of this row) re-encoded by r_m must give
    back that other row's z^s (squared distance to q's mean; the latents held fixed, so only
    the decoder and r_m learn from it): the decoder has to say what z^s says whatever z^m holds;
    ``swap_weights`` overrides ``alpha_swap`` per modality (e.g. ``{image: 30}`` alone).
    ``alpha_adv`` weighs an adversary per style latent (``objectives.style_content_critic``): a
    critic learns to tell from z^m's mean (of q and of r_m) which row's other-modality content
    (the other unimodal z^s means, averaged over the other modalities) it is paired with, and the
    encoders learn to leave it no preference: z^m should hold nothing of what another modality
    also shows (the digit), with no labels. ``alpha_xcorr`` weighs the mean squared correlation
    (``objectives.cross_correlation``) between z^m's means (q's and r_m's) and the other
    modalities' unimodal z^s means, held fixed: paired only through the class, they are
    correlated only through z^m's class means, which is what a linear probe reads. It trains the
    z^m heads only (their inputs held fixed: the pre-encoders keep the content z^s needs).
    ``xcorr_weights``: a weight per modality that overrides ``alpha_xcorr`` for that modality's
    z^m (0 switches it off), e.g. ``{image: 0}`` beside ``alpha_xcorr: 1000``: at 1000 on z^i
    the image style collapses to its prior and the decoder stops reading it, so slant and ink
    no longer transfer.
    ``xcorr_momentum`` > 0 replaces each batch's squared correlations (which cannot fall below
    about 1 / B) by ``objectives.running_cross_correlation`` against an average of the
    correlation matrices of earlier training batches (kept in buffers, saved with the weights,
    updated in training mode only, each new batch with weight 1 - momentum), for alpha_xcorr's
    terms and the speaker's xcorr alike.
    ``alpha_semantic_xcorr`` weighs the mirror term within each modality: the mean squared
    correlation between z^s's means (q's and r_m's) and the same row's z^m means, held fixed; it
    trains the z^s heads only, so that z^s can drop what z^m holds (the speaker, once z^m holds no
    digit) without the pre-encoders losing it.
    ``penalty_start``: training steps before these terms switch on (the partition forms
    under the paper's objective first). ``widths``: a network width per modality that overrides
    ``hidden`` for that modality's pre-encoders and decoder (e.g. ``{image: 512}`` beside a narrow
    speech LSTM: the image networks cost little next to the LSTMs). ``style_dims``: a size of z^m
    per modality that overrides ``style_dim`` (e.g. ``{audio: 4}``: a small speech style beside a
    32-dim image style; not the paper's).
    ``alpha_speaker`` weighs a speaker penalty on the z^s means that hear the voice, q's and
    r_audio's; the one option that uses labels: each row's speaker, batch key "speaker", (B,)
    indices into the ``speaker_classes`` training speakers, which the run fills in from the data.
    ``speaker_penalty`` says which:
    "critic" (``objectives.label_confusion``): a critic learns to tell the speaker from those
    means and the encoders learn to leave it guessing uniformly; "xcorr":
    the mean squared correlation (``objectives.cross_correlation``) of those z^s means with the
    speakers' one-hot columns, computed like ``alpha_semantic_xcorr`` from the pre-encodings held
    fixed (the z^s heads only learn from it: the pre-encoders keep the voice for z^m). Either way
    z^s should hold the digit, not who said it (speakers never heard); ``penalty_start`` delays
    it too.
    ``sequence_encoder``: the reader of speech in q and r_audio: "lstm" (the paper's: one LSTM, its
    last valid state) or "bilstm" (not the paper's: ``nn.frames.MeanBiLSTMEncoder``, two
    bidirectional LSTM layers averaged over frames, a better reader of unseen voices) or
    "conv_bilstm" (that reader behind two convolutions along the Mel axis with max-pooling over
    bands, ``nn.frames.MelConvBiLSTMEncoder``).
    ``image_channels``: channels of the first convolution of the image pre-encoders (q's and
    r_image's; the second has twice as many): 4 is the paper's (4, 8); wider reads digits better
    (not the paper's; the image decoder is unchanged).
    ``image_decoder``: the decoder of image modalities: "paper" (Appendix B's, on [z^s, z^i]) or
    "warp" (not the paper's: ``nn.decoders.WarpedImageDecoder``; z^s draws the digit, z^i only
    slants, scales, shifts and thickens the drawing, so z^i has no way to draw the digit).
    ``lambdas``: a weight per modality on its log-likelihood in L (default 1, the paper's), as
    MVAE's; ``{image: 10}`` weighs pixels as a Gaussian of variance 0.1 would (up to a constant)
    instead of the paper's unit variance."""

    semantic_dim: int = 32
    style_dim: int = 32
    hidden: int = 512
    alpha_ch: float = 0.1
    alpha_cm: float = 10.0
    margin: float = 0.5
    allow_missing: bool = False
    style_beta: float = 1.0
    style_beta_on: str = "all"
    alpha_indep: float = 0.0
    alpha_swap: float = 0.0
    alpha_adv: float = 0.0
    alpha_xcorr: float = 0.0
    xcorr_weights: dict[str, float] | None = None
    swap_weights: dict[str, float] | None = None
    xcorr_momentum: float = 0.0
    alpha_semantic_xcorr: float = 0.0
    penalty_start: int = 0
    widths: dict[str, int] | None = None
    style_dims: dict[str, int] | None = None
    alpha_speaker: float = 0.0
    speaker_classes: int = 0
    speaker_penalty: str = "critic"
    sequence_encoder: str = "lstm"
    image_channels: int = 4
    image_decoder: str = "paper"
    lambdas: dict[str, float] | None = None


def heads_only_mean(heads: nn.ModuleDict, latent: str, features: Tensor) -> Tensor:
    """(B, D) mean of ``latent`` from ``heads`` applied to pre-encodings held fixed: a term built on
    it trains that head only (the heads-only penalties: alpha_xcorr, alpha_semantic_xcorr, the
    speaker's xcorr)."""
    return heads[latent](features.detach()).mean


def style(modality: str) -> str:
    """Name of the style latent of ``modality``, e.g. "z_audio"."""
    return f"z_{modality}"


def style_symbol(modality: str) -> str:
    """The paper's symbol of a style latent: z^a (audio), z^i (image), else z^<modality>."""
    return {"audio": "z^a", "image": "z^i"}.get(modality, f"z^{modality}")


def _per_modality(value: Mapping[str, float] | None, names: Sequence[str], field: str,
                  kind: type = float, minimum: float = 0) -> dict | None:
    """A per-modality field (``widths``, ``style_dims``: ints >= 1; ``xcorr_weights``,
    ``swap_weights``: floats >= 0) checked: modalities of this model mapped to ``kind`` values >=
    ``minimum`` (None or empty: None); a ValueError naming ``field`` otherwise."""
    own = {m: kind(v) for m, v in (value or {}).items()}
    if set(own) - set(names) or any(v < minimum for v in own.values()):
        raise ValueError(f"pvae: {field} must map modalities of this model {list(names)} to "
                         f"values >= {minimum}, got {own}")
    return own or None


def _named_modalities(value: str, names: Sequence[str], field: str) -> frozenset[str]:
    """The modalities a ``*_on`` field (``style_beta_on``) names: "all", or names joined by ',';
    a ValueError naming ``field`` otherwise."""
    if value.strip() == "all":
        return frozenset(names)
    chosen = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if not chosen or unknown:
        raise ValueError(f"pvae: {field} must be 'all' or modalities of this model {list(names)} "
                         f"joined by ',', got {value!r}")
    return frozenset(chosen)


class UnimodalInference(nn.Module):
    """r_m(z^s, z^m | x^m): a pre-encoder of its own and one Gaussian head per latent."""

    def __init__(self, spec: ModalitySpec, semantic_dim: int, style_dim: int, hidden: int,
                 sequence_encoder: str = "lstm", image_channels: int = 4) -> None:
        super().__init__()
        self.pre = build_pre_encoder(spec, hidden, sequence_encoder, image_channels=image_channels)
        self.heads = nn.ModuleDict({
            SEMANTIC: GaussianHead(self.pre.out_dim, semantic_dim),
            style(spec.name): GaussianHead(self.pre.out_dim, style_dim),
        })

    def forward(self, x) -> dict[str, Independent]:
        return self.from_features(self.pre(x))

    def from_features(self, h: Tensor) -> dict[str, Independent]:
        """The posteriors from the pre-encoding ``h`` (B, out_dim) of ``pre``."""
        return {name: head(h) for name, head in self.heads.items()}


class MultimodalInference(nn.Module):
    """q(z^s, z^1..z^M | X): pre-encoders per modality, concatenated, one head per latent."""

    def __init__(
        self, specs: Sequence[ModalitySpec], semantic_dim: int, style_dims: Mapping[str, int],
        widths: Mapping[str, int], sequence_encoder: str = "lstm", image_channels: int = 4
    ) -> None:
        """``style_dims``: modality name -> size of its style latent; ``widths``: modality name ->
        width of its pre-encoder; ``sequence_encoder``: the reader of sequence modalities;
        ``image_channels``: the first convolution's channels of image pre-encoders."""
        super().__init__()
        self.pre = nn.ModuleDict({s.name: build_pre_encoder(s, widths[s.name], sequence_encoder,
                                                            image_channels=image_channels)
                                  for s in specs})
        width = sum(p.out_dim for p in self.pre.values())
        heads = {SEMANTIC: GaussianHead(width, semantic_dim)}
        heads.update({style(s.name): GaussianHead(width, style_dims[s.name]) for s in specs})
        self.heads = nn.ModuleDict(heads)

    def forward(self, batch: Batch) -> dict[str, Independent]:
        return self.from_features(self.features(batch))

    def features(self, batch: Batch) -> Tensor:
        """(B, sum of out_dim) the modalities' pre-encodings, concatenated."""
        return torch.cat([pre(batch[name]) for name, pre in self.pre.items()], dim=-1)

    def from_features(self, h: Tensor) -> dict[str, Independent]:
        """The posteriors from the concatenated pre-encodings ``h``."""
        return {name: head(h) for name, head in self.heads.items()}


class PVAEInference(nn.Module):
    """PVAE's inference model: the multimodal q (``joint``) and the unimodal r_m (``unimodal``)."""

    def __init__(self, joint: MultimodalInference, unimodal: Mapping[str, UnimodalInference]) -> None:
        super().__init__()
        self.joint = joint
        self.unimodal = nn.ModuleDict(dict(unimodal))


class PVAE(MultimodalModel):
    """Partitioned VAE with a shared semantic latent z_s and one style latent per modality."""

    name = "pvae"
    config_class = PVAEConfig

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        semantic_dim: int = 32,
        style_dim: int = 32,
        hidden: int = 512,
        alpha_ch: float = 0.1,
        alpha_cm: float = 10.0,
        margin: float = 0.5,
        allow_missing: bool = False,
        style_beta: float = 1.0,
        style_beta_on: str = "all",
        alpha_indep: float = 0.0,
        alpha_swap: float = 0.0,
        alpha_adv: float = 0.0,
        alpha_xcorr: float = 0.0,
        xcorr_weights: Mapping[str, float] | None = None,
        swap_weights: Mapping[str, float] | None = None,
        xcorr_momentum: float = 0.0,
        alpha_semantic_xcorr: float = 0.0,
        penalty_start: int = 0,
        widths: Mapping[str, int] | None = None,
        style_dims: Mapping[str, int] | None = None,
        alpha_speaker: float = 0.0,
        speaker_classes: int = 0,
        speaker_penalty: str = "critic",
        sequence_encoder: str = "lstm",
        image_channels: int = 4,
        image_decoder: str = "paper",
        lambdas: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(modalities)
        if len(modalities) < 2:
            raise ValueError("PVAE needs at least two modalities")
        self.image_channels = int(image_channels)  # checked by nn.modality.build_pre_encoder
        self.semantic_dim, self.style_dim, self.hidden = semantic_dim, style_dim, hidden
        self.alpha_ch, self.alpha_cm, self.margin = alpha_ch, alpha_cm, margin
        self.allow_missing = allow_missing
        weights = dict(style_beta=style_beta, alpha_indep=alpha_indep, alpha_swap=alpha_swap,
                       alpha_adv=alpha_adv, alpha_xcorr=alpha_xcorr,
                       alpha_semantic_xcorr=alpha_semantic_xcorr, alpha_speaker=alpha_speaker)
        if min(weights.values()) < 0:
            raise ValueError(f"pvae: {', '.join(f'{k} ({v})' for k, v in weights.items())} "
                             "must be >= 0")
        self.style_beta, self.alpha_indep, self.alpha_swap = style_beta, alpha_indep, alpha_swap
        self.alpha_adv, self.alpha_xcorr = alpha_adv, alpha_xcorr
        self.alpha_semantic_xcorr = alpha_semantic_xcorr
        self.alpha_speaker, self.speaker_classes = alpha_speaker, int(speaker_classes)
        if alpha_speaker > 0 and self.speaker_classes < 2:
            raise ValueError(f"pvae: alpha_speaker > 0 needs speaker_classes >= 2 (the number of training "
                             f"speakers; a run fills it in from the data), got {speaker_classes}")
        if speaker_penalty not in SPEAKER_PENALTIES:
            raise ValueError(f"pvae: speaker_penalty must be one of {SPEAKER_PENALTIES}, "
                             f"got {speaker_penalty!r}")
        self.speaker_penalty = speaker_penalty
        self.sequence_encoder = sequence_encoder
        if alpha_speaker > 0 and SPEECH not in [m.name for m in modalities]:
            raise ValueError(f"pvae: alpha_speaker penalises the speaker of the {SPEECH!r} modality, which "
                             f"this model lacks ({[m.name for m in modalities]})")
        if not 0.0 <= xcorr_momentum < 1.0:
            raise ValueError(f"pvae: xcorr_momentum ({xcorr_momentum}) must be in [0, 1)")
        self.xcorr_momentum = float(xcorr_momentum)
        names = tuple(s.name for s in modalities)
        self.style_beta_on = style_beta_on
        self.beta_modalities = _named_modalities(style_beta_on, names, "style_beta_on")
        # the configs' values (None: alpha_xcorr / alpha_swap for every modality)
        self.xcorr_weights = _per_modality(xcorr_weights, names, "xcorr_weights")
        self.swap_weights = _per_modality(swap_weights, names, "swap_weights")
        self.lambdas = _per_modality(lambdas, names, "lambdas")  # None: every likelihood at 1
        if penalty_start < 0:
            raise ValueError(f"pvae: penalty_start ({penalty_start}) must be >= 0")
        self.penalty_start = int(penalty_start)
        self.widths = _per_modality(widths, names, "widths", int, 1)  # None: every modality at ``hidden``
        width = {m: (self.widths or {}).get(m, hidden) for m in names}
        self.style_dims = _per_modality(style_dims, names, "style_dims", int, 1)  # None: ``style_dim``
        dims = {m: (self.style_dims or {}).get(m, style_dim) for m in names}
        if self.penalty_start:  # training steps seen, saved with the weights (resume continues)
            self.register_buffer("step", torch.zeros((), dtype=torch.long))
        if self.xcorr_active and self.xcorr_momentum > 0:  # running correlation matrices, per term
            for m in [m for m in names if self.xcorr_weight[m] > 0]:
                for key in self.xcorr_terms(names, m):
                    self.register_buffer(f"xcorr_{key}", torch.zeros(dims[m], semantic_dim))
            self.register_buffer("xcorr_batches", torch.zeros((), dtype=torch.long))
        if self.running_speaker:  # running (D_s, speakers) correlation matrices of q's and r_audio's z^s
            for which in ("q", "r"):
                self.register_buffer(f"speaker_xcorr_{which}",
                                     torch.zeros(semantic_dim, self.speaker_classes))
            self.register_buffer("speaker_xcorr_batches", torch.zeros((), dtype=torch.long))
        self.latents = declare(
            Latent(SEMANTIC, semantic_dim, names, "content", symbol="z^s"),
            *(Latent(style(m), dims[m], (m,), "style", symbol=style_symbol(m)) for m in names),
        )
        # Generative model p(z^s) prod_m p(z^m) p(x^m | z^s, z^m). Modules are built in this
        # order (decoders, q, r_m) so that a seed gives the same initial weights as before.
        self.image_decoder = image_decoder  # checked by nn.modality.build_decoder
        decoders = {s.name: build_decoder(s, semantic_dim + dims[s.name], width[s.name],
                                          image_decoder=image_decoder, style_dim=dims[s.name])
                    for s in modalities}
        self.generative = Generative(standard_priors(self.latents), decoders)
        # Inference models q (multimodal) and r_m (unimodal).
        joint = MultimodalInference(modalities, semantic_dim, dims, width, sequence_encoder,
                                    self.image_channels)
        unimodal = {s.name: UnimodalInference(s, semantic_dim, dims[s.name], width[s.name], sequence_encoder,
                                              self.image_channels)
                    for s in modalities}
        self.inference = PVAEInference(joint, unimodal)
        if alpha_adv > 0:  # critics of the optional adversary (not the paper's; built last)
            self.critics = nn.ModuleDict({m: nn.Sequential(
                nn.Linear(dims[m], CRITIC_WIDTH), nn.ReLU(), nn.Linear(CRITIC_WIDTH, semantic_dim))
                for m in names})
        if alpha_speaker > 0 and speaker_penalty == "critic":  # the optional speaker critic (built last)
            self.speaker_critic = nn.Sequential(nn.Linear(semantic_dim, CRITIC_WIDTH), nn.ReLU(),
                                                nn.Linear(CRITIC_WIDTH, self.speaker_classes))

    def _in_effect(self, own: Mapping[str, float] | None, default: float) -> dict[str, float]:
        """Modality -> weight: ``own``'s where it names the modality, else ``default``."""
        return {m: float((own or {}).get(m, default)) for m in self.modalities}

    @property
    def xcorr_weight(self) -> dict[str, float]:
        """The weight of ``alpha_xcorr``'s term per modality: ``xcorr_weights``' or ``alpha_xcorr``."""
        return self._in_effect(self.xcorr_weights, self.alpha_xcorr)

    @property
    def swap_weight(self) -> dict[str, float]:
        """The weight of ``alpha_swap``'s term per modality: ``swap_weights``' or ``alpha_swap``."""
        return self._in_effect(self.swap_weights, self.alpha_swap)

    @property
    def xcorr_active(self) -> bool:
        """Whether ``alpha_xcorr``'s term is on for some style latent (``xcorr_weight`` > 0)."""
        return any(w > 0 for w in self.xcorr_weight.values())

    @property
    def running_speaker(self) -> bool:
        """The speaker's xcorr is estimated against running correlation matrices (xcorr_momentum)."""
        return self.alpha_speaker > 0 and self.speaker_penalty == "xcorr" and self.xcorr_momentum > 0

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """Batch keys besides the modalities that ``loss`` reads: "speaker" with ``alpha_speaker``."""
        return (SPEAKER,) if self.alpha_speaker > 0 else ()

    @property
    def joint(self) -> MultimodalInference:
        """q(z^s, z^1..z^M | X) (``inference.joint``)."""
        return self.inference.joint

    @property
    def unimodal(self) -> nn.ModuleDict:
        """modality -> r_m(z^s, z^m | x^m) (``inference.unimodal``)."""
        return self.inference.unimodal

    def semantic_heads(self) -> list[GaussianHead]:
        """The heads of z^s: q's, then each r_m's (what ``dispart erase`` edits, all alike)."""
        return [self.joint.heads[SEMANTIC], *(r.heads[SEMANTIC] for r in self.unimodal.values())]

    @classmethod
    def legacy_prefixes(cls, modalities: Sequence[str]) -> tuple[tuple[str, str], ...]:
        return (("decoders.", "generative.decoders."), ("joint.", "inference.joint."),
                ("unimodal.", "inference.unimodal."))

    def subset_posterior(self, unimodal: Mapping[str, Mapping[str, Independent]]
                         ) -> dict[str, Independent]:
        """q(z^s, z^S | x^S) for a subset S from the unimodal posteriors r_m, m in S.

        z^s: prod_m r_m(z^s | x^m) / p(z^s)^(|S|-1) with each r_m's variance floored at the
        prior's (so the quotient is a Gaussian); z^m: r_m(z^m | x^m).
        """
        names = list(unimodal)
        sem = [unimodal[m][SEMANTIC] for m in names]
        means = torch.stack([q.mean for q in sem])
        logvars = prior_floored_logvar(torch.stack([q.variance.log() for q in sem]))
        zeros = torch.zeros_like(means[0])
        mean, logvar = product_quotient_of_experts(means, logvars, zeros, zeros)
        out = {SEMANTIC: diag_gaussian(mean, logvar)}
        out.update({style(m): unimodal[m][style(m)] for m in names})
        return out

    def encode(self, batch: Batch) -> dict[str, Independent]:
        present = self.check_inputs(batch)
        partial = self.partial_masks(batch)
        if partial:
            raise ValueError(f"pvae.encode: modalities {sorted(partial)} are missing in some rows; "
                             "encode each presence group (model.split_by_presence)")
        if len(present) == len(self.specs):
            return self.joint(batch)
        if len(present) == 1:
            return self.unimodal[present[0]](batch[present[0]])
        if not present:
            raise ValueError(f"pvae: cannot infer from an empty batch; give any of {list(self.specs)}")
        return self.subset_posterior({m: self.unimodal[m](batch[m]) for m in present})

    def decode_params(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        z = torch.cat([latents[SEMANTIC], latents[style(modality)]], dim=-1)
        return self.run_decoder(self.decoders[modality], z, modality, lengths)

    def loss(self, batch: Batch, negative_index: Tensor | None = None) -> LossOutput:
        """-(L + a_CH CH + a_CM CM) averaged over the batch.

        Args:
            batch: every modality of the model, paired row by row (any subset, and per-row
                masks, when the model was built with ``allow_missing=True``).
            negative_index: (B,) rows used as X~ in CM; random by default (not allowed with
                per-row masks: negatives are then drawn within each presence group).
        """
        present = self.present(batch)
        partial = self.partial_masks(batch)
        if self.penalty_start and self.training:
            self.step += 1
        if not self.allow_missing:
            if len(present) != len(self.specs):
                missing = sorted(set(self.specs) - set(present))
                raise ValueError(f"pvae.loss needs every modality; missing {missing} "
                                 "(build the model with allow_missing=True to train on partial data)")
            if partial:
                raise ValueError(f"pvae.loss needs every modality in every row; some rows miss "
                                 f"{sorted(partial)} (build the model with allow_missing=True)")
            return self._loss(batch, negative_index)
        if partial and negative_index is not None:
            raise ValueError("pvae.loss: negative_index cannot be given with per-row masks")
        return self.grouped_loss(batch, lambda sub: self._loss(sub, negative_index))

    def _loss(self, batch: Batch, negative_index: Tensor | None) -> LossOutput:
        present = self.present(batch)
        full = len(present) == len(self.specs)
        features: dict[str, Tensor] = {}  # pre-encodings, kept for the heads-only xcorr terms
        speaker_xcorr = self.alpha_speaker > 0 and self.speaker_penalty == "xcorr"
        if full and (self.xcorr_active or self.alpha_semantic_xcorr > 0 or speaker_xcorr):
            features["q"] = self.joint.features(batch)
            q = self.joint.from_features(features["q"])
        else:
            q = self.encode(batch)
        weights = {m: self.lambdas.get(m, 1.0) for m in present} if self.lambdas else None
        out = self.elbo(batch, q, present, weights=weights)
        rec, kl_prior, elbo = out.rec, out.kl_total, out.value
        objective = elbo
        weighed = [m for m in present if m in self.beta_modalities]
        if self.style_beta != 1.0 and weighed:  # beta on style latents' KL only (not the paper's)
            kl_style = torch.stack([out.kl[style(m)] for m in weighed]).sum(dim=0)
            objective = elbo - (self.style_beta - 1.0) * kl_style

        b = next(iter(rec.values())).shape[0]
        need_r = len(present) >= 2 or self.alpha_indep > 0 or self.alpha_semantic_xcorr > 0 or speaker_xcorr
        r = {}
        for m in present if need_r else ():
            features[m] = self.unimodal[m].pre(batch[m])
            r[m] = self.unimodal[m].from_features(features[m])
        if len(present) >= 2:
            ch = coherence_kl(q, r)
        else:  # q is r_m itself
            ch = torch.zeros_like(elbo)
        if self.alpha_cm > 0 and len(present) >= 2 and (b >= 2 or negative_index is not None):
            if negative_index is None:
                negative_index = random_negatives(b).to(kl_prior.device)
            cm = cross_modal_hinge({m: r[m][SEMANTIC].mean for m in present}, negative_index,
                                   self.margin)
        else:
            cm = torch.zeros_like(elbo)
        loss = (-objective + self.alpha_ch * ch + self.alpha_cm * cm).mean()
        terms = {f"rec_{m}": -v.mean() for m, v in rec.items()}
        terms.update({"kl": kl_prior.mean(), "elbo": elbo.mean(), "ch_kl": ch.mean(),
                      "cm_hinge": cm.mean()})
        on = not self.penalty_start or int(self.step) > self.penalty_start
        if on and self.alpha_indep > 0 and b >= 3:
            dep = torch.stack([kernel_dependence(r[m][SEMANTIC].mean, r[m][style(m)].mean)
                               for m in present]).sum()
            loss = loss + self.alpha_indep * dep
            terms["indep"] = dep
        swapped = [m for m in present if self.swap_weight[m] > 0]
        if on and swapped and b >= 2:
            other = negative_index if negative_index is not None else random_negatives(b)
            means = {name: post.mean for name, post in q.items()}
            swap = {m: self.swap_consistency(batch, means, other.to(kl_prior.device), [m]).mean()
                    for m in swapped}
            loss = loss + sum(self.swap_weight[m] * v for m, v in swap.items())
            terms["swap"] = torch.stack(list(swap.values())).sum()
            if len(set(self.swap_weight.values())) > 1:  # unequal weights: each modality's term
                terms.update({f"swap_{m}": v for m, v in swap.items()})
        if on and self.alpha_adv > 0 and len(present) >= 2 and b >= 2:
            critic, adv = self.style_adversary(q, r, present)
            loss = loss + self.alpha_adv * (critic + adv).mean()
            terms["critic"], terms["adv"] = critic.mean(), adv.mean()
        if on and self.xcorr_active and len(present) >= 2 and b >= 3:
            xcorr = self.style_content_correlation(features, r, present)
            loss = loss + sum(self.xcorr_weight[m] * v for m, v in xcorr.items())
            terms["xcorr"] = torch.stack(list(xcorr.values())).sum()
            if len(set(self.xcorr_weight.values())) > 1:  # unequal weights: each modality's term
                terms.update({f"xcorr_{m}": v for m, v in xcorr.items()})
        if on and self.alpha_semantic_xcorr > 0 and b >= 3:
            own = self.semantic_style_correlation(features, q if "q" in features else None, r, present)
            loss = loss + self.alpha_semantic_xcorr * own
            terms["semantic_xcorr"] = own
        spoken = on and self.alpha_speaker > 0 and SPEECH in present  # z^s of q and r_audio hear the voice
        if spoken and speaker_xcorr and b >= 3:
            sources = {"r": (self.unimodal[SPEECH].heads, features[SPEECH])}
            if "q" in features:
                sources["q"] = (self.joint.heads, features["q"])
            speaker = self.speaker_correlation(batch, sources)
            loss = loss + self.alpha_speaker * speaker
            terms["speaker_xcorr"] = speaker
        elif spoken and not speaker_xcorr:
            means = [q[SEMANTIC].mean, *([r[SPEECH][SEMANTIC].mean] if SPEECH in r else [])]
            critic, adv = self.speaker_adversary(batch, means)
            loss = loss + self.alpha_speaker * (critic + adv).mean()
            terms["speaker_critic"], terms["speaker_adv"] = critic.mean(), adv.mean()
        return LossOutput(loss, terms)

    def speaker_correlation(self, batch: Batch,
                            sources: Mapping[str, tuple[nn.ModuleDict, Tensor]]) -> Tensor:
        """Scalar of ``alpha_speaker`` with ``speaker_penalty="xcorr"``: sum over ``sources``
        ("r": r_audio, "q": q; their z^s heads and pre-encodings (B, H)) of ``cross_correlation``
        between the z^s mean recomputed from the pre-encoding held fixed and the one-hot
        (B, speaker_classes) of the batch's speakers (columns of speakers absent from the batch
        count 0); with ``xcorr_momentum``, ``running_cross_correlation`` against that source's
        running matrix, which a training batch then updates."""
        device = next(iter(sources.values()))[1].device
        onehot = nn.functional.one_hot(self.batch_speakers(batch, device), self.speaker_classes).float()
        total = torch.zeros((), device=device)
        running = self.running_speaker
        first = running and int(self.speaker_xcorr_batches) == 0
        for which, (heads, h) in sources.items():
            average = getattr(self, f"speaker_xcorr_{which}") if running else None
            total = total + self.correlation_term(heads_only_mean(heads, SEMANTIC, h), onehot, average, first)
        if running and self.training:
            self.speaker_xcorr_batches += 1
        return total

    def correlation_term(self, x: Tensor, y: Tensor, average: Tensor | None, first: bool) -> Tensor:
        """``cross_correlation(x, y)`` without a running buffer (``average`` None); with one,
        ``running_cross_correlation`` of this batch's correlation matrix against ``average``
        (against itself on the first batch), and in training mode the buffer then takes this
        batch's matrix with weight 1 - xcorr_momentum (all of it on the first batch)."""
        if average is None:
            return cross_correlation(x, y)
        now = correlation_matrix(x, y)
        value = running_cross_correlation(now, now if first else average.clone())
        if self.training:
            average.copy_(now.detach() if first else
                          self.xcorr_momentum * average + (1 - self.xcorr_momentum) * now.detach())
        return value

    def batch_speakers(self, batch: Batch, device: torch.device) -> Tensor:
        """(B,) int64 speaker indices of ``batch`` (key "speaker"), checked against speaker_classes."""
        speakers = batch.get(SPEAKER)
        if speakers is None:
            raise ValueError("pvae: alpha_speaker needs each batch's 'speaker' (B,) indices; this "
                             "data gives none (speech with speakers, paired by label)")
        speakers = torch.as_tensor(speakers, dtype=torch.long, device=device)
        if speakers.numel():
            low, high = (int(v) for v in torch.aminmax(speakers))  # one pass, one device sync
            if low < 0 or high >= self.speaker_classes:
                raise ValueError(f"pvae: batch 'speaker' indices must be in [0, {self.speaker_classes}) "
                                 f"(speaker_classes), got {low}..{high}")
        return speakers

    def speaker_adversary(self, batch: Batch, means: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """(B,) critic loss and (B,) encoder loss of ``alpha_speaker``: ``label_confusion`` of
        ``speaker_critic`` summed over ``means`` (z^s means, (B, D_s) each) against the batch's
        "speaker" indices."""
        speakers = self.batch_speakers(batch, means[0].device)
        critic_total = encoder_total = torch.zeros(len(speakers), device=means[0].device)
        for mean in means:
            c, e = label_confusion(self.speaker_critic, mean, speakers)
            critic_total, encoder_total = critic_total + c, encoder_total + e
        return critic_total, encoder_total

    @staticmethod
    def xcorr_terms(modalities: Sequence[str], style_of: str | None = None) -> list[str]:
        """Names "<m>_<n>_<r|q>" of ``alpha_xcorr``'s terms: z^m's mean of r_m or q against r_n's
        z^s, for every ordered pair m != n (only m = ``style_of`` when given)."""
        return [f"{m}_{n}_{which}" for m in modalities if style_of in (None, m)
                for n in modalities if n != m for which in ("r", "q")]

    def style_content_correlation(self, features: Mapping[str, Tensor],
                                  r: Mapping[str, Mapping[str, Independent]],
                                  modalities: Sequence[str]) -> dict[str, Tensor]:
        """The terms of ``alpha_xcorr``, one scalar per modality m of ``modalities`` whose weight
        (``xcorr_weight``) is > 0: the sum over the two means of z^m (q's and r_m's) and over the
        other modalities n of ``cross_correlation(mean z^m, mean r_n(z^s))``
        (with ``xcorr_momentum``: ``running_cross_correlation`` of this batch's correlation matrix
        against the running one, which a training batch then updates).

        ``features``: the pre-encodings ("q": the joint one, when every modality is present;
        m: r_m's). The z^m means are recomputed from them held fixed and r_n's z^s is held
        fixed: the term moves the z^m heads only, which can drop the content's linear directions
        from z^m but cannot take the content out of the pre-encodings z^s is read from."""
        terms: dict[str, Tensor] = {}
        running = self.xcorr_momentum > 0
        first = running and int(self.xcorr_batches) == 0
        for m in modalities:
            if self.xcorr_weight[m] <= 0:
                continue
            total = torch.zeros((), device=features[m].device)
            means = {"r": heads_only_mean(self.unimodal[m].heads, style(m), features[m])}
            if "q" in features:
                means["q"] = heads_only_mean(self.joint.heads, style(m), features["q"])
            for n in modalities:
                if n == m:
                    continue
                content = r[n][SEMANTIC].mean.detach()
                for which, mean in means.items():
                    average = getattr(self, f"xcorr_{m}_{n}_{which}") if running else None
                    total = total + self.correlation_term(mean, content, average, first)
            terms[m] = total
        if running and self.training:
            self.xcorr_batches += 1
        return terms

    def semantic_style_correlation(self, features: Mapping[str, Tensor], q: Mapping[str, Independent] | None,
                                   r: Mapping[str, Mapping[str, Independent]],
                                   modalities: Sequence[str]) -> Tensor:
        """Scalar of ``alpha_semantic_xcorr``: sum over ``modalities`` m of
        ``cross_correlation(mean r_m(z^s), mean r_m(z^m))`` and, with q (computed from
        ``features["q"]``), of the same for q's means. The z^s means are recomputed from the
        pre-encodings held fixed and the z^m means (from ``q`` and ``r``) are held fixed: only the
        z^s heads move."""
        total = torch.zeros((), device=features[modalities[0]].device)
        sources = [(self.unimodal[m].heads, features[m], r[m], m) for m in modalities]
        if q is not None:
            sources += [(self.joint.heads, features["q"], q, m) for m in modalities]
        for heads, h, post, m in sources:
            semantic = heads_only_mean(heads, SEMANTIC, h)
            total = total + cross_correlation(semantic, post[style(m)].mean.detach())
        return total

    def style_adversary(self, q: Mapping[str, Independent], r: Mapping[str, Mapping[str, Independent]],
                        modalities: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(B,) critic loss and (B,) encoder loss of ``alpha_adv``, summed over ``modalities`` m
        and over the two means of z^m (q's and r_m's): ``style_content_critic`` of critic m
        with the content = mean over the other modalities n of r_n's z^s mean."""
        critic_total = encoder_total = None
        for m in modalities:
            content = torch.stack([r[n][SEMANTIC].mean for n in modalities if n != m]).mean(dim=0)
            for source in (q[style(m)], r[m][style(m)]):
                c, e = style_content_critic(self.critics[m], source.mean, content)
                critic_total = c if critic_total is None else critic_total + c
                encoder_total = e if encoder_total is None else encoder_total + e
        assert critic_total is not None and encoder_total is not None
        return critic_total, encoder_total

    def swap_consistency(self, batch: Batch, z: Mapping[str, Tensor], other: Tensor,
                         modalities: Sequence[str]) -> Tensor:
        """(B,) sum over ``modalities`` of ||mean r_m(z^s | x~_b) - z^s_other[b]||^2 / D_s, where
        x~_b is decoded (the likelihood's mean) from z^s of row ``other[b]`` and z^m of row b (with
        row b's length: duration is style). ``z``: latent -> (B, D), in ``loss`` the means of q
        (what the latents say, without the draw's noise). They are held fixed: the term trains
        the decoder and r_m only, and cannot pull q's z^s to where re-encoding is easy."""
        total = torch.zeros(len(other), device=other.device)
        target = z[SEMANTIC][other].detach()
        for m in modalities:
            lengths = self.lengths_of(batch[m])
            latents = {SEMANTIC: target, style(m): z[style(m)].detach()}
            x = self.likelihoods[m].mean(self.decode_params(latents, m, lengths))
            if lengths is not None:
                x = Sequences(zero_padding(x, lengths), lengths)
            mean = self.unimodal[m](x)[SEMANTIC].mean
            total = total + (mean - target).pow(2).mean(dim=-1)
        return total
