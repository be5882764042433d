"""The small data sample shipped inside the package (offline demos and tests).

* ``sample_data/fsdd/``: 400 FSDD wavs (every speaker and digit, takes 0, 1 and 5-10), 8 kHz.
* ``sample_data/mnist_sample.npz``: the first 1200 MNIST training and 400 test images (uint8).

The demo's larger sample (config value ``sample-large`` of ``data.audio`` / ``data.images``):

* ``sample_data/fsdd_large.csv``: a ``label,speaker,take,path`` manifest of the 400 wavs above and
  1,200 more in ``sample_data/fsdd_more/`` (takes 11-34): 100 test and 1,500 training utterances;
* ``sample_data/mnist_large.npz``: the first 10,000 MNIST training and 1,000 test images.

See ``sample_data/ATTRIBUTION.md`` for sources and licences (CC BY-SA).
"""

from __future__ import annotations

from pathlib import Path

from dispart.errors import DataError

__all__ = ["SAMPLE", "SAMPLE_LARGE", "sample_audio_source", "sample_data_dir", "sample_fsdd_dir",
           "sample_image_source", "sample_mnist_path"]

SAMPLE, SAMPLE_LARGE = "sample", "sample-large"  # config values naming the embedded samples


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


def _embedded(path: Path, what: str = "sample file") -> Path:
    """``path`` if it is a file, else a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: embedded {what} is missing (reinstall dispart or run "
                        "tools/make_sample.py)")
    return path


def sample_mnist_path() -> Path:
    """Path of the embedded MNIST sample ``.npz`` (keys x_train, y_train, x_test, y_test)."""
    return _embedded(sample_data_dir() / "mnist_sample.npz", "MNIST sample")


def sample_audio_source(value: str) -> Path | None:
    """The embedded speech source a ``data.audio`` value names ("sample": the FSDD folder,
    "sample-large": its manifest), or None for any other value (a user's path)."""
    if value == SAMPLE:
        return sample_fsdd_dir()
    if value == SAMPLE_LARGE:
        return _embedded(sample_data_dir() / "fsdd_large.csv")
    return None


def sample_image_source(value: str) -> Path | None:
    """The embedded MNIST ``.npz`` a ``data.images`` value names, or None for any other value."""
    if value == SAMPLE:
        return sample_mnist_path()
    if value == SAMPLE_LARGE:
        return _embedded(sample_data_dir() / "mnist_large.npz")
    return None
