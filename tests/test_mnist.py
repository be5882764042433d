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


# --- every bad input is one DataError naming the file and the field -----------------------------


@pytest.mark.parametrize(("bad_label", "index"), [(10, 3), (-1, 0), (255, 7)])
def test_npz_labels_outside_0_9_are_refused(tmp_path: Path, raw_sample: dict, bad_label: int,
                                            index: int) -> None:
    y = raw_sample["y_test"].astype(np.int64).copy()
    y[index] = bad_label
    bad = tmp_path / "labels.npz"
    np.savez(bad, **{**raw_sample, "y_test": y})
    with pytest.raises(DataError) as e:
        load_mnist(bad)
    assert str(e.value) == (f"{bad}: field 'y_test' has label {bad_label} at index {index}, "
                            f"expected digits 0..9 (1 labels out of range)")


def test_idx_labels_outside_0_9_name_the_idx_file(tmp_path: Path, raw_sample: dict) -> None:
    small = {k: v[:20].copy() for k, v in raw_sample.items()}
    small["y_train"][5] = 12
    _write_idx_folder(tmp_path, small, gz=True)
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'train-labels-idx1-ubyte.gz'} has label 12 at index 5")


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("x_train", np.zeros((0, 28, 28), np.uint8), "field 'x_train' has shape (0, 28, 28)"),
    ("x_train", np.zeros((1200, 28, 28), np.int32), "field 'x_train' has dtype int32, expected uint8"),
    ("x_test", np.full((400, 28, 28), 2.0, np.float32), "field 'x_test' is float but not within [0, 1]"),
    ("y_train", np.zeros(1200, np.float32), "field 'y_train' has dtype float32, expected integers"),
    ("y_test", np.zeros((400, 1), np.int64), "field 'y_test' has shape (400, 1), expected (400,)"),
    ("y_test", np.array(["a"] * 400, dtype=object), "field 'y_test' cannot be read (ValueError: Object "
                                                    "arrays cannot be loaded when allow_pickle=False)"),
])
def test_npz_bad_shapes_and_dtypes_name_file_and_field(tmp_path: Path, raw_sample: dict, field: str,
                                                       value: np.ndarray, fragment: str) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**raw_sample, field: value})
    with pytest.raises(DataError) as e:
        load_mnist(bad)
    assert str(e.value).startswith(f"{bad}: {fragment}")


def test_corrupt_npz_and_idx_files_are_named(tmp_path: Path, raw_sample: dict) -> None:
    single = tmp_path / "single.npz"  # a .npy under an .npz name
    with single.open("wb") as f:
        np.save(f, raw_sample["x_train"])
    with pytest.raises(DataError, match=rf"^{single}: a single \.npy array, not an \.npz archive"):
        load_mnist(single)
    good = tmp_path / "good.npz"
    np.savez(good, **raw_sample)
    data = bytearray(good.read_bytes())
    data[200:400] = b"\0" * 200  # inside the first member: a corrupt header or CRC
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^{corrupt}: (field 'x_\w+' cannot be read|cannot read)"):
        load_mnist(corrupt)
    idx = tmp_path / "idx"
    _write_idx_folder(idx, {k: v[:20] for k, v in raw_sample.items()}, gz=True)
    gz = idx / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-20])  # a truncated gzip stream: EOFError inside gzip
    with pytest.raises(DataError, match=rf"^{gz}: cannot read IDX file \(EOFError"):
        load_mnist(idx)
    labels = idx / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 255, 255, 255, 255])))  # 4 G labels promised
    gz.write_bytes(gzip.compress(_idx_bytes(raw_sample["x_test"][:20])))
    with pytest.raises(DataError, match=rf"^{labels}: IDX header announces shape \(4294967295,\)"):
        load_mnist(idx)


def test_cli_names_the_bad_mnist_file_in_one_line(tmp_path: Path, raw_sample: dict, capsys) -> None:
    from dispart.cli import main

    y = raw_sample["y_train"].copy()
    y[0] = 10
    bad = tmp_path / "mnist.npz"
    np.savez(bad, **{**raw_sample, "y_train": y})
    code = main(["train", "configs/mnist_label_mvae.yaml", "--out", str(tmp_path / "r"),
                 f"data.images={bad}", "train.progress_bar=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"dispart train: error: {bad}: field 'y_train' has label 10 at index 0, expected "
                   f"digits 0..9 (1 labels out of range)\n")
