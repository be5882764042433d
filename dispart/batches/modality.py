"""What a model needs to know about one modality: its name, kind, shape and likelihood."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

KINDS = ("sequence", "image", "categorical", "vector")
LIKELIHOOD_NAMES = ("gaussian", "bernoulli", "categorical")


@dataclass(frozen=True)
class ModalitySpec:
    """One modality.

    Attributes:
        name: key of this modality in a batch, e.g. "audio", "image" or "label".
        kind: "sequence" (variable-length (T, D) frames), "image" ((C, H, W) pixels),
            "categorical" (a class label out of C: (B,) indices or (B, C) one-hot vectors) or
            "vector" (fixed (D,) feature vectors).
        shape: (D,) for sequences and vectors, (C, H, W) for images, (C,) for categorical.
        likelihood: name of the observation likelihood (see dispart.distributions):
            "gaussian" (unit variance), "bernoulli" (binarised data) or "categorical".
    """

    name: str
    kind: Literal["sequence", "image", "categorical", "vector"]
    shape: tuple[int, ...]
    likelihood: str = "gaussian"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: unknown kind {self.kind!r}; choose one of {KINDS}")
        if self.likelihood not in LIKELIHOOD_NAMES:
            raise ValueError(f"modality {self.name!r}: unknown likelihood {self.likelihood!r}; "
                             f"choose one of {LIKELIHOOD_NAMES}")
        if (self.kind == "categorical") != (self.likelihood == "categorical"):
            raise ValueError(f"modality {self.name!r}: the categorical likelihood goes with kind "
                             f"'categorical' and only with it (got kind {self.kind!r}, "
                             f"likelihood {self.likelihood!r})")
        if self.kind in ("categorical", "vector", "sequence") and len(self.shape) != 1:
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} needs a 1-d shape, "
                             f"got {self.shape}")

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "likelihood": self.likelihood}

    @classmethod
    def from_dict(cls, d: dict) -> ModalitySpec:
        return cls(d["name"], d["kind"], tuple(d["shape"]), d.get("likelihood", "gaussian"))


SPEECH = ModalitySpec("audio", "sequence", (80,))
DIGIT_IMAGE = ModalitySpec("image", "image", (1, 28, 28))
BINARY_DIGIT_IMAGE = ModalitySpec("image", "image", (1, 28, 28), "bernoulli")
DIGIT_LABEL = ModalitySpec("label", "categorical", (10,), "categorical")


def as_one_hot(x: Tensor, n_classes: int) -> Tensor:
    """(B,) integer class indices or (B, C) vectors -> (B, C) float."""
    if x.dim() == 1:
        return nn.functional.one_hot(x.long(), n_classes).float()
    return x.float()
