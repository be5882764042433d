"""The networks built for one modality (from its :class:`~dispart.batches.modality.ModalitySpec`)."""

from __future__ import annotations

from torch import Tensor, nn

from dispart.batches.modality import ModalitySpec, as_one_hot
from dispart.nn.decoders import ImageDecoder, SequenceDecoder
from dispart.nn.encoders import ImageEncoder, SequenceEncoder


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

