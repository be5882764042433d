"""Per-dimension mean/variance normalisation of frame sequences, and what inverting it needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dispart.errors import DataError

__all__ = ["NORMALIZE", "FeatureNormalizer", "centre_as"]

NORMALIZE = ("global", "utterance", "speaker")
"""``data.normalize``: the train-split mean/std only, or after removing each utterance's / each
speaker's mean log-Mel frame (:func:`centre_as`)."""


class FeatureNormalizer:
    """Standardise (T, D) feature arrays with a per-dimension mean and std.

    Statistics are frame-weighted over everything passed to :meth:`fit` (so pass the training
    split only). The std is floored at ``std_floor`` so constant dimensions do not blow up.

    With centring before the global statistics (``data.normalize = "utterance"``: each utterance's
    mean frame removed; ``"speaker"``: each speaker's mean frame, over all of that speaker's
    utterances in the split, removed) the normaliser also keeps ``utterance_offset``, the
    frame-weighted mean raw frame of the training split: what the centring removed on average,
    which inversion adds back (``dispart.generation.audio``). It is None otherwise.
    """

    def __init__(self, std_floor: float = 1e-5) -> None:
        self.std_floor = float(std_floor)
        self.mean: np.ndarray | None = None  # (D,) float32
        self.std: np.ndarray | None = None  # (D,) float32
        self.utterance_offset: np.ndarray | None = None  # (D,) float32, per-utterance centring only

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def dim(self) -> int:
        return int(self._stats()[0].shape[0])

    def fit(self, arrays: Sequence[np.ndarray], centre_utterances: bool = False,
            groups: Sequence[str] | None = None) -> FeatureNormalizer:
        """Estimate statistics from a list of (T_i, D) arrays (frames weighted equally).

        ``centre_utterances``: the arrays are raw; record their frame-weighted mean frame as
        :attr:`utterance_offset`, then fit on the arrays centred by :meth:`centre` (each on its own
        mean frame, or with ``groups`` on its group's), as ``data.normalize = "utterance"`` /
        ``"speaker"`` does before :meth:`transform`.
        """
        if len(arrays) == 0:
            raise DataError("cannot fit the feature normaliser on an empty list of arrays")
        dims = {a.shape[1] if a.ndim == 2 else None for a in arrays}
        if len(dims) != 1 or None in dims:
            raise DataError(f"normaliser expects (T, D) arrays with one D, got dims {dims}")
        dim = dims.pop()
        if centre_utterances:
            raw = _frame_moments(arrays, dim)
            self.utterance_offset = (raw[1] / raw[0]).astype(np.float32)
            arrays = self.centre(arrays, groups)
        else:
            self.utterance_offset = None
        n, s, s2 = _frame_moments(arrays, dim)
        mean = s / n
        var = np.maximum(s2 / n - mean**2, 0.0)
        self.mean = mean.astype(np.float32)
        self.std = np.maximum(np.sqrt(var), self.std_floor).astype(np.float32)
        return self

    @staticmethod
    def centre(arrays: Sequence[np.ndarray], groups: Sequence[str] | None = None) -> list[np.ndarray]:
        """Each (T_i, D) array minus its own mean frame (per-utterance centring), or with ``groups``
        (one key per array, e.g. its speaker) minus the frame-weighted mean frame of all arrays of
        its group (per-speaker centring)."""
        if groups is None:
            return [a - a.mean(axis=0, keepdims=True) for a in arrays]
        if len(groups) != len(arrays):
            raise DataError(f"centring by group: {len(arrays)} arrays but {len(groups)} group keys")
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        means: dict[str, np.ndarray] = {}
        for g, idx in members.items():
            n, s, _ = _frame_moments([arrays[i] for i in idx], arrays[idx[0]].shape[1])
            means[g] = (s / n).astype(np.float32)
        return [np.asarray(a, np.float32) - means[g] for a, g in zip(arrays, groups, strict=True)]

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
        """``{"mean": (D,) float32, "std": (D,) float32, "std_floor": [float]}``, plus
        ``"utterance_offset": (D,) float32`` when fitted with per-utterance centring."""
        mean, std = self._stats()
        state = {
            "mean": mean.copy(),
            "std": std.copy(),
            "std_floor": np.array([self.std_floor], np.float64),
        }
        if self.utterance_offset is not None:
            state["utterance_offset"] = self.utterance_offset.copy()
        return state

    @classmethod
    def from_state_dict(cls, d: Mapping[str, Any]) -> FeatureNormalizer:
        """Rebuild from :meth:`state_dict` output (arrays, lists or tensors); a state without
        ``utterance_offset`` (written before dispart stored it) gives ``utterance_offset=None``."""
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
        offset = d.get("utterance_offset")
        if offset is not None:
            try:
                offset = np.asarray(offset, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError) as e:
                raise DataError(f"normaliser state: utterance_offset is not numeric ({e})") from e
            if offset.shape != mean.shape or not np.all(np.isfinite(offset)):
                raise DataError(f"normaliser state: utterance_offset must be {mean.shape[0]} finite "
                                f"numbers, got shape {offset.shape}")
        norm.mean, norm.std, norm.utterance_offset = mean, std, offset
        return norm


def centre_as(arrays: Sequence[np.ndarray], mode: str,
              speakers: Sequence[str] | None = None) -> list[np.ndarray]:
    """Raw (T_i, D) arrays centred as ``data.normalize = mode`` says, before the normaliser: unchanged
    ("global"), each on its own mean frame ("utterance"), or each on its speaker's ("speaker";
    ``speakers`` gives one per array). The one place that says what each mode removes."""
    if mode == "utterance":
        return FeatureNormalizer.centre(arrays)
    if mode == "speaker":
        if speakers is None:
            raise ValueError("centre_as(mode='speaker') needs the speaker of each array")
        return FeatureNormalizer.centre(arrays, speakers)
    if mode != "global":
        raise ValueError(f"data.normalize must be one of {NORMALIZE}, got {mode!r}")
    return list(arrays)


def _frame_moments(arrays: Sequence[np.ndarray], dim: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of frames, (D,) sum, (D,) sum of squares) over all frames, in float64."""
    n = 0
    s = np.zeros(dim, dtype=np.float64)
    s2 = np.zeros_like(s)
    for a in arrays:
        a64 = np.asarray(a, dtype=np.float64)
        n += a64.shape[0]
        s += a64.sum(axis=0)
        s2 += np.square(a64).sum(axis=0)
    if n == 0:
        raise DataError("cannot fit the feature normaliser on zero frames")
    return n, s, s2
