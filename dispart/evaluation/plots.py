"""Evaluation figures: k-means inertia curves (paper Fig. 3) and t-SNE plots (paper Figs. 11-13).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, so no
pyplot global state or backend switch is involved; every function saves one PNG and returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.manifold import TSNE

from dispart.files import atomic_write_with

__all__ = ["plot_inertia", "plot_tsne", "MARKER_CYCLE", "MAX_LEGEND_LABELS"]

MAX_LEGEND_LABELS = 20
"""plot_tsne draws a per-label legend only up to this many distinct labels."""

MARKER_CYCLE: tuple[str, ...] = ("o", "x", "^", "s", "D", "v", "*", "+")
"""Markers given to marker groups in first-appearance order ('o' speech, 'x' image in Fig. 13)."""


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Save ``fig`` as PNG atomically (parent folders are created)."""
    atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def plot_inertia(
    curves: Mapping[str, Mapping[int, float]],
    path: str | os.PathLike[str],
    estimated: Mapping[str, int] | None = None,
) -> None:
    """Plot k-means inertia versus number of clusters for each named curve (paper Fig. 3).

    Args:
        curves: ``{name: {k: inertia}}``, e.g. ``{"speech z^s": inertia_curve(...)}``.
        path: output PNG file (parent folders are created).
        estimated: optional ``{name: k}`` elbow estimates; each is marked on its curve with an
            open circle and a dotted vertical line.
    """
    if not curves:
        raise ValueError("curves is empty; give at least one named inertia curve")
    estimated = dict(estimated or {})
    unknown = sorted(set(estimated) - set(curves))
    if unknown:
        raise ValueError(f"estimated has names not in curves: {unknown}")
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for i, (name, curve) in enumerate(curves.items()):
        if not curve:
            raise ValueError(f"curves[{name!r}] is empty")
        ks = sorted(int(k) for k in curve)
        values = [float(curve[k]) for k in ks]
        color = f"C{i % 10}"
        ax.plot(ks, values, marker=".", color=color, label=name)
        if name in estimated:
            k_hat = int(estimated[name])
            if k_hat not in curve:
                raise ValueError(f"estimated[{name!r}] = {k_hat} is not a k of that curve")
            ax.axvline(k_hat, color=color, linestyle=":", linewidth=1)
            ax.plot(
                [k_hat],
                [float(curve[k_hat])],
                marker="o",
                markersize=10,
                markerfacecolor="none",
                color=color,
                label=f"{name}: elbow k={k_hat}",
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("k-means inertia")
    ax.set_title("k-means inertia vs. number of clusters")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of a deterministic random subset of size min(n, max_points)."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def plot_tsne(
    latents: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike[str],
    title: str,
    markers: np.ndarray | None = None,
    seed: int = 0,
    max_points: int = 2000,
) -> None:
    """2-D t-SNE embedding of latents, coloured by label (paper Figs. 11-13).

    Args:
        latents: (N, D) latent vectors.
        labels: (N,) class labels (e.g. digits); colours from the 10-colour ``tab10`` map
            (``tab20``, repeating, if there are more than 10 labels); a legend lists the labels
            when there are at most :data:`MAX_LEGEND_LABELS` of them (e.g. not for speakers).
        path: output PNG file (parent folders are created).
        title: figure title.
        markers: optional (N,) marker groups, e.g. modality names for the pooled plot of
            Fig. 13. Group values that are themselves in :data:`MARKER_CYCLE` are used as
            markers; other groups get the unused markers in first-appearance order (so
            ``["speech", ..., "image", ...]`` gives 'o' for speech and 'x' for image).
        seed: seed of the subsampling and of :class:`sklearn.manifold.TSNE`.
        max_points: if N is larger, a deterministic random subset of this size is embedded.
    """
    x = np.asarray(latents, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"latents must be a non-empty (N, D) array, got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    groups = None if markers is None else np.asarray(markers)
    if groups is not None and (groups.ndim != 1 or groups.shape[0] != x.shape[0]):
        raise ValueError(f"markers must have shape ({x.shape[0]},), got {groups.shape}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if x.shape[0] < 2:
        raise ValueError("latents needs at least 2 points for t-SNE")

    idx = _subsample(x.shape[0], max_points, seed)
    x, y = x[idx], y[idx]
    groups = None if groups is None else groups[idx]
    perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        x
    )

    classes = np.unique(y).tolist()
    cmap_name = "tab10" if len(classes) <= 10 else "tab20"
    fig = _new_figure((6.5, 5.5))
    cmap = matplotlib.colormaps[cmap_name]
    colors = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}

    # group id per point and marker per group (a single 'o' group without markers)
    if groups is None:
        group_ids = np.zeros(x.shape[0], dtype=np.int64)
        group_markers: dict[object, str] = {"": "o"}
    else:
        order = list(dict.fromkeys(groups.tolist()))
        free = [m for m in MARKER_CYCLE if m not in order]
        group_markers = {}
        for g in order:
            group_markers[g] = g if g in MARKER_CYCLE else (free.pop(0) if free else "o")
        position = {g: i for i, g in enumerate(order)}
        group_ids = np.array([position[g] for g in groups.tolist()], dtype=np.int64)

    ax = fig.add_subplot()
    for gi, marker in enumerate(group_markers.values()):
        for c in classes:
            sel = np.flatnonzero((group_ids == gi) & (y == c))
            if sel.size:
                ax.scatter(
                    emb[sel, 0],
                    emb[sel, 1],
                    s=8,
                    marker=marker,
                    color=colors[c],
                    linewidths=0.8,
                    alpha=0.8,
                )

    if len(classes) <= MAX_LEGEND_LABELS:
        class_handles = [
            Line2D([], [], linestyle="", marker="o", color=colors[c], label=str(c)) for c in classes
        ]
        legend = ax.legend(
            handles=class_handles,
            title="label",
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    else:  # e.g. hundreds of speakers: a legend would not fit; colours repeat every 20 labels
        legend = ax.legend(
            handles=[],
            title=f"{len(classes)} labels\n(colours repeat)",
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    if groups is not None:
        ax.add_artist(legend)
        group_handles = [
            Line2D([], [], linestyle="", marker=m, color="k", label=str(g))
            for g, m in group_markers.items()
        ]
        ax.legend(
            handles=group_handles,
            title="group",
            fontsize="small",
            loc="lower left",
            bbox_to_anchor=(1.01, 0.0),
        )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)
