"""What a model needs to know about one modality, and the networks built from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from dispart.nn.decoders import ImageDecoder, SequenceDecoder
from dispart.nn.encoders import ImageEncoder, SequenceEncoder


@dataclass(frozen=True)
class ModalitySpec:
    """One modality.

    Attributes:
        name: key of this modality in a batch, e.g. "audio" or "image".
        kind: "sequence" (variable-length (T, D) frames) or "image" ((C, H, W) pixels).
        shape: (D,) for sequences, (C, H, W) for images.
        likelihood: name of the observation likelihood (see dispart.distributions).
    """

    name: str
    kind: Literal["sequence", "image"]
    shape: tuple[int, ...]
    likelihood: str = "gaussian"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "likelihood": self.likelihood}

    @classmethod
    def from_dict(cls, d: dict) -> ModalitySpec:
        return cls(d["name"], d["kind"], tuple(d["shape"]), d.get("likelihood", "gaussian"))


SPEECH = ModalitySpec("audio", "sequence", (80,))
DIGIT_IMAGE = ModalitySpec("image", "image", (1, 28, 28))


def build_pre_encoder(spec: ModalitySpec, hidden: int = 512) -> nn.Module:
    """Observation -> (B, hidden) vector; the module exposes ``out_dim``."""
    if spec.kind == "sequence":
        return SequenceEncoder(spec.shape[0], hidden)
    if spec.kind == "image":
        return ImageEncoder(spec.shape, hidden=hidden)  # type: ignore[arg-type]
    raise ValueError(f"modality {spec.name!r}: unknown kind {spec.kind!r}")


def build_decoder(spec: ModalitySpec, latent_dim: int, hidden: int = 512) -> nn.Module:
    """(B, latent_dim) [+ lengths for sequences] -> mean with the observation's shape."""
    if spec.kind == "sequence":
        return SequenceDecoder(latent_dim, spec.shape[0], hidden)
    if spec.kind == "image":
        return ImageDecoder(latent_dim, spec.shape, hidden=hidden)  # type: ignore[arg-type]
    raise ValueError(f"modality {spec.name!r}: unknown kind {spec.kind!r}")
