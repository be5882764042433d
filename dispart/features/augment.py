"""Training-time augmentation of speech features and images.

``warp`` (speech, for speaker generalisation): a random warp of the Mel axis (an approximation of
vocal tract length perturbation, VTLP) and of the time axis (speaking-rate perturbation), drawn
per utterance and per epoch. ``shift`` (images): a random translation by whole pixels, the
vacated border filled with 0 (the background of digit images in [0, 1]). Both are applied to
training examples only; the model learns to reconstruct the augmented examples, so the style
latent absorbs the warp or the position while the semantic latent must stay put.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Augment = Callable[[np.ndarray, int, int], np.ndarray]
"""An augmentation: ``f(example, epoch, index) -> example``, deterministic in its arguments."""


def _interp_axis(x: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``x`` at fractional ``positions`` along ``axis``."""
    n = x.shape[axis]
    positions = np.clip(positions, 0.0, n - 1)
    lo = np.floor(positions).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (positions - lo).astype(x.dtype)
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    return a + (b - a) * w.reshape(shape)


def warp_features(x: np.ndarray, freq_factor: float, time_factor: float) -> np.ndarray:
    """Warp (T, D) features: Mel bin k takes the value at k / freq_factor; the length becomes
    round(T * time_factor) (>= 1). factor 1.0 leaves that axis unchanged."""
    t, d = x.shape
    out = _interp_axis(x, np.arange(d) / freq_factor, axis=1) if freq_factor != 1.0 else x
    if time_factor != 1.0:
        new_t = max(1, int(round(t * time_factor)))
        out = _interp_axis(out, np.linspace(0.0, t - 1, new_t), axis=0)
    return out.astype(np.float32, copy=False)


class RandomWarp:
    """Draws freq/time factors uniformly in [1 - r, 1 + r], deterministic in (seed, epoch, index)."""

    def __init__(self, freq_range: float = 0.1, time_range: float = 0.1, seed: int = 0) -> None:
        if not (0 <= freq_range < 1 and 0 <= time_range < 1):
            raise ValueError("warp ranges must be in [0, 1)")
        self.freq_range, self.time_range, self.seed = freq_range, time_range, seed

    def __call__(self, x: np.ndarray, epoch: int, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, epoch, index))
        f = 1.0 + rng.uniform(-self.freq_range, self.freq_range)
        t = 1.0 + rng.uniform(-self.time_range, self.time_range)
        return warp_features(x, f, t)


def shift_image(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(..., H, W) image moved ``dy`` pixels down and ``dx`` right (negative: up / left); what
    leaves the frame is lost, what enters is 0. |dy| < H and |dx| < W."""
    h, w = x.shape[-2:]
    if not (abs(dy) < h and abs(dx) < w):
        raise ValueError(f"shift ({dy}, {dx}) does not fit an image of {h}x{w} pixels")
    out = np.zeros_like(x)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


class RandomShift:
    """Moves an image by (dy, dx) drawn uniformly from {-s, ..., s}^2, deterministic in
    (seed, epoch, index) like :class:`RandomWarp`."""

    def __init__(self, max_shift: int = 2, seed: int = 0) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift, self.seed = int(max_shift), seed

    def __call__(self, x: np.ndarray, epoch: int, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, epoch, index, 1))
        dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
        return shift_image(x, int(dy), int(dx))
