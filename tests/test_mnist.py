"""MNIST loading from .npz and from official-format IDX files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from dispart.data.mnist import load_mnist, read_idx
from dispart.data.sample import sample_mnist_path
from dispart.errors import DataError

SHARED = Path(__file__).parents[1].parent / "shared" / "data"


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def _write_idx_folder(folder: Path, raw: dict[str, np.ndarray], gz: bool) -> None:
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in names.items():
        data = _idx_bytes(raw[key])
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.fixture(scope="module")
def raw_sample() -> dict[str, np.ndarray]:
    with np.load(sample_mnist_path(), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_npz_sample(raw_sample: dict[str, np.ndarray]) -> None:
    data = load_mnist(sample_mnist_path())
    assert set(data) == {"train", "test"}
    x, y = data["train"]
    assert x.shape == (1200, 28, 28) and x.dtype == np.float32
    assert y.shape == (1200,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x * 255, raw_sample["x_train"], atol=1e-3)
    assert data["test"][0].shape == (400, 28, 28)
    assert set(np.unique(y)) == set(range(10))


def test_full_npz() -> None:
    path = SHARED / "mnist" / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"full MNIST not available at {path} (development data only)")
    data = load_mnist(path)
    assert data["train"][0].shape == (60000, 28, 28) and data["test"][1].shape == (10000,)
    assert np.bincount(data["test"][1]).tolist()[:2] == [980, 1135]  # well-known counts


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_matches_npz(tmp_path: Path, raw_sample: dict, gz: bool) -> None:
    small = {k: v[:50] for k, v in raw_sample.items()}
    _write_idx_folder(tmp_path, small, gz)
    data = load_mnist(tmp_path)
    for split in ("train", "test"):
        x, y = data[split]
        np.testing.assert_array_equal(x, small[f"x_{split}"].astype(np.float32) / 255)
        np.testing.assert_array_equal(y, small[f"y_{split}"])
    assert read_idx(next(tmp_path.iterdir())).dtype == np.uint8


def test_npz_errors_name_file_and_field(tmp_path: Path, raw_sample: dict) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=raw_sample["x_train"], y_train=raw_sample["y_train"])
    with pytest.raises(DataError, match=r"bad\.npz: missing field 'x_test'"):
        load_mnist(bad)
    np.savez(bad, **{**raw_sample, "x_test": raw_sample["x_test"].reshape(400, 784)})
    with pytest.raises(DataError, match=r"bad\.npz: field 'x_test' has shape \(400, 784\)"):
        load_mnist(bad)
    np.savez(bad, **{**raw_sample, "y_train": raw_sample["y_train"][:10]})
    with pytest.raises(DataError, match=r"bad\.npz: field 'y_train'"):
        load_mnist(bad)
    (tmp_path / "junk.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"junk\.npz"):
        load_mnist(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "absent.npz")


def test_idx_errors_name_file(tmp_path: Path, raw_sample: dict) -> None:
    small = {k: v[:20] for k, v in raw_sample.items()}
    _write_idx_folder(tmp_path, small, gz=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(small["y_test"])[:-3])  # truncated
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: IDX header announces"):
        load_mnist(tmp_path)
    labels.write_bytes(_idx_bytes(small["y_test"][:5]))  # wrong count
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: labels have shape \(5,\)"):
        load_mnist(tmp_path)
    labels.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        load_mnist(tmp_path)
    labels.unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)
