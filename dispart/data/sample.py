"""The small data sample shipped inside the package (offline demos and tests).

* ``sample_data/fsdd/``: 400 FSDD wavs (every speaker and digit, takes 0, 1 and 5-10), 8 kHz.
* ``sample_data/mnist_sample.npz``: the first 1200 MNIST training and 400 test images (uint8).

See ``sample_data/ATTRIBUTION.md`` for sources and licences (CC BY-SA).
"""

from __future__ import annotations

from pathlib import Path

from dispart.errors import DataError

__all__ = ["sample_data_dir", "sample_fsdd_dir", "sample_mnist_path"]


def sample_data_dir() -> Path:
    """Folder of the embedded sample (``dispart/sample_data``)."""
    return Path(__file__).resolve().parent.parent / "sample_data"


def sample_fsdd_dir() -> Path:
    """Folder of the embedded FSDD sample wavs."""
    path = sample_data_dir() / "fsdd"
    if not path.is_dir() or not any(path.glob("*.wav")):
        raise DataError(
            f"{path}: embedded FSDD sample is missing (reinstall dispart or run "
            "tools/make_sample.py)"
        )
    return path


def sample_mnist_path() -> Path:
    """Path of the embedded MNIST sample ``.npz`` (keys x_train, y_train, x_test, y_test)."""
    path = sample_data_dir() / "mnist_sample.npz"
    if not path.is_file():
        raise DataError(
            f"{path}: embedded MNIST sample is missing (reinstall dispart or run "
            "tools/make_sample.py)"
        )
    return path
