"""Latent declarations: what each model's latents are, so no code outside a model file needs
to know a latent's name.

A model declares its latents once (``model.latents``: name -> :class:`Latent`). Evaluation,
generation, likelihood estimates and the report read everything they need from these
declarations: which modalities inform a latent, whether it carries *content* (what is shared
across modalities, e.g. the digit: PVAE's z^s, the single z of JMVAE/MVAE/VAE, DSAE's z_1:T) or
*style* (what varies within a modality, e.g. the speaker: PVAE's z^a, DSAE's f), whether it is one
vector per example (static, (B, D)) or one per frame (dynamic, (B, T, D)), and its symbol in the
papers' tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Role = Literal["content", "style"]
ROLES: tuple[str, ...] = ("content", "style")


@dataclass(frozen=True)
class Latent:
    """One latent variable of a model's generative model.

    Attributes:
        name: key of the latent in ``encode``/``decode`` dicts, e.g. "z_s".
        size: dimension D of one vector.
        modalities: the modalities whose data inform this latent through a unimodal encoder
            (``encode({m: x})`` returns it for every m listed) and whose decoders read it.
        role: "content" (shared information, the latent Table 1 clusters against the class) or
            "style" (modality-specific variation, e.g. the speaker).
        dynamic: False for one (B, D) vector per example, True for one (B, T, D) vector per
            frame of a sequence modality.
        symbol: the paper's symbol, used in tables and reports (e.g. "z^s", "z^a", "z").
    """

    name: str
    size: int
    modalities: tuple[str, ...]
    role: Role = "content"
    dynamic: bool = False
    symbol: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a latent needs a name")
        if int(self.size) < 1:
            raise ValueError(f"latent {self.name!r}: size must be >= 1, got {self.size}")
        if self.role not in ROLES:
            raise ValueError(f"latent {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if not self.modalities:
            raise ValueError(f"latent {self.name!r}: needs at least one modality")
        if not self.symbol:
            object.__setattr__(self, "symbol", self.name.replace("_", "^", 1))

    @property
    def shared(self) -> bool:
        """True when more than one modality informs this latent."""
        return len(self.modalities) > 1

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "modalities": list(self.modalities),
                "role": self.role, "dynamic": self.dynamic, "symbol": self.symbol}


def declare(*latents: Latent) -> dict[str, Latent]:
    """name -> Latent, refusing duplicate names."""
    out: dict[str, Latent] = {}
    for latent in latents:
        if latent.name in out:
            raise ValueError(f"latent {latent.name!r} declared twice")
        out[latent.name] = latent
    return out


def of_modality(latents: Mapping[str, Latent], modality: str) -> tuple[Latent, ...]:
    """The latents ``modality`` informs, in declaration order."""
    return tuple(v for v in latents.values() if modality in v.modalities)


def with_role(latents: Iterable[Latent], role: Role) -> tuple[Latent, ...]:
    """The latents among ``latents`` with ``role``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return tuple(v for v in latents if v.role == role)
