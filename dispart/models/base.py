"""The one model API every dispart model follows.

A batch is a mapping modality name -> tensor (see dispart.data.batch). Every model offers:

- ``encode(batch)``: posteriors (latent name -> distribution) inferred from the modalities
  present in ``batch``;
- ``decode(latents, modality, lengths=None)``: mean of p(x^m | latents), no side effects;
- ``loss(batch)``: the training objective as a :class:`LossOutput`;
- ``latent_names(modality)``: the latents a single modality lets you infer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from dispart.data.batch import Batch, Modality, Sequences
from dispart.distributions import make_likelihood
from dispart.nn.modality import ModalitySpec


@dataclass
class LossOutput:
    """``loss`` is the scalar to minimise (mean over the batch); ``terms`` are batch means
    of its parts, for logging, named as in the papers (positive = penalty)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class MultimodalModel(nn.Module, ABC):
    """Base class: holds modality specs and likelihoods, checks batches."""

    name: str = "model"

    def __init__(self, modalities: Sequence[ModalitySpec]) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("a model needs at least one modality")
        self.specs: dict[str, ModalitySpec] = {m.name: m for m in modalities}
        self.likelihoods = {m.name: make_likelihood(m.likelihood) for m in modalities}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def present(self, batch: Batch) -> tuple[str, ...]:
        """The model's modalities present in ``batch``; unknown keys other than metadata are errors."""
        unknown = [k for k in batch if k not in self.specs and k not in ("label", "index", "speaker")]
        if unknown:
            raise ValueError(
                f"{self.name}: batch has modalities {unknown} this model does not know "
                f"(it has {list(self.specs)})"
            )
        return tuple(m for m in self.specs if m in batch)

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
        else:
            if not isinstance(x, Tensor) or tuple(x.shape[1:]) != spec.shape:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"modality {modality!r} expects (B, {spec.shape}), got {shape}")

    def log_likelihood(self, modality: str, mean: Tensor, x: Modality) -> Tensor:
        """(B,) log p(x^m | z) given the decoded mean."""
        return self.likelihoods[modality].log_prob(mean, x)

    @staticmethod
    def lengths_of(x: Modality) -> Tensor | None:
        return x.lengths if isinstance(x, Sequences) else None

    @abstractmethod
    def encode(self, batch: Batch) -> dict[str, Independent]:
        """Posteriors inferred from the modalities present in ``batch``."""

    @abstractmethod
    def decode(
        self, latents: Mapping[str, Tensor], modality: str, lengths: Tensor | None = None
    ) -> Tensor:
        """Mean of p(x^modality | latents); ``lengths`` (B,) frames for sequence modalities."""

    @abstractmethod
    def loss(self, batch: Batch) -> LossOutput:
        """Training objective on a batch."""

    @abstractmethod
    def latent_names(self, modality: str) -> tuple[str, ...]:
        """Latents inferable from ``modality`` alone (keys of ``encode({modality: x})``)."""

    @torch.no_grad()
    def embed(self, batch: Batch) -> dict[str, Tensor]:
        """Posterior means of every latent inferable from ``batch`` (evaluation helper)."""
        return {k: q.mean for k, q in self.encode(batch).items()}

    def hparams(self) -> dict:
        """Plain-data description from which ``dispart.models.build_model`` rebuilds the model."""
        raise NotImplementedError
