"""Audio-visual denoising (MDVAE, issue 11): corrupt a face region of the central frames, restore,
score the region.

A video is an array or tensor (N, T, 3, H, W) of intensities in [0, 1] (the ``grid_clips``
loader's "video": T = 10, 64 x 64 face crops). :func:`corrupt` adds Gaussian noise of standard
deviation ``sigma`` inside one rectangular region of the given frames only (by default the
central 6 of 10, frames 2-7) and clips to [0, 1]; everything else is left bit for bit. The
named regions are boxes in the 64 x 64 crop of :data:`dispart.data.grid.GRID_FACE_BOX`, checked
on frames of every recording session of grid_s1 (and on the map of pixel motion over the
corpus, whose peaks are the lips and the eyelids):

* ``"mouth"``: columns 20-43, rows 40-55 (24 x 16 pixels: lips, teeth, the moving jaw line);
* ``"eyes"``: columns 14-49, rows 16-29 (36 x 14 pixels: both eyes and brows' lower edge).

:func:`region_scores` measures restored against clean videos on the corrupted region of the
corrupted frames: PSNR and SSIM per frame (each frame's region is one RGB image; scikit-image's
``peak_signal_noise_ratio`` and ``structural_similarity`` with ``data_range=1``,
``channel_axis``, its default 7 x 7 window), averaged over frames and sequences. Restored values
are clipped to [0, 1] first (a Gaussian decoder's means may leave the range).
:func:`denoising_table` runs corrupt -> every restorer -> scores for each region.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["CENTRAL", "REGIONS", "SEQUENCE_FRAMES", "SIGMA", "central_frames", "corrupt",
           "denoising_table", "region_box", "region_scores"]

SEQUENCE_FRAMES = 10
CENTRAL = 6  # corrupted frames: the central 6 of a 10-frame sequence
SIGMA = 0.2  # noise standard deviation, in units of the [0, 1] intensity range
REGIONS: dict[str, tuple[int, int, int, int]] = {
    "mouth": (20, 40, 44, 56),  # (left, top, right, bottom), right and bottom exclusive
    "eyes": (14, 16, 50, 30),
}

Region = str | tuple[int, int, int, int]
Restorer = Callable[[Any], Any]  # (N, T, 3, H, W) corrupted videos -> restored videos, same shape


def central_frames(length: int = SEQUENCE_FRAMES, n: int = CENTRAL) -> tuple[int, ...]:
    """The ``n`` central frame indices of a ``length``-frame sequence (10, 6 -> 2, 3, ..., 7)."""
    if not 0 < n <= length:
        raise ValueError(f"need 0 < n <= length, got n={n}, length={length}")
    first = (length - n) // 2
    return tuple(range(first, first + n))


def region_box(region: Region, height: int | None = None,
               width: int | None = None) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of a named region (:data:`REGIONS`) or of a box given as
    such a tuple; checked against the frame size when given. Unknown names are a ValueError."""
    if isinstance(region, str):
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; named regions are {sorted(REGIONS)} "
                             f"(or give a (left, top, right, bottom) box)")
        box = REGIONS[region]
    else:
        box = tuple(int(v) for v in region)  # type: ignore[assignment]
        if len(box) != 4:
            raise ValueError(f"a region box is (left, top, right, bottom), got {region!r}")
    left, top, right, bottom = box
    w = width if width is not None else right
    h = height if height is not None else bottom
    if not (0 <= left < right <= w and 0 <= top < bottom <= h):
        raise ValueError(f"region {region!r} = {box} does not fit in {w} x {h} frames")
    return box


def _frames(frames: Iterable[int] | None, length: int) -> list[int]:
    chosen = list(central_frames(length, min(CENTRAL, length)) if frames is None else frames)
    if not chosen:
        raise ValueError("no frame to corrupt")
    bad = [f for f in chosen if not 0 <= int(f) < length]
    if bad:
        raise ValueError(f"frames {bad} are outside a {length}-frame sequence")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"frames {chosen} repeat an index")
    return [int(f) for f in chosen]


def _to_numpy(video: Any, name: str) -> np.ndarray:
    """A float array (N, T, C, H, W) copy of an array or tensor."""
    if hasattr(video, "detach"):  # a torch tensor
        video = video.detach().cpu().numpy()
    arr = np.asarray(video)
    arr = np.array(arr, dtype=np.float64 if arr.dtype == np.float64 else np.float32)  # a copy
    if arr.ndim != 5:
        raise ValueError(f"{name} must be (N, T, C, H, W) videos, got shape {arr.shape}")
    return arr


def _like(arr: np.ndarray, original: Any) -> Any:
    """``arr`` as the type of ``original`` (a tensor on its device and dtype, or an array)."""
    if hasattr(original, "detach"):
        import torch

        return torch.from_numpy(arr).to(device=original.device, dtype=original.dtype)
    return arr


def corrupt(video: Any, region: Region = "mouth", frames: Iterable[int] | None = None,
            sigma: float = SIGMA, seed: int = 0) -> Any:
    """A copy of ``video`` (N, T, 3, H, W) in [0, 1] with N(0, sigma^2) noise added inside
    ``region`` (a name of :data:`REGIONS` or a (left, top, right, bottom) box) of ``frames``
    (default: the central 6, or all frames of a sequence shorter than 6), clipped to [0, 1].

    Pixels outside the region or the frames are returned unchanged, exactly. The noise is drawn
    with ``numpy.random.default_rng(seed)``, so the same call gives the same corruption; an array
    gives an array, a tensor a tensor (same device and dtype).
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    x = _to_numpy(video, "video")
    left, top, right, bottom = region_box(region, x.shape[3], x.shape[4])
    chosen = _frames(frames, x.shape[1])
    rng = np.random.default_rng(seed)
    idx = np.ix_(range(x.shape[0]), chosen, range(x.shape[2]), range(top, bottom), range(left, right))
    patch = x[idx]
    noise = rng.normal(0.0, sigma, size=patch.shape).astype(x.dtype)
    x[idx] = np.clip(patch + noise, 0.0, 1.0)
    return _like(x, video)


def region_scores(clean: Any, restored: Any, region: Region = "mouth",
                  frames: Iterable[int] | None = None) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``restored`` against ``clean`` (both (N, T, 3, H, W)) over
    ``region`` of ``frames`` (default: the central 6): one score per frame and sequence, each on
    the region's (h, w, 3) image, averaged. ``restored`` is clipped to [0, 1]. Returns
    ``{"psnr", "ssim", "n"}`` (n: sequences). A frame restored exactly has PSNR inf."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _to_numpy(clean, "clean"), np.clip(_to_numpy(restored, "restored"), 0.0, 1.0)
    if a.shape != b.shape:
        raise ValueError(f"restored videos have shape {b.shape}, the clean ones {a.shape}")
    left, top, right, bottom = region_box(region, a.shape[3], a.shape[4])
    chosen = _frames(frames, a.shape[1])
    psnr, ssim = [], []
    for i in range(a.shape[0]):
        for t in chosen:
            x = a[i, t, :, top:bottom, left:right].transpose(1, 2, 0).astype(np.float64)
            y = b[i, t, :, top:bottom, left:right].transpose(1, 2, 0).astype(np.float64)
            mse = float(np.mean((x - y) ** 2))
            psnr.append(float("inf") if mse == 0.0 else peak_signal_noise_ratio(x, y, data_range=1.0))
            ssim.append(structural_similarity(x, y, data_range=1.0, channel_axis=-1))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "n": int(a.shape[0])}


def denoising_table(restorers: Mapping[str, Restorer], clean: Any,
                    regions: Sequence[Region] = ("mouth", "eyes"),
                    frames: Iterable[int] | None = None, sigma: float = SIGMA, seed: int = 0,
                    baseline: str | None = "noisy") -> dict[str, dict[str, dict[str, float]]]:
    """For every region: corrupt ``clean`` (N, T, 3, H, W), restore with every restorer, score.

    Each restorer is called once per region with the corrupted videos in the order of ``clean``
    (so it can pair row i with the audio of sequence i) and must return videos of the same shape
    (array or tensor). ``baseline`` names an extra entry scoring the corrupted input itself (no
    restoration; None leaves it out). Returns ``{region: {name: {"psnr", "ssim", "n"}}}`` with
    region keys as given (a box as its ``str``).
    """
    if baseline is not None and baseline in restorers:
        raise ValueError(f"restorer name {baseline!r} is the baseline's; rename it or pass baseline=None")
    chosen = None if frames is None else list(frames)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for region in regions:
        noisy = corrupt(clean, region, chosen, sigma, seed)
        row: dict[str, dict[str, float]] = {}
        if baseline is not None:
            row[baseline] = region_scores(clean, noisy, region, chosen)
        for name, restore in restorers.items():
            out = restore(noisy.clone() if hasattr(noisy, "clone") else noisy.copy())  # each its own input
            if tuple(np.shape(out)) != tuple(np.shape(noisy)):
                raise ValueError(f"restorer {name!r} returned shape {tuple(np.shape(out))} for videos of "
                                 f"shape {tuple(np.shape(noisy))}")
            row[name] = region_scores(clean, out, region, chosen)
        table[region if isinstance(region, str) else str(tuple(region))] = row
    return table
