"""MNIST loading from an ``.npz`` file or from the four official IDX files."""

from __future__ import annotations

import gzip
import math
import zlib
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
N_CLASSES = 10  # MNIST digits: labels 0..9


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes as a uint8 array."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # also a corrupt or truncated .gz
        raise DataError(f"{path}: cannot read IDX file ({e.__class__.__name__}: {e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n = math.prod(shape) if shape else 0  # Python ints: a forged header cannot overflow
    if len(raw) - header != n:
        raise DataError(
            f"{path}: IDX header announces shape {shape} ({n} bytes) but the file has "
            f"{len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _stat_kind(path: Path) -> str | None:
    """Return "file", "dir" or None (missing, or a name the OS refuses: too long, NUL byte)."""
    try:
        return "file" if path.is_file() else "dir" if path.is_dir() else None
    except (OSError, ValueError):
        return None


def _find_idx(folder: Path, stem: str) -> Path:
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: MNIST IDX file '{stem}' (or '{stem}.gz') not found")


def _check(images: np.ndarray, labels: np.ndarray, xwhat: str, ywhat: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 (N, 28, 28) in [0, 1] and labels int64 in 0..9, or a DataError.

    ``xwhat`` / ``ywhat`` name the arrays in messages: "FILE.npz: field 'x_train'" or an IDX file.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] == 0:
        raise DataError(f"{xwhat} has shape {images.shape}, expected (N, 28, 28) with N >= 1")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{ywhat} has shape {labels.shape}, expected ({images.shape[0]},)")
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0:
            raise DataError(f"{xwhat} is float but not within [0, 1]")
        x = images.astype(np.float32)
    else:
        raise DataError(f"{xwhat} has dtype {images.dtype}, expected uint8")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{ywhat} has dtype {labels.dtype}, expected integers")
    bad = (labels < 0) | (labels >= N_CLASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{ywhat} has label {labels[i]} at index {i}, expected digits "
                        f"0..{N_CLASSES - 1} ({int(bad.sum())} labels out of range)")
    return x, labels.astype(np.int64)


def _load_npz(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        npz = np.load(source, allow_pickle=False)
    except Exception as e:  # numpy raises OSError, ValueError, BadZipFile, EOFError...
        raise DataError(f"{source}: cannot read as .npz ({e.__class__.__name__}: {e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{source}: a single .npy array, not an .npz archive with fields "
                        f"{[k for keys in _NPZ_KEYS.values() for k in keys]}")
    out = {}
    with npz:
        for split, (xk, yk) in _NPZ_KEYS.items():
            x, y = (_npz_field(npz, source, k) for k in (xk, yk))
            out[split] = _check(x, y, f"{source}: field '{xk}'", f"{source}: field '{yk}'")
    return out


def _npz_field(npz: np.lib.npyio.NpzFile, source: Path, key: str) -> np.ndarray:
    if key not in npz.files:
        raise DataError(f"{source}: missing field '{key}' (has {npz.files})")
    try:
        return npz[key]
    except Exception as e:  # object arrays (pickle refused), corrupt or truncated members
        raise DataError(f"{source}: field '{key}' cannot be read ({e.__class__.__name__}: "
                        f"{' '.join(str(e).split())})") from e


def load_mnist(source: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load MNIST from an ``.npz`` (keys x_train, y_train, x_test, y_test) or an IDX folder.

    Returns ``{"train": (images, labels), "test": (images, labels)}`` with images float32
    (N, 28, 28) in [0, 1] and labels int64 (N,).
    """
    source = Path(source)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    kind = _stat_kind(source)
    if kind == "file":
        return _load_npz(source)
    if kind == "dir":
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
            out[split] = _check(images, labels, str(xp), str(yp))
        return out
    raise DataError(f"{source}: MNIST source does not exist (expected an .npz file or IDX folder)")
