"""Image style measures (slant, ink) and how well style transfer carries them over.

Images are (N, H, W) float arrays of intensities with ink bright (MNIST: 0 background, 1 ink).
Every function clips them to [0, 1] first, so generated Gaussian means that leave the range
(slightly negative background, overshooting strokes) are measured like pixels.

Sign convention of :func:`slant`: x is the column index (pointing right), y the row index
(pointing *down*, as in the array). Slant is the shear ``mu11 / mu02`` of the central image
moments, i.e. the horizontal displacement of the ink per row going down: the stroke
``x = x0 + k * y`` has slant ``k``. Positive slant is a backslash-like stroke (bottom to the
right, top leaning left); a handwritten digit leaning right ("/") has *negative* slant.
Mirroring an image left-right (``np.flip(images, -1)``) negates its slant.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ink", "slant", "style_correlation"]


def _images(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float64 clipped to [0, 1], or a ValueError."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected (N, H, W) images, got shape {x.shape}")
    return np.clip(x, 0.0, 1.0)


def slant(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images -> (N,) slant ``mu11 / mu02`` in pixels of x per row (module docstring).

    Images without ink, or whose ink lies in a single row (``mu02 == 0``), have slant 0.
    """
    x = _images(images)
    h, w = x.shape[1:]
    mass = x.sum(axis=(1, 2))
    rows, cols = x.sum(axis=2), x.sum(axis=1)  # (N, H) ink per row, (N, W) ink per column
    safe = np.where(mass > 0, mass, 1.0)
    yc = rows @ np.arange(h) / safe  # (N,) ink centroid
    xc = cols @ np.arange(w) / safe
    dy = np.arange(h)[None, :] - yc[:, None]  # (N, H)
    dx = np.arange(w)[None, :] - xc[:, None]  # (N, W)
    mu11 = np.einsum("nhw,nh,nw->n", x, dy, dx)
    mu02 = np.einsum("nh,nh->n", rows, dy**2)
    ok = mu02 > 1e-12 * np.maximum(mass, 1.0)
    return np.where(ok, mu11 / np.where(ok, mu02, 1.0), 0.0)


def ink(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images -> (N,) ink mass per pixel: the mean intensity, in [0, 1]."""
    return _images(images).mean(axis=(1, 2))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (N,) vectors; 0.0 (no warning) if N < 2 or one is constant."""
    if len(a) < 2:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a @ a) * (b @ b)))
    if denom <= 1e-12 * len(a) * max(1.0, float(np.abs(a).max() * np.abs(b).max())):
        return 0.0
    return float(np.clip((a @ b) / denom, -1.0, 1.0))


def _within_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``values`` (N,) minus the mean of the items with the same label: what is left of a measure
    once the class (the digit) is accounted for."""
    out = np.asarray(values, dtype=np.float64).copy()
    labels = np.asarray(labels)
    for y in np.unique(labels):
        sel = labels == y
        out[sel] -= out[sel].mean()
    return out


def _digit_keeping_ceiling(values: np.ndarray, source_labels: np.ndarray,
                           output_labels: np.ndarray) -> float:
    """The raw correlation an exact digit-keeping transfer would reach: each output's measure is
    the mean of its own digit plus the style source's deviation from the mean of the source's
    digit (digit means over the style sources; a digit absent from them: the overall mean)."""
    values = np.asarray(values, dtype=np.float64)
    source_labels = np.asarray(source_labels)
    means = {y: values[source_labels == y].mean() for y in np.unique(source_labels)}
    target = np.array([means.get(y, values.mean()) for y in np.asarray(output_labels)])
    return _pearson(values, target + _within_class(values, source_labels))


def style_correlation(style_sources: np.ndarray, outputs: np.ndarray,
                      source_labels: np.ndarray | None = None,
                      output_labels: np.ndarray | None = None) -> dict[str, float | int]:
    """Pearson correlation across items of :func:`slant` and of :func:`ink` between style-source
    images and the outputs generated with their style, both (N, H, W) (clipped to [0, 1]).

    Returns ``{"slant_corr", "ink_corr", "n"}``; a correlation is 0.0 when either side is
    constant (e.g. all blank) or N < 2, so it is never NaN. Goal of a style transfer: >= 0.8 each.
    With the digits of the style sources and of the outputs (their content source's) also
    ``slant_corr_within_digit`` / ``ink_corr_within_digit``: the same correlations of each
    measure minus its mean over the items of the same digit, on each side. Ink mass depends on
    the digit (a 1 has less ink than an 8), so when the output's digit differs from the style
    source's the raw ink correlation mixes content into style; the within-digit one does not.
    With labels also ``slant_corr_ceiling`` / ``ink_corr_ceiling``: the raw correlation of a
    transfer that keeps the output's digit and carries the style exactly (each output = the mean
    of its digit + the style source's deviation from the mean of the source's digit), i.e. the
    most a digit-keeping transfer can show on the raw measure for these pairs.
    """
    src, out = _images(style_sources), _images(outputs)
    if src.shape[0] != out.shape[0]:
        raise ValueError(f"{src.shape[0]} style sources but {out.shape[0]} outputs")
    s_src, s_out, i_src, i_out = slant(src), slant(out), ink(src), ink(out)
    result: dict[str, float | int] = {"slant_corr": _pearson(s_src, s_out),
                                      "ink_corr": _pearson(i_src, i_out), "n": int(src.shape[0])}
    if (source_labels is None) != (output_labels is None):
        raise ValueError("give both source_labels and output_labels, or neither")
    if source_labels is not None and output_labels is not None:
        if len(source_labels) != len(src) or len(output_labels) != len(src):
            raise ValueError(f"{len(src)} images but {len(source_labels)} source labels and "
                             f"{len(output_labels)} output labels")
        result["slant_corr_within_digit"] = _pearson(_within_class(s_src, source_labels),
                                                     _within_class(s_out, output_labels))
        result["ink_corr_within_digit"] = _pearson(_within_class(i_src, source_labels),
                                                   _within_class(i_out, output_labels))
        result["slant_corr_ceiling"] = _digit_keeping_ceiling(s_src, source_labels, output_labels)
        result["ink_corr_ceiling"] = _digit_keeping_ceiling(i_src, source_labels, output_labels)
    return result
