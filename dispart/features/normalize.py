"""Per-dimension mean/variance normalisation of frame sequences, and what inverting it needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dispart.errors import DataError

__all__ = ["NORMALIZE", "SPEAKER_MODES", "FeatureNormalizer", "centre_as"]

NORMALIZE = ("global", "utterance", "speaker", "speaker_var")
"""``data.normalize``: the train-split mean/std only, or after removing each utterance's / each
speaker's mean log-Mel frame, or after standardising each band by its speaker's mean and std
(:func:`centre_as`)."""

SPEAKER_MODES = ("speaker", "speaker_var")
"""The ``data.normalize`` modes that need the speaker of every utterance."""


class FeatureNormalizer:
    """Standardise (T, D) feature arrays with a per-dimension mean and std.

    Statistics are frame-weighted over everything passed to :meth:`fit` (so pass the training
    split only). The std is floored at ``std_floor`` so constant dimensions do not blow up.

    With centring before the global statistics (``data.normalize = "utterance"``: each utterance's
    mean frame removed; ``"speaker"``: each speaker's mean frame, over all of that speaker's
    utterances in the split, removed) the normaliser also keeps ``utterance_offset``, the
    frame-weighted mean raw frame of the training split: what the centring removed on average,
    which inversion adds back (``dispart.generation.audio``). It is None otherwise.
    With ``"speaker_var"`` each speaker's frames are also divided by that speaker's per-band std;
    ``utterance_scale`` keeps the training split's pooled within-speaker std per band (what the
    division removed on average), which inversion multiplies back before adding the offset.
    """

    def __init__(self, std_floor: float = 1e-5) -> None:
        self.std_floor = float(std_floor)
        self.mean: np.ndarray | None = None  # (D,) float32
        self.std: np.ndarray | None = None  # (D,) float32
        self.utterance_offset: np.ndarray | None = None  # (D,) float32, centred modes only
        self.utterance_scale: np.ndarray | None = None  # (D,) float32, "speaker_var" only

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def dim(self) -> int:
        return int(self._stats()[0].shape[0])

    def fit(self, arrays: Sequence[np.ndarray], centre_utterances: bool = False,
            groups: Sequence[str] | None = None, scale: bool = False) -> FeatureNormalizer:
        """Estimate statistics from a list of (T_i, D) arrays (frames weighted equally).

        ``centre_utterances``: the arrays are raw; record their frame-weighted mean frame as
        :attr:`utterance_offset`, then fit on the arrays centred by :meth:`centre` (each on its own
        mean frame, or with ``groups`` on its group's), as ``data.normalize = "utterance"`` /
        ``"speaker"`` does before :meth:`transform`. ``scale`` (with ``groups``, as
        ``"speaker_var"``): also divide each group by its per-band std, after recording the pooled
        within-group std as :attr:`utterance_scale`.
        """
        if len(arrays) == 0:
            raise DataError("cannot fit the feature normaliser on an empty list of arrays")
        dims = {a.shape[1] if a.ndim == 2 else None for a in arrays}
        if len(dims) != 1 or None in dims:
            raise DataError(f"normaliser expects (T, D) arrays with one D, got dims {dims}")
        dim = dims.pop()
        if scale and (groups is None or not centre_utterances):
            raise ValueError("fit(scale=True) standardises per group: pass groups and centre_utterances")
        self.utterance_scale = None
        if centre_utterances:
            raw = _frame_moments(arrays, dim)
            self.utterance_offset = (raw[1] / raw[0]).astype(np.float32)
            centred = self.centre(arrays, groups)
            if scale:
                n, _, s2 = _frame_moments(centred, dim)
                self.utterance_scale = np.maximum(np.sqrt(s2 / n), self.std_floor).astype(np.float32)
                centred = self.centre(arrays, groups, scale=True, std_floor=self.std_floor)
            arrays = centred
        else:
            self.utterance_offset = None
        n, s, s2 = _frame_moments(arrays, dim)
        mean = s / n
        var = np.maximum(s2 / n - mean**2, 0.0)
        self.mean = mean.astype(np.float32)
        self.std = np.maximum(np.sqrt(var), self.std_floor).astype(np.float32)
        return self

    @staticmethod
    def centre(arrays: Sequence[np.ndarray], groups: Sequence[str] | None = None,
               scale: bool = False, std_floor: float = 1e-5) -> list[np.ndarray]:
        """Each (T_i, D) array minus its own mean frame (per-utterance centring), or with ``groups``
        (one key per array, e.g. its speaker) minus the frame-weighted mean frame of all arrays of
        its group (per-speaker centring); with ``scale`` also divided by its group's frame-weighted
        per-band std (floored at ``std_floor``)."""
        if groups is None:
            if scale:
                raise ValueError("centre(scale=True) needs groups (one speaker per array)")
            return [a - a.mean(axis=0, keepdims=True) for a in arrays]
        if len(groups) != len(arrays):
            raise DataError(f"centring by group: {len(arrays)} arrays but {len(groups)} group keys")
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        means: dict[str, np.ndarray] = {}
        stds: dict[str, np.ndarray] = {}
        for g, idx in members.items():
            n, s, s2 = _frame_moments([arrays[i] for i in idx], arrays[idx[0]].shape[1])
            means[g] = (s / n).astype(np.float32)
            if scale:
                var = np.maximum(s2 / n - (s / n) ** 2, 0.0)
                stds[g] = np.maximum(np.sqrt(var), std_floor).astype(np.float32)
        centred = [np.asarray(a, np.float32) - means[g] for a, g in zip(arrays, groups, strict=True)]
        return [c / stds[g] for c, g in zip(centred, groups, strict=True)] if scale else centred

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
        ``"utterance_offset": (D,) float32`` when fitted with centring and ``"utterance_scale"``
        when fitted with per-speaker scaling."""
        mean, std = self._stats()
        state = {
            "mean": mean.copy(),
            "std": std.copy(),
            "std_floor": np.array([self.std_floor], np.float64),
        }
        if self.utterance_offset is not None:
            state["utterance_offset"] = self.utterance_offset.copy()
        if self.utterance_scale is not None:
            state["utterance_scale"] = self.utterance_scale.copy()
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
        offset = _state_vector(d, "utterance_offset", mean.shape)
        scale = _state_vector(d, "utterance_scale", mean.shape)
        if scale is not None and not np.all(scale > 0):
            raise DataError("normaliser state: utterance_scale must be positive")
        norm.mean, norm.std, norm.utterance_offset, norm.utterance_scale = mean, std, offset, scale
        return norm


def _state_vector(d: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Optional (D,) float32 field ``key`` of a normaliser state: None when absent, a DataError
    naming it when it is not ``shape`` finite numbers."""
    v = d.get(key)
    if v is None:
        return None
    try:
        v = np.asarray(v, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"normaliser state: {key} is not numeric ({e})") from e
    if v.shape != shape or not np.all(np.isfinite(v)):
        raise DataError(f"normaliser state: {key} must be {shape[0]} finite numbers, got shape {v.shape}")
    return v


def centre_as(arrays: Sequence[np.ndarray], mode: str,
              speakers: Sequence[str] | None = None) -> list[np.ndarray]:
    """Raw (T_i, D) arrays centred as ``data.normalize = mode`` says, before the normaliser: unchanged
    ("global"), each on its own mean frame ("utterance"), each on its speaker's ("speaker";
    ``speakers`` gives one per array), or standardised by its speaker's per-band mean and std
    ("speaker_var"). The one place that says what each mode removes."""
    if mode == "utterance":
        return FeatureNormalizer.centre(arrays)
    if mode in SPEAKER_MODES:
        if speakers is None:
            raise ValueError(f"centre_as(mode={mode!r}) needs the speaker of each array")
        return FeatureNormalizer.centre(arrays, speakers, scale=mode == "speaker_var")
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
