"""The one model API every dispart model follows.

A batch is a mapping modality name -> tensor (see dispart.batches.batch). A modality absent from
the batch is absent for every row; a modality absent for *some* rows is present in the batch
with placeholder values in those rows and a (B,) bool mask under ``mask_key(modality)``
("<modality>:present", True where the row has it). Every model offers:

- ``encode(batch)``: posteriors (latent name -> distribution) inferred from the modalities
  present in ``batch``;
- ``decode(latents, modality, lengths=None)``: mean of p(x^m | latents), no side effects;
  ``decode_params`` gives the likelihood's parameters (means, or logits for Bernoulli and
  categorical likelihoods) and ``reconstruction_log_prob`` log p(x^m | latents);
- ``loss(batch)``: the training objective as a :class:`LossOutput`; a batch with per-row masks
  is split by presence pattern, each group gets the loss of its own subset of modalities, and
  the results are averaged with the group sizes as weights (rows with none of the model's
  modalities are dropped), so a masked-out value changes nothing;
- ``latents``: the model's latent declarations (name -> :class:`~dispart.models.latents.Latent`:
  size, the modalities that inform it, role "content"/"style", static or dynamic, symbol); code
  outside the model files reads latent roles from here, never from latent names;
- ``latent_names(modality)``: the latents a single modality lets you infer;
- ``decoder_latents(modality)``, ``latent_sizes()``, ``prior(latent, batch_size, lengths)``:
  the generative model's latents, for importance-weighted likelihood estimates;
- ``sample_prior(n, lengths)``: z ~ p for every latent; ``sample(n, modality, lengths,
  generator)``: generated examples of one modality (prior draws decoded, a :class:`PriorSample`);
- ``generative`` (:class:`Generative`: ``priors`` latent -> prior, ``decoders`` modality ->
  decoder) and ``inference`` (the model's encoders): the two halves of the model as named
  modules, Pyro-style; weights are saved under these prefixes;
- ``elbo(batch, q, modalities)``: the one ELBO block (sample z, reconstruct, KL to the priors)
  every model's objective is built from;
- ``config`` (the model's config dataclass, see :mod:`dispart.models.registry`) and
  ``hparams()`` (name, modality specs and the config, as plain data).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, Modality, Sequences, batch_size, index_batch
from dispart.batches.modality import ModalitySpec
from dispart.distributions import make_likelihood
from dispart.models.latents import Latent, of_modality, with_role
from dispart.models.priors import Prior, StandardNormalPrior, frame_mask
from dispart.objectives import kl_dynamic, kl_static

METADATA_KEYS = ("label", "index", "speaker")
MASK_SUFFIX = ":present"


def mask_key(modality: str) -> str:
    """Batch key of the (B,) bool mask saying which rows have ``modality``."""
    return f"{modality}{MASK_SUFFIX}"


@dataclass
class LossOutput:
    """``loss`` is the scalar to minimise (mean over the batch); ``terms`` are batch means
    of its parts, for logging, named as in the papers (positive = penalty)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Elbo:
    """One ELBO evaluation, per sample.

    Attributes:
        z: latent -> the reparameterised sample used, (B, D) or (B, T, D).
        rec: modality -> (B,) log p(x^m | z) in nats (unweighted).
        kl: latent -> (B,) KL(q(latent) || p(latent)) (dynamic latents: summed over valid frames).
        kl_total: (B,) sum of ``kl`` over latents.
        value: (B,) sum_m w_m rec[m] - beta * kl_total.
    """

    z: dict[str, Tensor]
    rec: dict[str, Tensor]
    kl: dict[str, Tensor]
    kl_total: Tensor
    value: Tensor


@dataclass
class PriorSample:
    """What :meth:`MultimodalModel.sample` returns.

    Attributes:
        z: latent -> the prior draw, (n, D) static or (n, T, D) dynamic (zero past each length).
        x: the decoded mean of p(x | z): (n, *shape), or (n, max(lengths), *frame shape) for a
            "sequence"/"frames" modality, zero past each length.
        lengths: (n,) int64 frames per example (CPU), None when nothing needed them.
    """

    z: dict[str, Tensor]
    x: Tensor
    lengths: Tensor | None


def _as_lengths(n: int, lengths: Tensor | Sequence[int] | int | None, who: str) -> Tensor:
    """``lengths`` as an (n,) int64 CPU tensor of values >= 1 (one int: the same for all)."""
    if lengths is None:
        raise ValueError(f"{who}: lengths is required (frames per example: (n,) integers or one int)")
    if isinstance(lengths, int) and not isinstance(lengths, bool):
        lengths = [lengths] * n
    t = torch.as_tensor(lengths).detach().cpu()
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{who}: lengths must hold integers, got dtype {t.dtype}")
    if tuple(t.shape) != (n,):
        raise ValueError(f"{who}: lengths must have shape ({n},), got {tuple(t.shape)}")
    if bool((t < 1).any()):
        raise ValueError(f"{who}: lengths must be >= 1, got min {int(t.min())}")
    return t.long()


class Generative(nn.Module):
    """The generative model p: one prior per latent and one decoder per modality."""

    def __init__(self, priors: Mapping[str, Prior], decoders: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.priors = nn.ModuleDict(dict(priors))
        self.decoders = nn.ModuleDict(dict(decoders))


def standard_priors(latents: Mapping[str, Latent]) -> dict[str, Prior]:
    """N(0, I) for every declared latent (per frame for dynamic ones)."""
    return {name: StandardNormalPrior(lat.size, lat.dynamic) for name, lat in latents.items()}


def rename_legacy_keys(state: Mapping[str, Any], prefixes: Sequence[tuple[str, str]],
                       prefix: str = "") -> dict[str, Any]:
    """``state`` with keys ``prefix + old...`` renamed ``prefix + new...`` for each (old, new) of
    ``prefixes`` (first match wins); other keys unchanged, so it is idempotent."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        new_key = key
        if key.startswith(prefix):
            rest = key[len(prefix):]
            for old, new in prefixes:
                if rest.startswith(old) and not rest.startswith(new):
                    new_key = prefix + new + rest[len(old):]
                    break
        if new_key in out:
            raise ValueError(f"state dict has both {key!r} and an old key that maps to it")
        out[new_key] = value
    return out


def _rows(x: Modality) -> int:
    return x.batch_size if isinstance(x, Sequences) else int(x.shape[0])


class MultimodalModel(nn.Module, ABC):
    """Base class: holds modality specs and likelihoods, checks batches."""

    name: str = "model"
    config_class: ClassVar[type]  # the model's config dataclass (hyper-parameters only)
    latents: dict[str, Latent]  # set by every model's __init__ (dispart.models.latents.declare)
    generative: Generative  # set by every model's __init__: priors and decoders
    inference: nn.Module  # set by every model's __init__: the encoders

    def __init__(self, modalities: Sequence[ModalitySpec]) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("a model needs at least one modality")
        self.specs: dict[str, ModalitySpec] = {m.name: m for m in modalities}
        self.likelihoods = {m.name: make_likelihood(m.likelihood) for m in modalities}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.specs)

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """Metadata keys of a batch (``METADATA_KEYS``) that ``loss`` reads besides the modalities
        and their masks; none by default (PVAE's speaker penalty reads "speaker")."""
        return ()

    # ----------------------------------------------------------------------------- batches
    def present(self, batch: Batch) -> tuple[str, ...]:
        """The model's modalities present in ``batch``; unknown keys other than metadata are errors.

        A modality whose mask is all False counts as absent.
        """
        unknown = [k for k in batch if k not in self.specs and k not in METADATA_KEYS
                   and not k.endswith(MASK_SUFFIX)]
        if unknown:
            raise ValueError(
                f"{self.name}: batch has modalities {unknown} this model does not know "
                f"(it has {list(self.specs)})"
            )
        out = []
        for m in self.specs:
            if m not in batch:
                continue
            mask = batch.get(mask_key(m))
            if mask is not None and not bool(torch.as_tensor(mask).any()):
                continue
            out.append(m)
        return tuple(out)

    def partial_masks(self, batch: Batch) -> dict[str, Tensor]:
        """Masks of present modalities that are False for some rows (modality -> (B,) bool)."""
        out = {}
        for m in self.present(batch):
            mask = batch.get(mask_key(m))
            if mask is not None:
                mask = torch.as_tensor(mask, dtype=torch.bool)
                if mask.shape != (_rows(batch[m]),):
                    raise ValueError(f"{mask_key(m)} must be ({_rows(batch[m])},) bool, "
                                     f"got shape {tuple(mask.shape)}")
                if not bool(mask.all()):
                    out[m] = mask
        return out

    def split_by_presence(self, batch: Batch) -> list[tuple[Tensor, dict[str, Modality]]]:
        """Rows grouped by the set of the model's modalities they have.

        Returns ``[(row_index, sub_batch)]`` where ``sub_batch`` holds only the modalities
        every one of those rows has (no masks). Rows with none of the model's modalities are
        left out. Without partial masks this is the whole batch as one group.
        """
        present = self.present(batch)
        if not present:
            raise ValueError(f"{self.name}: the batch has none of the modalities {list(self.specs)}")
        masks = self.partial_masks(batch)
        n = _rows(batch[present[0]])
        if not masks:
            return [(torch.arange(n), {m: batch[m] for m in present})]
        full = torch.stack([masks.get(m, torch.ones(n, dtype=torch.bool)).cpu() for m in present])
        code = (full.long() * (2 ** torch.arange(len(present)))[:, None]).sum(dim=0)
        groups = []
        for c in torch.unique(code).tolist():
            subset = [m for i, m in enumerate(present) if (c >> i) & 1]
            if not subset:
                continue
            rows = torch.nonzero(code == c).squeeze(1)
            groups.append((rows, index_batch({m: batch[m] for m in subset}, rows)))
        if not groups:
            raise ValueError(f"{self.name}: no row of the batch has any of {list(self.specs)}")
        return groups

    def grouped_loss(self, batch: Batch, loss_fn: Callable[[dict[str, Modality]], LossOutput]
                     ) -> LossOutput:
        """``loss_fn`` on every presence group, averaged with group sizes as weights.

        Each term is averaged over the rows of the groups that report it.
        """
        groups = self.split_by_presence(batch)
        if len(groups) == 1 and not self.partial_masks(batch):
            return loss_fn(groups[0][1])
        total_rows = sum(len(rows) for rows, _ in groups)
        loss = None
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for rows, sub in groups:
            out = loss_fn(sub)
            w = len(rows) / total_rows
            loss = out.loss * w if loss is None else loss + out.loss * w
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0.0) + v * len(rows)
                counts[k] = counts.get(k, 0) + len(rows)
        terms = {k: sums[k] / counts[k] for k in sums}
        return LossOutput(loss, terms)

    def check_input(self, modality: str, x: Modality) -> None:
        """Raise a clear error when ``x`` does not have the shape ``modality`` expects."""
        spec = self.specs[modality]
        if spec.kind == "sequence":
            if not isinstance(x, Sequences):
                raise ValueError(f"modality {modality!r} expects Sequences, got {type(x).__name__}")
            if x.data.shape[-1] != spec.shape[0]:
                raise ValueError(
                    f"modality {modality!r} expects {spec.shape[0]}-dim frames, "
                    f"got {x.data.shape[-1]}"
                )
        elif spec.kind == "frames":
            if not isinstance(x, Sequences):
                what = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"modality {modality!r} expects Sequences of image frames "
                                 f"(B, T, {', '.join(map(str, spec.shape))}), got {what}")
            if x.frame_shape != spec.shape:
                raise ValueError(f"modality {modality!r} expects frames of shape {spec.shape} "
                                 f"(data (B, T, {', '.join(map(str, spec.shape))})), got data of "
                                 f"shape {tuple(x.data.shape)}")
        elif spec.kind == "categorical":
            ok = isinstance(x, Tensor) and (
                (x.dim() == 1 and not torch.is_floating_point(x)) or tuple(x.shape[1:]) == spec.shape)
            if not ok:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"modality {modality!r} expects (B,) integer classes or "
                                 f"(B, {spec.shape[0]}) one-hot vectors, got {shape}")
        else:
            if not isinstance(x, Tensor) or tuple(x.shape[1:]) != spec.shape:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"modality {modality!r} expects (B, {spec.shape}), got {shape}")

    def check_inputs(self, batch: Batch) -> tuple[str, ...]:
        """``present(batch)`` after checking every present modality's shape."""
        present = self.present(batch)
        for m in present:
            self.check_input(m, batch[m])
        return present

    # ----------------------------------------------------------------------------- likelihoods
    def log_likelihood(self, modality: str, mean: Tensor, x: Modality) -> Tensor:
        """(B,) log p(x^m | z) given the decoded mean (see ``reconstruction_log_prob``)."""
        return self.likelihoods[modality].log_prob_of_mean(mean, x)

    def reconstruction_log_prob(self, latents: Mapping[str, Tensor], modality: str, x: Modality
                                ) -> Tensor:
        """(B,) log p(x^m | latents), from the decoder's parameters (logits where relevant)."""
        params = self.decode_params(latents, modality, self.lengths_of(x))
        return self.likelihoods[modality].log_prob(params, x)

    @staticmethod
    def lengths_of(x: Modality) -> Tensor | None:
        return x.lengths if isinstance(x, Sequences) else None

    def run_decoder(self, decoder: nn.Module, z: Tensor, modality: str, lengths: Tensor | None
                    ) -> Tensor:
        if self.specs[modality].dynamic:
            if lengths is None:
                raise ValueError(f"decoding {self.specs[modality].kind} modality {modality!r} needs "
                                 "lengths ((B,) frames per example)")
            return decoder(z, lengths)
        return decoder(z)

    # ----------------------------------------------------------------------------- latents
    def decoder_latents(self, modality: str) -> tuple[str, ...]:
        """Latents p(x^modality | .) conditions on."""
        return self.latent_names(modality)

    def latent_sizes(self) -> dict[str, int]:
        """Every latent of the generative model and its size."""
        return {name: latent.size for name, latent in self.latents.items()}

    def latent_names(self, modality: str) -> tuple[str, ...]:
        """Latents inferable from ``modality`` alone (keys of ``encode({modality: x})``)."""
        return tuple(latent.name for latent in of_modality(self.latents, modality))

    def content_latents(self, modality: str) -> tuple[Latent, ...]:
        """The content latents ``modality`` informs (PVAE's z^s, the single z of JMVAE/MVAE)."""
        return with_role(of_modality(self.latents, modality), "content")

    def style_latents(self, modality: str) -> tuple[Latent, ...]:
        """The style latents ``modality`` informs (PVAE's z^a for audio); () when it has none."""
        return with_role(of_modality(self.latents, modality), "style")

    @property
    def decoders(self) -> nn.ModuleDict:
        """modality -> decoder (``generative.decoders``)."""
        return self.generative.decoders

    @property
    def priors(self) -> nn.ModuleDict:
        """latent -> prior (``generative.priors``)."""
        return self.generative.priors

    def _prior_module(self, latent: str) -> Prior:
        if latent not in self.generative.priors:
            raise ValueError(f"{self.name}: no latent {latent!r}; it has {list(self.latents)}")
        return self.generative.priors[latent]

    def prior(self, latent: str, batch_size: int, lengths: Tensor | None = None) -> Independent:
        """p(latent) from ``generative.priors``: batch shape (batch_size,) for a static latent,
        (batch_size, T) for a dynamic one (T = max(lengths); a learned autoregressive prior
        cannot be given without z: use its ``distribution(..., z=z)``)."""
        return self._prior_module(latent).distribution(batch_size, lengths)

    def sample_prior(self, batch_size: int, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """z ~ p for every latent: (B, D) static, (B, T, D) dynamic (``lengths`` (B,) needed)."""
        return {name: self._prior_module(name).sample(batch_size, lengths) for name in self.latents}

    @torch.no_grad()
    def sample(self, n: int, modality: str, lengths: Tensor | Sequence[int] | int | None = None,
               generator: torch.Generator | None = None) -> PriorSample:
        """Generate ``n`` examples of ``modality`` from the generative model alone.

        Every latent is drawn from its prior (``sample_prior``: (n, D) static, (n, T, D) dynamic),
        then ``modality`` is decoded from the latents its decoder reads; the observation is the
        mean of p(x | z) (as ``decode``), not a draw from it.

        Args:
            n: number of examples (>= 1).
            modality: the modality to generate.
            lengths: frames per example, (n,) integers >= 1 or one int for all; required for a
                "sequence"/"frames" modality and for models with dynamic latents, else ignored.
            generator: makes the draw reproducible without touching the global RNG state (the
                latents are drawn under a seed taken from it); None: the global RNG.

        Returns:
            A :class:`PriorSample`: ``z`` (latent -> tensor), ``x`` (n, *shape) or
            (n, max(lengths), *frame shape) zero past each length, and the ``lengths`` used.
            Runs in eval mode without gradients; the training mode is restored.
        """
        if modality not in self.specs:
            raise ValueError(f"{self.name}.sample: unknown modality {modality!r}; "
                             f"the model has {list(self.specs)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{self.name}.sample: n must be an integer >= 1, got {n!r}")
        dynamic = self.specs[modality].dynamic
        ln = None
        if dynamic or any(lat.dynamic for lat in self.latents.values()):
            ln = _as_lengths(n, lengths, f"{self.name}.sample({modality!r})")
        was_training = self.training
        self.eval()
        try:
            if generator is None:
                z = self.sample_prior(n, ln)
            else:
                seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
                device = next(self.parameters()).device
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(seed)
                    z = self.sample_prior(n, ln)
            x = self.decode({k: z[k] for k in self.decoder_latents(modality)}, modality,
                            ln if dynamic else None)
        finally:
            self.train(was_training)
        return PriorSample(z, x, ln)

    def latent_lengths(self, latent: str, batch: Batch) -> Tensor:
        """(B,) frames of a dynamic latent: the lengths of the first sequence modality in ``batch``
        among those the latent is declared with."""
        for m in self.latents[latent].modalities:
            if m in batch and isinstance(batch[m], Sequences):
                return batch[m].lengths
        raise ValueError(f"{self.name}: dynamic latent {latent!r} needs one of the sequence "
                         f"modalities {list(self.latents[latent].modalities)} in the batch")

    def kl_to_priors(self, q: Mapping[str, Independent], z: Mapping[str, Tensor], batch: Batch
                     ) -> dict[str, Tensor]:
        """latent -> (B,) KL(q(latent) || p(latent)); a dynamic latent's prior is conditioned on
        its sample ``z`` (teacher forcing) and its KL summed over the valid frames."""
        out: dict[str, Tensor] = {}
        for name, post in q.items():
            prior = self._prior_module(name)
            b = int(post.batch_shape[0])
            if prior.dynamic:
                lengths = self.latent_lengths(name, batch)
                p = prior.distribution(b, lengths, z=z[name])
                mask = frame_mask(lengths.to(post.mean.device), int(post.batch_shape[1]))
                out[name] = kl_dynamic(post, p, mask)
            else:
                out[name] = kl_static(post, prior.distribution(b))
        return out

    def elbo(self, batch: Batch, q: Mapping[str, Independent], modalities: Sequence[str],
             weights: Mapping[str, float] | None = None, beta: float = 1.0,
             samples: Mapping[str, Tensor] | None = None) -> Elbo:
        """E_q[sum_m w_m log p(x^m | z)] - beta KL(q || p), one sample of z per row.

        Draws z ~ q by ``rsample`` in the order of ``q``, then reconstructs every modality in
        ``modalities`` (all must be in ``batch``). ``weights`` (default 1) multiply the
        log-likelihoods in ``value`` only; ``rec`` stays unweighted. ``samples`` (latent ->
        tensor of q's sample shape) are draws made before ``q`` of another latent was computed
        (DSAE's full q draws f, then infers q(z_1:T | f, x)): they are used as they are, the
        other latents are drawn in the order of ``q``; None draws every latent.
        """
        missing = [m for m in modalities if m not in batch]
        if missing:
            raise ValueError(f"{self.name}.elbo: modalities {missing} are not in the batch")
        if weights is not None and any(m not in weights for m in modalities):
            raise ValueError(f"{self.name}.elbo: weights {sorted(weights)} lack some of "
                             f"{list(modalities)}")
        if samples:
            unknown = [k for k in samples if k not in q]
            wrong = [k for k in samples if k in q and tuple(samples[k].shape) != tuple(q[k].mean.shape)]
            if unknown or wrong:
                what = "are not latents of q" if unknown else "do not have the shape of q's samples"
                raise ValueError(f"{self.name}.elbo: samples {unknown or wrong} {what} (q has {list(q)})")
            z = {name: samples[name] if name in samples else post.rsample() for name, post in q.items()}
        else:
            z = {name: post.rsample() for name, post in q.items()}
        rec = {m: self.reconstruction_log_prob(z, m, batch[m]) for m in modalities}
        kl = self.kl_to_priors(q, z, batch)
        kl_total = torch.stack(list(kl.values())).sum(dim=0)
        terms = [rec[m] if weights is None else weights[m] * rec[m] for m in modalities]
        value = torch.stack(terms).sum(dim=0) - (kl_total if beta == 1.0 else beta * kl_total)
        return Elbo(z, rec, kl, kl_total, value)

    # ----------------------------------------------------------------------------- API
    @abstractmethod
    def encode(self, batch: Batch) -> dict[str, Independent]:
        """Posteriors inferred from the modalities present in ``batch``."""

    def decode_params(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        """Parameters of p(x^modality | latents): means (Gaussian) or logits."""
        raise NotImplementedError

    def decode(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        """Mean of p(x^modality | latents); ``lengths`` (B,) frames for "sequence" and "frames"
        modalities (output (B, max(lengths), *frame shape), zero past each length)."""
        params = self.decode_params(latents, modality, lengths)
        return self.likelihoods[modality].mean(params)

    @abstractmethod
    def loss(self, batch: Batch) -> LossOutput:
        """Training objective on a batch."""

    @torch.no_grad()
    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """Posterior means of every latent inferable from ``batch`` (evaluation helper)."""
        return {k: q.mean for k, q in self.encode(batch).items()}

    @torch.no_grad()
    def encode_in_batches(self, batch: Batch, chunk: int = 512) -> dict[str, Tensor]:
        """Posterior means of ``batch`` computed ``chunk`` rows at a time, in eval mode (the
        training mode is restored): latent -> (N, D), or (N, T_max, D) for dynamic latents
        (zero past each chunk's own padding)."""
        if chunk < 1:
            raise ValueError(f"encode_in_batches: chunk must be >= 1, got {chunk}")
        n = batch_size(batch)
        parts: dict[str, list[Tensor]] = {}
        was_training = self.training
        self.eval()
        try:
            for s in range(0, n, chunk):
                sub = index_batch(batch, torch.arange(s, min(n, s + chunk)))
                for k, v in self.embed(sub).items():
                    parts.setdefault(k, []).append(v)
        finally:
            self.train(was_training)
        return {k: _cat_padded(v) for k, v in parts.items()}

    @torch.no_grad()
    def decode_in_batches(self, latents: Mapping[str, Tensor], modality: str,
                          lengths: Tensor | None = None, chunk: int = 512) -> Tensor:
        """``decode`` of (N, ...) latents ``chunk`` rows at a time, in eval mode (restored):
        (N, *shape) means, or (N, max(lengths), *frame shape) for a "sequence" or "frames"
        modality, zero past each length."""
        if chunk < 1:
            raise ValueError(f"decode_in_batches: chunk must be >= 1, got {chunk}")
        if not latents:
            raise ValueError("decode_in_batches: no latents given")
        n = int(next(iter(latents.values())).shape[0])
        device = next(self.parameters()).device
        parts: list[Tensor] = []
        was_training = self.training
        self.eval()
        try:
            for s in range(0, n, chunk):
                z = {k: torch.as_tensor(v[s:s + chunk]).to(device) for k, v in latents.items()}
                ln = None if lengths is None else torch.as_tensor(lengths[s:s + chunk]).long()
                x = self.decode(z, modality, ln)
                if ln is not None and self.specs[modality].dynamic:
                    mask = frame_mask(ln.to(x.device), x.shape[1]).to(x.dtype)
                    x = x * mask.view(*mask.shape, *([1] * (x.dim() - 2)))
                parts.append(x)
        finally:
            self.train(was_training)
        return _cat_padded(parts)

    # ----------------------------------------------------------------------------- config
    @property
    def config(self) -> Any:
        """The model's config dataclass (``config_class``) with this model's values."""
        return self.config_class(**{f.name: getattr(self, f.name) for f in fields(self.config_class)})

    @classmethod
    def from_config(cls, modalities: Sequence[ModalitySpec], config: Any, **fixed: Any
                    ) -> MultimodalModel:
        """The model over ``modalities`` with the hyper-parameters of ``config`` (a
        ``config_class`` instance) and the registry entry's ``fixed`` arguments."""
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__}.from_config needs a {cls.config_class.__name__}, "
                            f"got {type(config).__name__}")
        return cls(modalities, **asdict(config), **fixed)

    @classmethod
    def legacy_prefixes(cls, modalities: Sequence[str]) -> tuple[tuple[str, str], ...]:
        """(old, new) state-dict key prefixes of weights saved before ``generative`` /
        ``inference`` existed (run folders and checkpoints of dispart <= 0.x)."""
        return ()

    def hparams(self) -> dict:
        """Plain-data description from which ``dispart.models.build_model`` rebuilds the model:
        {"name", "modalities" (spec dicts), **config fields} (the "model" entry of run.json)."""
        return {"name": self.name, "modalities": [s.to_dict() for s in self.specs.values()],
                **asdict(self.config)}


def _cat_padded(parts: Sequence[Tensor]) -> Tensor:
    """Concatenate along dim 0, zero-padding dim 1 to the longest part for 3-d+ sequence chunks."""
    if len({p.shape[1:] for p in parts}) <= 1 or parts[0].dim() < 3:
        return torch.cat(list(parts))
    t = max(int(p.shape[1]) for p in parts)
    padded = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, t - p.shape[1])) for p in parts]
    return torch.cat(padded)
