"""Linear erasure of a grouping (e.g. the speaker) from a latent's posterior means.

After the erasure the groups' mean latent vectors are all equal on the data it was fitted on, so no
linear read-out (logistic regression, a linear probe) can tell the groups apart there better than
the constant guess (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in closed form",
Theorem 3.1: equal class-conditional means <=> linear guardedness). The fit is the authors'
library (``concept_erasure.LeaceFitter``): ``method="leace"`` moves the latents as little as
possible in mean squared distance (an oblique projection), ``"orth"`` is the orthogonal projection
onto the complement of the groups' mean deviations (all variation along those at most G - 1
directions goes, within groups too). Either is an affine map z -> matrix @ z + offset, which is
what :class:`GroupEraser` keeps (and ``GaussianHead.compose_mean`` folds into a head). A nonlinear
read-out may still find the groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from concept_erasure import LeaceFitter
from torch import Tensor

METHODS = ("leace", "orth")


@dataclass(frozen=True)
class GroupEraser:
    """z -> matrix @ z + offset; ``matrix``: (D, D), ``offset``: (D,); ``rank``: how many
    directions it erases (<= groups - 1)."""

    matrix: np.ndarray
    offset: np.ndarray
    rank: int
    method: str

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """(N, D) latents, erased: (N, D) float32."""
        return (np.asarray(z, dtype=np.float64) @ self.matrix.T + self.offset).astype(np.float32)

    def as_affine(self) -> tuple[Tensor, Tensor]:
        """(matrix (D, D), offset (D,)) as float32 tensors."""
        return (torch.as_tensor(self.matrix, dtype=torch.float32),
                torch.as_tensor(self.offset, dtype=torch.float32))


def fit_group_eraser(z: np.ndarray, groups: np.ndarray, method: str = "leace") -> GroupEraser:
    """Fit on (N, D) latents ``z`` and their (N,) ``groups`` (at least two), in float64."""
    z = np.asarray(z, dtype=np.float64)
    groups = np.asarray(groups)
    if z.ndim != 2 or len(z) != len(groups):
        raise ValueError(f"fit_group_eraser needs (N, D) latents and N groups, got {z.shape} and "
                         f"{groups.shape}")
    if method not in METHODS:
        raise ValueError(f"fit_group_eraser: method must be one of {METHODS}, got {method!r}")
    names, codes = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        raise ValueError(f"fit_group_eraser needs at least two groups, got {list(names)}")
    fitter = LeaceFitter(z.shape[1], len(names), method=method, dtype=torch.float64)
    fitter.update(torch.as_tensor(z), torch.nn.functional.one_hot(torch.as_tensor(codes), len(names)))
    eraser = fitter.eraser  # x -> x - (x - bias) @ (L @ R)^T
    q = (eraser.proj_left @ eraser.proj_right).numpy()
    bias = eraser.bias.numpy() if eraser.bias is not None else np.zeros(z.shape[1])
    rank = int(np.linalg.matrix_rank(q, tol=1e-8 * max(1.0, float(np.abs(q).max()))))
    return GroupEraser(matrix=np.eye(z.shape[1]) - q, offset=q @ bias, rank=rank, method=method)
