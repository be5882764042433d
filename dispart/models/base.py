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
- ``decoder_latents(modality)``, ``latent_sizes()``, ``prior(latent, batch_size)``: the
  generative model's latents, for importance-weighted likelihood estimates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.batches.batch import Batch, Modality, Sequences, index_batch
from dispart.batches.modality import ModalitySpec
from dispart.distributions import make_likelihood, standard_normal_of
from dispart.models.latents import Latent, of_modality, with_role

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


def _rows(x: Modality) -> int:
    return x.batch_size if isinstance(x, Sequences) else int(x.shape[0])


class MultimodalModel(nn.Module, ABC):
    """Base class: holds modality specs and likelihoods, checks batches."""

    name: str = "model"
    latents: dict[str, Latent]  # set by every model's __init__ (dispart.models.latents.declare)

    def __init__(self, modalities: Sequence[ModalitySpec]) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("a model needs at least one modality")
        self.specs: dict[str, ModalitySpec] = {m.name: m for m in modalities}
        self.likelihoods = {m.name: make_likelihood(m.likelihood) for m in modalities}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.specs)

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
        if self.specs[modality].kind == "sequence":
            if lengths is None:
                raise ValueError(f"decoding sequence modality {modality!r} needs lengths")
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

    def prior(self, latent: str, batch_size: int) -> Independent:
        """p(latent) = N(0, I), batch shape (batch_size,)."""
        p = next(self.parameters())
        return standard_normal_of((batch_size, self.latent_sizes()[latent]), p.device, p.dtype)

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
        """Mean of p(x^modality | latents); ``lengths`` (B,) frames for sequence modalities."""
        params = self.decode_params(latents, modality, lengths)
        return self.likelihoods[modality].mean(params)

    @abstractmethod
    def loss(self, batch: Batch) -> LossOutput:
        """Training objective on a batch."""

    @torch.no_grad()
    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """Posterior means of every latent inferable from ``batch`` (evaluation helper)."""
        return {k: q.mean for k, q in self.encode(batch).items()}

    def hparams(self) -> dict:
        """Plain-data description from which ``dispart.models.build_model`` rebuilds the model."""
        raise NotImplementedError

    def _hparams(self, **sizes: object) -> dict:
        """``hparams`` helper: name and modality specs plus the model's own constructor values."""
        return {"name": self.name, "modalities": [s.to_dict() for s in self.specs.values()], **sizes}
