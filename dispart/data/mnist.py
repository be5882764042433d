"""MNIST loading from an ``.npz`` file or from the four official IDX files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from dispart.errors import DataError

__all__ = ["IDX_FILES", "load_mnist", "read_idx"]

# split -> (images stem, labels stem); files may end with .gz, and "-idx" may be ".idx".
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes as a uint8 array."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(shape)) if shape else 0
    if len(raw) - header != n:
        raise DataError(
            f"{path}: IDX header announces shape {shape} ({n} bytes) but the file has "
            f"{len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: MNIST IDX file '{stem}' (or '{stem}.gz') not found")


def _check(
    images: np.ndarray, labels: np.ndarray, where: str, xname: str, yname: str
) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{where}: field '{xname}' has shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{where}: field '{yname}' has shape {labels.shape}, expected ({images.shape[0]},)"
        )
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        if x.size and (not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0):
            raise DataError(f"{where}: field '{xname}' is float but not within [0, 1]")
    else:
        raise DataError(f"{where}: field '{xname}' has dtype {images.dtype}, expected uint8")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: field '{yname}' has dtype {labels.dtype}, expected integers")
    return x, labels.astype(np.int64)


def load_mnist(source: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load MNIST from an ``.npz`` (keys x_train, y_train, x_test, y_test) or an IDX folder.

    Returns ``{"train": (images, labels), "test": (images, labels)}`` with images float32
    (N, 28, 28) in [0, 1] and labels int64 (N,).
    """
    source = Path(source)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if source.is_file():
        try:
            npz = np.load(source, allow_pickle=False)
        except Exception as e:
            raise DataError(f"{source}: cannot read as .npz ({e})") from e
        with npz:
            for split, (xk, yk) in _NPZ_KEYS.items():
                for k in (xk, yk):
                    if k not in npz.files:
                        raise DataError(f"{source}: missing field '{k}' (has {npz.files})")
                out[split] = _check(npz[xk], npz[yk], str(source), xk, yk)
        return out
    if source.is_dir():
        for split, (xstem, ystem) in IDX_FILES.items():
            xp, yp = _find_idx(source, xstem), _find_idx(source, ystem)
            images, labels = read_idx(xp), read_idx(yp)
            if images.ndim != 3 or images.shape[1:] != (28, 28):
                raise DataError(f"{xp}: images have shape {images.shape}, expected (N, 28, 28)")
            if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
                raise DataError(
                    f"{yp}: labels have shape {labels.shape}, expected ({images.shape[0]},) "
                    f"to match {xp.name}"
                )
            out[split] = _check(images, labels, str(source), xp.name, yp.name)
        return out
    raise DataError(f"{source}: MNIST source does not exist (expected an .npz file or IDX folder)")
