"""Per-dimension mean/variance normalisation of frame sequences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dispart.errors import DataError

__all__ = ["FeatureNormalizer"]


class FeatureNormalizer:
    """Standardise (T, D) feature arrays with a per-dimension mean and std.

    Statistics are frame-weighted over everything passed to :meth:`fit` (so pass the training
    split only). The std is floored at ``std_floor`` so constant dimensions do not blow up.
    """

    def __init__(self, std_floor: float = 1e-5) -> None:
        self.std_floor = float(std_floor)
        self.mean: np.ndarray | None = None  # (D,) float32
        self.std: np.ndarray | None = None  # (D,) float32

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def dim(self) -> int:
        return int(self._stats()[0].shape[0])

    def fit(self, arrays: Sequence[np.ndarray]) -> FeatureNormalizer:
        """Estimate statistics from a list of (T_i, D) arrays (frames weighted equally)."""
        if len(arrays) == 0:
            raise DataError("cannot fit the feature normaliser on an empty list of arrays")
        dims = {a.shape[1] if a.ndim == 2 else None for a in arrays}
        if len(dims) != 1 or None in dims:
            raise DataError(f"normaliser expects (T, D) arrays with one D, got dims {dims}")
        n = 0
        s = np.zeros(dims.pop(), dtype=np.float64)
        s2 = np.zeros_like(s)
        for a in arrays:
            a64 = np.asarray(a, dtype=np.float64)
            n += a64.shape[0]
            s += a64.sum(axis=0)
            s2 += np.square(a64).sum(axis=0)
        if n == 0:
            raise DataError("cannot fit the feature normaliser on zero frames")
        mean = s / n
        var = np.maximum(s2 / n - mean**2, 0.0)
        self.mean = mean.astype(np.float32)
        self.std = np.maximum(np.sqrt(var), self.std_floor).astype(np.float32)
        return self

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None or self.std is None:
            raise RuntimeError("FeatureNormalizer is not fitted; call fit() first")
        return self.mean, self.std

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(..., D) -> (..., D) float32 standardised features."""
        mean, std = self._stats()
        return ((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32)

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """(..., D) standardised -> (..., D) float32 original-scale features."""
        mean, std = self._stats()
        return (np.asarray(x, dtype=np.float32) * std + mean).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """``{"mean": (D,) float32, "std": (D,) float32, "std_floor": [float]}``."""
        mean, std = self._stats()
        return {
            "mean": mean.copy(),
            "std": std.copy(),
            "std_floor": np.array([self.std_floor], np.float64),
        }

    @classmethod
    def from_state_dict(cls, d: Mapping[str, Any]) -> FeatureNormalizer:
        """Rebuild from :meth:`state_dict` output (arrays, lists or tensors)."""
        for k in ("mean", "std"):
            if k not in d:
                raise DataError(f"normaliser state lacks field '{k}'")
        floor = d.get("std_floor", 1e-5)
        norm = cls(float(np.asarray(floor, dtype=np.float64).reshape(-1)[0]))
        mean = np.asarray(d["mean"], dtype=np.float32).reshape(-1)
        std = np.asarray(d["std"], dtype=np.float32).reshape(-1)
        if mean.shape != std.shape:
            raise DataError(f"normaliser state: mean {mean.shape} and std {std.shape} differ")
        if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
            raise DataError("normaliser state: mean must be finite and std positive")
        norm.mean, norm.std = mean, std
        return norm
