"""What a model needs to know about one modality, and the networks built from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from dispart.nn.decoders import ImageDecoder, SequenceDecoder
from dispart.nn.encoders import ImageEncoder, SequenceEncoder

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


class MLPEncoder(nn.Module):
    """(B, D) vectors (or (B,) class indices when ``categorical``) -> (B, hidden): two ReLU layers."""

    def __init__(self, input_dim: int, hidden: int = 512, categorical: bool = False) -> None:
        super().__init__()
        self.input_dim, self.out_dim, self.categorical = input_dim, hidden, categorical
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        x = as_one_hot(x, self.input_dim) if self.categorical else x.float()
        return self.net(x)


class MLPDecoder(nn.Module):
    """(B, L) latent -> (B, D) likelihood parameters (means or logits): two ReLU layers + linear."""

    def __init__(self, latent_dim: int, output_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, output_dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def build_pre_encoder(spec: ModalitySpec, hidden: int = 512) -> nn.Module:
    """Observation -> (B, hidden) vector; the module exposes ``out_dim``."""
    if spec.kind == "sequence":
        return SequenceEncoder(spec.shape[0], hidden)
    if spec.kind == "image":
        return ImageEncoder(spec.shape, hidden=hidden)  # type: ignore[arg-type]
    if spec.kind in ("categorical", "vector"):
        return MLPEncoder(spec.shape[0], hidden, categorical=spec.kind == "categorical")
    raise ValueError(f"modality {spec.name!r}: unknown kind {spec.kind!r}")


def build_decoder(spec: ModalitySpec, latent_dim: int, hidden: int = 512) -> nn.Module:
    """(B, latent_dim) [+ lengths for sequences] -> likelihood parameters with the observation's
    shape (means for Gaussian likelihoods, logits for Bernoulli and categorical ones)."""
    if spec.kind == "sequence":
        return SequenceDecoder(latent_dim, spec.shape[0], hidden)
    if spec.kind == "image":
        return ImageDecoder(latent_dim, spec.shape, hidden=hidden)  # type: ignore[arg-type]
    if spec.kind in ("categorical", "vector"):
        return MLPDecoder(latent_dim, spec.shape[0], hidden)
    raise ValueError(f"modality {spec.name!r}: unknown kind {spec.kind!r}")

