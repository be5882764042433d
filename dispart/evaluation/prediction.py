"""Missing-frame prediction error (DSAE Figure 8): observe the first T - k frames, predict the last k.

A predictor is any function ``(prefix (B, t, *frame), k) -> (B, k, *frame)`` giving pixel
probabilities (or binary pixels) of the k frames after the prefix: a DSAE that infers z_1:t and
rolls its prior forward, an LSTM-f / LSTM-c baseline
(:meth:`dispart.models.predictors.DeterministicDynamicsVAE.predict`), or the references below.
The error of k missing frames is the paper's "average fraction of incorrectly predicted pixels":
the fraction of pixels of the k missing frames of every test sequence where the thresholded
prediction (> ``threshold``) differs from the binary truth. Only predicted frames are scored
(the observed ones are given, not reconstructed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Predictor", "blank_predictor", "last_frame_predictor", "prediction_error"]

Predictor = Callable[[Tensor, int], Tensor]  # (B, t, *frame) observed prefix, k -> (B, k, *frame)


def prediction_error(
    predictor: Predictor,
    frames: Tensor | np.ndarray,
    missing: Sequence[int],
    batch_size: int = 250,
    threshold: float = 0.5,
) -> dict[int, float]:
    """Fraction of wrong pixels on the last k frames, for every k in ``missing``.

    Args:
        predictor: see the module docstring; called without gradients on chunks of ``batch_size``.
        frames: (N, T, *frame) ground truth in {0, 1} (e.g. the test split, (N, 30, 1, 32, 32)).
        missing: numbers of consecutive missing frames k, each in [1, T - 1] (one frame observed).
        threshold: a predicted pixel is "on" when its value is > threshold.
    Returns:
        {k: error in [0, 1]} in the order of ``missing``.
    """
    x = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames).float()
    if x.dim() < 3 or len(x) == 0:
        raise ValueError(f"prediction_error: frames must be (N >= 1, T, *frame), got {tuple(x.shape)}")
    if not torch.all((x == 0) | (x == 1)):
        raise ValueError("prediction_error: frames must be binary (0/1 pixels)")
    t_total = x.shape[1]
    ks = [int(k) for k in missing]
    bad = [k for k in ks if not 1 <= k <= t_total - 1]
    if not ks or bad:
        raise ValueError(f"prediction_error: missing must list k in [1, {t_total - 1}] (T = {t_total}), "
                         f"got {list(missing)}")
    if batch_size < 1:
        raise ValueError(f"prediction_error: batch_size must be >= 1, got {batch_size}")
    out: dict[int, float] = {}
    with torch.no_grad():
        for k in ks:
            wrong, count = 0.0, 0
            for i in range(0, len(x), batch_size):
                chunk = x[i:i + batch_size]
                pred = predictor(chunk[:, : t_total - k], k)
                want = (len(chunk), k, *x.shape[2:])
                if tuple(pred.shape) != want:
                    name = getattr(predictor, "__name__", repr(predictor))
                    raise ValueError(f"prediction_error: predictor {name!r} returned shape "
                                     f" {tuple(pred.shape)} for k={k}, expected {want}")
                truth = chunk[:, t_total - k:]
                wrong += float(((pred.detach().cpu().float() > threshold) != (truth > 0.5)).sum())
                count += truth.numel()
            out[k] = wrong / count
    return out


def blank_predictor(prefix: Tensor, k: int) -> Tensor:
    """Reference: every missing pixel off (error = fraction of ball pixels in the missing frames)."""
    return prefix.new_zeros(prefix.shape[0], k, *prefix.shape[2:])


def last_frame_predictor(prefix: Tensor, k: int) -> Tensor:
    """Reference: the last observed frame repeated (a ball that stops)."""
    return prefix[:, -1:].expand(-1, k, *prefix.shape[2:]).clone()
