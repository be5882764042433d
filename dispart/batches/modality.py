"""What a model needs to know about one modality: its name, kind, shape and likelihood."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

KINDS = ("sequence", "frames", "image", "categorical", "vector")
DYNAMIC_KINDS = ("sequence", "frames")  # examples are (T, *shape): one item per time step
LIKELIHOOD_NAMES = ("gaussian", "bernoulli", "categorical")
_SHAPE_RANK = {"sequence": 1, "vector": 1, "categorical": 1, "image": 3, "frames": 3}


@dataclass(frozen=True)
class ModalitySpec:
    """One modality.

    Attributes:
        name: key of this modality in a batch, e.g. "audio", "image", "video" or "label".
        kind: "sequence" (variable-length (T, D) feature frames), "frames" (variable-length
            image sequences (T, C, H, W), e.g. video; batched as ``Sequences`` with data
            (B, T, C, H, W)), "image" ((C, H, W) pixels), "categorical" (a class label out of C:
            (B,) indices or (B, C) one-hot vectors) or "vector" (fixed (D,) feature vectors).
        shape: (D,) for sequences and vectors, (C, H, W) for images and for one frame of
            "frames", (C,) for categorical.
        likelihood: name of the observation likelihood (see dispart.distributions):
            "gaussian" (unit variance), "bernoulli" (binarised data) or "categorical".
        frame_rate: time steps per second of a dynamic modality ("sequence"/"frames"), e.g.
            100.0 for 10 ms feature frames or 25.0 for 25 fps video; None if unknown or static.
            Two modalities paired by example with equal frame rates are aligned frame by frame.
    """

    name: str
    kind: Literal["sequence", "frames", "image", "categorical", "vector"]
    shape: tuple[int, ...]
    likelihood: str = "gaussian"
    frame_rate: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"modality name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: unknown kind {self.kind!r}; choose one of {KINDS}")
        if self.likelihood not in LIKELIHOOD_NAMES:
            raise ValueError(f"modality {self.name!r}: unknown likelihood {self.likelihood!r}; "
                             f"choose one of {LIKELIHOOD_NAMES}")
        if (self.kind == "categorical") != (self.likelihood == "categorical"):
            raise ValueError(f"modality {self.name!r}: the categorical likelihood goes with kind "
                             f"'categorical' and only with it (got kind {self.kind!r}, "
                             f"likelihood {self.likelihood!r})")
        rank = _SHAPE_RANK[self.kind]
        if len(self.shape) != rank:
            what = "a 1-d shape" if rank == 1 else "a (C, H, W) shape"
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} needs {what}, got {self.shape}")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.shape):
            raise ValueError(f"modality {self.name!r}: shape must hold positive integers, got {self.shape}")
        if self.frame_rate is not None:
            if self.kind not in DYNAMIC_KINDS:
                raise ValueError(f"modality {self.name!r}: frame_rate is for kinds {DYNAMIC_KINDS}, "
                                 f"not {self.kind!r}")
            if not float(self.frame_rate) > 0:
                raise ValueError(f"modality {self.name!r}: frame_rate must be > 0, got {self.frame_rate}")

    @property
    def dynamic(self) -> bool:
        """True for kinds whose examples are sequences over time ("sequence", "frames")."""
        return self.kind in DYNAMIC_KINDS

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``frame_rate`` only when set, so static specs keep their old dicts."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                             "likelihood": self.likelihood}
        if self.frame_rate is not None:
            d["frame_rate"] = float(self.frame_rate)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModalitySpec:
        """Inverse of :meth:`to_dict`; dicts written before ``frame_rate`` existed load too."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a modality spec must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("name", "kind", "shape") if k not in d]
        if missing:
            raise ValueError(f"modality spec {dict(d)!r} lacks field(s) {missing}")
        unknown = sorted(set(d) - {"name", "kind", "shape", "likelihood", "frame_rate"})
        if unknown:
            raise ValueError(f"modality {d['name']!r}: unknown field(s) {unknown} in its spec")
        try:
            shape = tuple(int(n) for n in d["shape"])
        except (TypeError, ValueError):
            raise ValueError(f"modality {d['name']!r}: field 'shape' must be a list of integers, "
                             f"got {d['shape']!r}") from None
        rate = d.get("frame_rate")
        return cls(d["name"], d["kind"], shape, d.get("likelihood", "gaussian"),
                   None if rate is None else float(rate))


SPEECH = ModalitySpec("audio", "sequence", (80,))
DIGIT_IMAGE = ModalitySpec("image", "image", (1, 28, 28))
BINARY_DIGIT_IMAGE = ModalitySpec("image", "image", (1, 28, 28), "bernoulli")
DIGIT_LABEL = ModalitySpec("label", "categorical", (10,), "categorical")


def as_one_hot(x: Tensor, n_classes: int) -> Tensor:
    """(B,) integer class indices or (B, C) vectors -> (B, C) float."""
    if x.dim() == 1:
        return nn.functional.one_hot(x.long(), n_classes).float()
    return x.float()
