"""Clustering-based disentanglement metrics (PVAE paper, Hsu & Glass 2018, section 4.4).

All functions are stateless: they take latents / labels as arrays and return plain numbers.

- :func:`cluster_purity` -- cluster-size-weighted average purity (Table 1 metric).
- :func:`kmeans_purity` -- k-means clustering of latents, then purity w.r.t. labels.
- :func:`inertia_curve` -- k-means inertia versus number of clusters (Figure 3).
- :func:`estimate_num_classes` -- automatic elbow estimate from an inertia curve.
- :func:`linear_probe_accuracy` -- logistic-regression probe (e.g. speaker identity from z^a).
- :func:`mlp_probe_accuracy` -- the same with one hidden layer: what a nonlinear read-out finds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "cluster_purity",
    "kmeans_purity",
    "inertia_curve",
    "estimate_num_classes",
    "linear_probe_accuracy",
    "mlp_probe_accuracy",
]


def _as_1d(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (N,), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; need at least one sample")
    return arr


def _as_2d(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D of shape (N, D), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); need N >= 1 and D >= 1")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_same_length(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{b_name} has {b.shape[0]} entries but {a_name} has {a.shape[0]}; they must match"
        )


def cluster_purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Cluster-size-weighted average purity of a clustering w.r.t. ground-truth labels.

    ``purity = sum_c max_l |{i : clusters[i] = c, labels[i] = l}| / N``, in (0, 1]; it is
    invariant to renaming of cluster ids and of labels.

    Args:
        labels: (N,) ground-truth class labels (any hashable dtype, e.g. digit ids).
        clusters: (N,) cluster assignments (any hashable dtype).

    Returns:
        Weighted average purity as a float in [0, 1].
    """
    labels_arr = _as_1d(labels, "labels")
    clusters_arr = _as_1d(clusters, "clusters")
    _check_same_length(labels_arr, "labels", clusters_arr, "clusters")
    # rows: classes, columns: clusters
    table = contingency_matrix(labels_arr, clusters_arr)
    return float(np.asarray(table.max(axis=0)).sum() / labels_arr.shape[0])


def kmeans_purity(
    latents: np.ndarray,
    labels: np.ndarray,
    n_clusters: int = 10,
    seed: int = 0,
    n_init: int = 10,
) -> float:
    """Purity of a k-means clustering of ``latents`` w.r.t. ``labels`` (paper Table 1).

    Args:
        latents: (N, D) latent vectors (e.g. posterior means of z^s).
        labels: (N,) ground-truth labels (e.g. digit identity).
        n_clusters: number of k-means clusters (10 in the paper).
        seed: random state of :class:`sklearn.cluster.KMeans`.
        n_init: number of k-means restarts (best inertia kept).

    Returns:
        Weighted average purity in [0, 1].
    """
    x = _as_2d(latents, "latents")
    y = _as_1d(labels, "labels")
    _check_same_length(x, "latents", y, "labels")
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"n_clusters must be in [1, N={x.shape[0]}], got {n_clusters}")
    clusters = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init).fit_predict(x)
    return cluster_purity(y, clusters)


def _add_farthest_points(x: np.ndarray, centers: np.ndarray, n_new: int) -> np.ndarray:
    """Greedily append ``n_new`` data points farthest from the current centres: (k + n_new, D)."""
    centers = centers.copy()
    d2 = np.full(x.shape[0], np.inf)
    for c in centers:  # loop over centres keeps memory at O(N * D)
        d2 = np.minimum(d2, ((x - c) ** 2).sum(-1))
    for _ in range(n_new):
        idx = int(np.argmax(d2))
        centers = np.vstack([centers, x[idx]])
        d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(-1))
    return centers


def inertia_curve(
    latents: np.ndarray,
    ks: Iterable[int] = range(1, 21),
    seed: int = 0,
    n_init: int = 5,
) -> dict[int, float]:
    """k-means inertia (sum of squared distances to the closest centroid) per k (paper Fig. 3).

    For every k (ascending) the best of ``n_init`` k-means++ runs is compared with one extra run
    warm-started from the previous k's centroids plus the farthest points; the lower inertia is
    kept. Lloyd iterations never increase inertia, so the returned curve is guaranteed to be
    non-increasing in k.

    Args:
        latents: (N, D) latent vectors.
        ks: numbers of clusters to evaluate, each in [1, N].
        seed: random state of :class:`sklearn.cluster.KMeans`.
        n_init: number of k-means++ restarts per k.

    Returns:
        ``{k: inertia}`` ordered by ascending k.
    """
    x = _as_2d(latents, "latents")
    k_list = sorted({int(k) for k in ks})
    if not k_list:
        raise ValueError("ks is empty; give at least one number of clusters")
    if k_list[0] < 1 or k_list[-1] > x.shape[0]:
        raise ValueError(f"ks must lie in [1, N={x.shape[0]}], got {k_list[0]}..{k_list[-1]}")
    curve: dict[int, float] = {}
    prev_centers: np.ndarray | None = None
    for k in k_list:
        best = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(x)
        if prev_centers is not None:
            init = _add_farthest_points(x, prev_centers, k - prev_centers.shape[0])
            warm = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(x)
            if warm.inertia_ < best.inertia_:
                best = warm
        curve[k] = float(best.inertia_)
        prev_centers = best.cluster_centers_
    return curve


def estimate_num_classes(curve: Mapping[int, float]) -> int:
    """Elbow estimate of the number of classes from an inertia curve.

    Method: max-distance-to-chord ("kneedle"-style) on the *log* inertia curve. With
    ``x = (k - k_min) / (k_max - k_min)`` and ``y = log(inertia)`` min-max scaled to [0, 1],
    the estimate is the k whose point lies farthest below the straight chord joining the first
    and last points of the curve. Log scale makes the knee independent of the overall inertia
    scale and robust to the very large first drops of k-means curves. If no point lies below the
    chord (no elbow, e.g. a flat or concave curve), the smallest k is returned.

    Args:
        curve: ``{k: inertia}`` with at least 3 distinct k >= 1 and non-negative inertias, e.g.
            the output of :func:`inertia_curve`.

    Returns:
        Estimated number of clusters (one of the keys of ``curve``).
    """
    if len(curve) < 3:
        raise ValueError(f"curve needs at least 3 points (k values), got {len(curve)}")
    ks = np.array(sorted(int(k) for k in curve), dtype=np.float64)
    if ks[0] < 1:
        raise ValueError(f"curve keys must be numbers of clusters >= 1, got {int(ks[0])}")
    inertia = np.array([float(curve[int(k)]) for k in ks], dtype=np.float64)
    if not np.all(np.isfinite(inertia)) or np.any(inertia < 0):
        raise ValueError("curve values must be finite, non-negative inertias")
    top = inertia.max()
    if top <= 0:
        return int(ks[0])
    log_i = np.log(np.maximum(inertia, top * 1e-12))
    span = log_i.max() - log_i.min()
    if span <= 0:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (log_i - log_i.min()) / span
    chord = y[0] + (y[-1] - y[0]) * x
    gap = chord - y
    best = int(np.argmax(gap))
    if gap[best] <= 0:
        return int(ks[0])
    return int(ks[best])


def chance_accuracy(labels: Sequence[Any]) -> float:
    """Accuracy of always guessing the most frequent value of ``labels`` (a probe's chance level)."""
    values = [v.item() if hasattr(v, "item") else v for v in labels]
    return max(Counter(values).values()) / len(values)


def linear_probe_accuracy(
    train_latents: np.ndarray,
    train_labels: np.ndarray,
    test_latents: np.ndarray,
    test_labels: np.ndarray,
    seed: int = 0,
) -> float:
    """Test accuracy of a linear (logistic-regression) probe predicting labels from latents.

    The probe is ``StandardScaler -> LogisticRegression(max_iter=5000)`` fitted on the train
    split. Used e.g. to measure how much speaker identity z^a (or z^s) encodes.

    Args:
        train_latents: (N_train, D) latents to fit the probe on.
        train_labels: (N_train,) labels, at least two distinct classes.
        test_latents: (N_test, D) latents to evaluate on.
        test_labels: (N_test,) labels.
        seed: random state of the logistic regression.

    Returns:
        Accuracy on the test split, in [0, 1].
    """
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    return _probe_accuracy(probe, train_latents, train_labels, test_latents, test_labels)


def mlp_probe_accuracy(
    train_latents: np.ndarray,
    train_labels: np.ndarray,
    test_latents: np.ndarray,
    test_labels: np.ndarray,
    seed: int = 0,
    hidden: int = 256,
) -> float:
    """Test accuracy of a one-hidden-layer probe: ``StandardScaler -> MLPClassifier((hidden,),
    max_iter=500)`` fitted on the train split; arguments and errors as
    :func:`linear_probe_accuracy`. Reads what a linear probe cannot (e.g. after a linear erasure)."""
    probe = make_pipeline(StandardScaler(),
                          MLPClassifier((hidden,), max_iter=500, random_state=seed))
    return _probe_accuracy(probe, train_latents, train_labels, test_latents, test_labels)


def _probe_accuracy(probe: Any, train_latents: np.ndarray, train_labels: np.ndarray,
                    test_latents: np.ndarray, test_labels: np.ndarray) -> float:
    x_tr = _as_2d(train_latents, "train_latents")
    y_tr = _as_1d(train_labels, "train_labels")
    x_te = _as_2d(test_latents, "test_latents")
    y_te = _as_1d(test_labels, "test_labels")
    _check_same_length(x_tr, "train_latents", y_tr, "train_labels")
    _check_same_length(x_te, "test_latents", y_te, "test_labels")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(
            f"test_latents has dimension {x_te.shape[1]} but train_latents has {x_tr.shape[1]}"
        )
    if np.unique(y_tr).shape[0] < 2:
        raise ValueError("train_labels must contain at least two distinct classes")
    probe.fit(x_tr, y_tr)
    return float(accuracy_score(y_te, probe.predict(x_te)))
