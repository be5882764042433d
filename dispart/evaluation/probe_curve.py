"""Linear probes against the amount of labelled data (MDVAE, issue 11).

:func:`probe_curve` fits a multinomial logistic regression (``StandardScaler`` then scikit-learn's
``LogisticRegression``, lbfgs, whose multi-class loss is the multinomial one) on a labelled
fraction of the training latents (1%, 5%, 10%, 25%, 50%, 100% by default) and reports test
accuracy, repeated over seeds (a new labelled subset per seed). Subsets are stratified: every
class gets at least one example and the rest is shared out in proportion to class sizes (largest
remainders), so a class is never missing from a small subset. A fraction that gives fewer
examples than classes raises a ValueError naming it (``too_few="raise"``), or is raised to one
example per class and marked ``"raised_to_classes": true`` (``too_few="one_per_class"``).
:func:`time_average` pools per-frame latents (e.g. MDVAE's mu_z_av) over each sequence's frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dispart.evaluation.clustering import chance_accuracy

__all__ = ["FRACTIONS", "SEEDS", "probe_curve", "stratified_subset", "time_average"]

FRACTIONS = (0.01, 0.05, 0.10, 0.25, 0.50, 1.0)
SEEDS = (0, 1, 2)


def time_average(latents: Any, lengths: Sequence[int] | None = None) -> np.ndarray:
    """(N, T, D) per-frame latents -> (N, D) means over each sequence's first ``lengths[i]``
    frames (all T frames when ``lengths`` is None)."""
    x = np.asarray(latents.detach().cpu() if hasattr(latents, "detach") else latents, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"time_average expects (N, T, D) latents, got shape {x.shape}")
    if lengths is None:
        return x.mean(axis=1)
    n = np.asarray(lengths, dtype=np.int64)
    if n.shape != (len(x),) or (n < 1).any() or (n > x.shape[1]).any():
        raise ValueError(f"lengths must be {len(x)} values in 1..{x.shape[1]}, got {lengths!r}")
    mask = np.arange(x.shape[1])[None, :] < n[:, None]
    return (x * mask[..., None]).sum(axis=1) / n[:, None]


def _class_counts(sizes: np.ndarray, n: int) -> np.ndarray:
    """Examples per class for a stratified subset of ``n`` (>= number of classes, <= total):
    one each, the rest in proportion to (size - 1) by largest remainders, capped at the size."""
    counts = np.ones_like(sizes)
    rest = n - len(sizes)
    spare = sizes - 1
    if rest > 0 and spare.sum() > 0:
        share = rest * spare / spare.sum()
        extra = np.minimum(np.floor(share).astype(np.int64), spare)
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        left = rest - int(extra.sum())
        for c in np.concatenate([order, order]):  # a second pass only if caps blocked the first
            if left == 0:
                break
            if extra[c] < spare[c]:
                extra[c] += 1
                left -= 1
        counts = counts + extra
    return counts


def stratified_subset(labels: Sequence[Any], fraction: float, seed: int,
                      too_few: str = "raise") -> tuple[np.ndarray, bool]:
    """Indices of a stratified ``fraction`` of ``labels`` (sorted) drawn with ``seed``, and whether
    the size was raised to one per class. ``round(fraction * N)`` (at least 1) examples."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fractions must be in (0, 1], got {fraction}")
    if too_few not in ("raise", "one_per_class"):
        raise ValueError(f"too_few must be 'raise' or 'one_per_class', got {too_few!r}")
    y = np.asarray(labels)
    classes, inverse, sizes = np.unique(y, return_inverse=True, return_counts=True)
    n = max(1, int(round(fraction * len(y))))
    raised = False
    if n < len(classes):
        if too_few == "raise":
            raise ValueError(f"fraction {fraction:g} of {len(y)} training examples is {n}, fewer than the "
                             f"{len(classes)} classes: a probe needs an example of every class (use a "
                             f"larger fraction, or too_few='one_per_class')")
        n, raised = len(classes), True
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(inverse == c), size=k, replace=False)
              for c, k in enumerate(_class_counts(sizes, n))]
    return np.sort(np.concatenate(picked)), raised


def probe_curve(train_latents: Any, train_labels: Sequence[Any], test_latents: Any,
                test_labels: Sequence[Any], fractions: Sequence[float] = FRACTIONS,
                seeds: Sequence[int] = SEEDS, too_few: str = "raise", max_iter: int = 5000,
                ) -> dict[str, Any]:
    """Test accuracy of a multinomial logistic-regression probe vs the labelled fraction.

    Args:
        train_latents, test_latents: (N, D) latents (e.g. MDVAE's mu_w, or
            :func:`time_average` of mu_z_av).
        train_labels, test_labels: (N,) class labels (strings or integers).
        fractions: labelled fractions of the training set, in (0, 1].
        seeds: one labelled subset (and probe random state) per seed.
        too_few: what a fraction with fewer examples than classes does (module docstring).

    Returns:
        Plain data: ``{"classes", "n_train", "n_test", "seeds", "chance" (test share of the most
        frequent class), "rows": [{"fraction", "n_labelled", "raised_to_classes", "accuracies"
        (one per seed), "mean", "std"}]}``.
    """
    x_tr = np.asarray(train_latents, dtype=np.float64)
    x_te = np.asarray(test_latents, dtype=np.float64)
    y_tr, y_te = np.asarray(train_labels), np.asarray(test_labels)
    if x_tr.ndim != 2 or x_te.ndim != 2 or x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"latents must be (N, D) with one D, got {x_tr.shape} and {x_te.shape}")
    if y_tr.shape != (len(x_tr),) or y_te.shape != (len(x_te),):
        raise ValueError(f"labels must be (N,) like the latents: train {y_tr.shape} for {len(x_tr)}, "
                         f"test {y_te.shape} for {len(x_te)}")
    classes = np.unique(y_tr)
    if len(classes) < 2:
        raise ValueError("train_labels must hold at least two classes")
    if not seeds:
        raise ValueError("seeds is empty")
    rows = []
    for fraction in fractions:
        accs, n, raised = [], 0, False
        for seed in seeds:
            idx, raised = stratified_subset(y_tr, float(fraction), int(seed), too_few)
            n = len(idx)
            probe = make_pipeline(StandardScaler(),
                                  LogisticRegression(max_iter=max_iter, random_state=int(seed)))
            probe.fit(x_tr[idx], y_tr[idx])
            accs.append(float(np.mean(probe.predict(x_te) == y_te)))
        rows.append({"fraction": float(fraction), "n_labelled": int(n), "raised_to_classes": bool(raised),
                     "accuracies": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))})
    return {"classes": [c.item() if hasattr(c, "item") else c for c in classes], "n_train": int(len(y_tr)),
            "n_test": int(len(y_te)), "seeds": [int(s) for s in seeds],
            "chance": chance_accuracy(y_te), "rows": rows}
