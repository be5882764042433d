"""Feature-level augmentation for speaker generalisation.

``warp``: a random warp of the Mel axis (an approximation of vocal tract length perturbation,
VTLP) and of the time axis (speaking-rate perturbation), drawn per utterance and per epoch.
Applied to training features only; the model learns to reconstruct the warped features, so the
style latent absorbs the warp while the semantic latent must stay put.
"""

from __future__ import annotations

import numpy as np


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
