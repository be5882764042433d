"""Finding spoken and written digits in a user's data folder (``--data-dir``)."""

from __future__ import annotations

from pathlib import Path

from dispart.errors import ConfigError


def find_data(data_dir: Path) -> dict[str, str]:
    """Locate spoken and written digits under a folder (``--data-dir``) as config overrides.

    Looks for FSDD (``fsdd/recordings``, ``recordings``, ``free-spoken-digit-dataset*``),
    AudioMNIST (``AudioMNIST/data``) and MNIST (``mnist/mnist.npz``, ``mnist.npz`` or a folder
    with the IDX files).
    """
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir: not a folder: {data_dir}")
    found: dict[str, str] = {}
    audio_candidates = [
        data_dir / "fsdd" / "recordings", data_dir / "recordings",
        *sorted(data_dir.glob("free-spoken-digit-dataset*/recordings")),
        *sorted(data_dir.glob("AudioMNIST*/data")), data_dir / "audiomnist" / "data",
    ]
    for cand in audio_candidates:
        if cand.is_dir() and any(cand.rglob("*.wav")):
            found["data.audio"] = str(cand)
            break
    image_candidates = [data_dir / "mnist" / "mnist.npz", data_dir / "mnist.npz", data_dir / "mnist",
                        data_dir / "MNIST" / "raw", data_dir]
    for cand in image_candidates:
        if cand.is_file() or (cand.is_dir() and any(cand.glob("*idx3-ubyte*"))):
            found["data.images"] = str(cand)
            break
    if not found:
        raise ConfigError(f"--data-dir {data_dir}: found neither spoken digits (fsdd/recordings, "
                          f"AudioMNIST/data) nor MNIST (mnist/mnist.npz or IDX files)")
    return found
