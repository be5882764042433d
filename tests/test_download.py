"""Download logic, offline: file:// URLs and a patched urlopen (no network is used)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import dispart.data.download as dl
from dispart.data.corpus import scan_corpus
from dispart.data.mnist import load_mnist
from dispart.data.sample import sample_fsdd_dir
from dispart.errors import DataError


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("urlopen called although the file is present and verified")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_pinned_checksum_ok_and_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello dispart")
    dest = tmp_path / "dl" / "file.bin"
    out = dl.fetch_verified(src.as_uri(), dest, sha256=_sha(b"hello dispart"))
    assert out.read_bytes() == b"hello dispart"
    other = tmp_path / "dl2" / "file.bin"
    with pytest.raises(DataError, match=r"file\.bin: downloaded file has a checksum mismatch"):
        dl.fetch_verified(src.as_uri(), other, sha256="0" * 64)
    assert sorted(p.name for p in other.parent.iterdir()) == []  # no file, no temporary file
    # an existing file that does not verify is reported, not silently replaced
    dest.write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"file\.bin: checksum mismatch"):
        dl.fetch_verified(src.as_uri(), dest, sha256=_sha(b"hello dispart"))
    assert dest.read_bytes() == b"tampered"


def test_trust_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "archive.zip"
    src.write_bytes(b"some archive bytes")
    dest = tmp_path / "dl" / "archive.zip"
    dl.fetch_verified(src.as_uri(), dest)
    assert _sha(b"some archive bytes") in capsys.readouterr().out
    record = json.loads((dest.parent / dl.CHECKSUMS_FILE).read_text())
    assert record == {"archive.zip": _sha(b"some archive bytes")}
    monkeypatch.setattr(dl.urllib.request, "urlopen", _no_network)
    assert dl.fetch_verified(src.as_uri(), dest) == dest  # present + verified: no download
    dest.write_bytes(b"corrupted later")
    with pytest.raises(DataError, match=r"archive\.zip: checksum mismatch.*recorded in"):
        dl.fetch_verified(src.as_uri(), dest)


def test_download_failure_names_urls(tmp_path: Path) -> None:
    missing = (tmp_path / "nothing.zip").as_uri()
    with pytest.raises(DataError, match=r"download failed.*nothing\.zip"):
        dl.fetch_verified((missing, missing), tmp_path / "dl" / "x.zip")


def test_download_fsdd_from_local_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = f"free-spoken-digit-dataset-{dl.FSDD_COMMIT}"
    archive = tmp_path / "fsdd.zip"
    wavs = sorted(sample_fsdd_dir().glob("*.wav"))[:6]
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{top}/README.md", "FSDD")
        for w in wavs:
            z.write(w, f"{top}/recordings/{w.name}")
    monkeypatch.setattr(dl, "FSDD_URL", archive.as_uri())
    dest = tmp_path / "data"
    rec = dl.download_fsdd(dest)
    assert rec == dest / top / "recordings"
    assert [u.path.name for u in scan_corpus(rec)] == sorted(w.name for w in wavs)
    assert (dest / dl.CHECKSUMS_FILE).is_file()
    monkeypatch.setattr(dl.urllib.request, "urlopen", _no_network)
    assert dl.download_fsdd(dest) == rec  # already present


def test_download_fsdd_pinned_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "fsdd.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x/README.md", "FSDD")
    monkeypatch.setattr(dl, "FSDD_URL", archive.as_uri())
    monkeypatch.setattr(dl, "FSDD_SHA256", "f" * 64)
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.download_fsdd(tmp_path / "data")


def test_download_mnist_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    y = np.array([1, 2, 3], np.uint8)
    idx = {
        "train-images-idx3-ubyte.gz": bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28])
        + x.tobytes(),
        "train-labels-idx1-ubyte.gz": bytes([0, 0, 8, 1, 0, 0, 0, 3]) + y.tobytes(),
    }
    idx["t10k-images-idx3-ubyte.gz"] = idx["train-images-idx3-ubyte.gz"]
    idx["t10k-labels-idx1-ubyte.gz"] = idx["train-labels-idx1-ubyte.gz"]
    for name, data in idx.items():
        (mirror / name).write_bytes(gzip.compress(data, mtime=0))
    monkeypatch.setattr(
        dl, "MNIST_MIRRORS", ((tmp_path / "dead").as_uri() + "/", mirror.as_uri() + "/")
    )
    # the real pinned MD5s do not match these fake files
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*MD5"):
        dl.download_mnist(tmp_path / "mnist")
    md5s = {n: hashlib.md5((mirror / n).read_bytes()).hexdigest() for n in idx}
    monkeypatch.setattr(dl, "MNIST_FILES", md5s)
    folder = dl.download_mnist(tmp_path / "mnist")  # first mirror is dead, second works
    data = load_mnist(folder)
    np.testing.assert_array_equal(data["train"][1], [1, 2, 3])
    np.testing.assert_allclose(data["test"][0] * 255, x, atol=1e-3)
    monkeypatch.setattr(dl.urllib.request, "urlopen", _no_network)
    dl.download_mnist(tmp_path / "mnist")


def _fsdd_archive(path: Path, *extra: str) -> str:
    top = f"free-spoken-digit-dataset-{dl.FSDD_COMMIT}"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{top}/recordings/README.md", "FSDD")
        for name in extra:
            z.writestr(name, "escaped")
    return top


@pytest.mark.parametrize("member", ["../escaped.txt", "free-spoken-digit-dataset-x/../../escaped.txt",
                                    "/tmp/dispart-zip-slip-escaped.txt"])
def test_zip_slip_members_are_refused_before_anything_is_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str
) -> None:
    archive = tmp_path / "evil.zip"
    top = _fsdd_archive(archive, member)
    monkeypatch.setattr(dl, "FSDD_URL", archive.as_uri())
    dest = tmp_path / "data" / "inner"
    with pytest.raises(DataError) as info:
        dl.download_fsdd(dest)
    assert str(info.value) == (f"{dest / (top + '.zip')}: member '{member}' would extract "
                               f"outside {dest}")
    # nothing was extracted, inside or outside the destination
    assert sorted(p.name for p in dest.iterdir()) == [dl.CHECKSUMS_FILE, f"{top}.zip"]
    assert not (tmp_path / "data" / "escaped.txt").exists()
    assert not Path("/tmp/dispart-zip-slip-escaped.txt").exists()


class _BrokenStream:
    """A response that delivers some bytes, then fails (a dropped connection)."""

    def __init__(self) -> None:
        self.sent = False

    def __enter__(self) -> _BrokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, n: int = -1) -> bytes:
        if self.sent:
            raise ConnectionResetError("connection reset mid-download")
        self.sent = True
        return b"partial bytes"


def test_an_interrupted_download_leaves_no_file_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: _BrokenStream())
    dest = tmp_path / "dl" / "file.bin"
    with pytest.raises(DataError, match=r"file\.bin: download failed \(http://x/file\.bin: "
                                        r"connection reset mid-download\)"):
        dl.fetch_verified("http://x/file.bin", dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == []
