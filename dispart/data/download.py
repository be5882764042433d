"""Download the public corpora dispart can use (needs internet; nothing here runs offline).

Integrity, honestly stated:

* MNIST: the four official IDX ``.gz`` files are checked against their well-known MD5 sums
  (the ones torchvision pins). Their SHA-256 is additionally recorded on first use.
* FSDD and AudioMNIST: downloaded as GitHub archives of a pinned commit. GitHub builds these
  archives on the fly and does not promise byte-identical output over time, and the authors of
  this module could not download them when writing it, so **no checksum is pinned**
  (``sha256=None``). Instead the SHA-256 of the first download is printed and recorded in
  ``checksums.json`` next to the archive (trust on first use), and every later use verifies
  the archive against that record. This protects against later corruption or substitution,
  not against a bad first download. The pinned commit still fixes the content.

Every function skips the download when the file is already present and verifies, and raises
:class:`DataError` on a checksum mismatch (the bad file is removed only if this call just
downloaded it; an existing file is left for you to inspect and delete). Downloads, checksum
records and completion markers are written atomically (:mod:`dispart.files`), so an interrupted
download never leaves a partial file under the final name; archive members that would extract
outside the destination (``../``, absolute paths) are refused before anything is extracted.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from pathlib import Path

from dispart.errors import DataError
from dispart.files import atomic_open, atomic_write, atomic_write_json, read_json

__all__ = [
    "AUDIOMNIST_COMMIT",
    "AUDIOMNIST_SHA256",
    "AUDIOMNIST_URL",
    "CHECKSUMS_FILE",
    "FSDD_COMMIT",
    "FSDD_SHA256",
    "FSDD_URL",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "download_audiomnist",
    "download_fsdd",
    "download_mnist",
    "fetch_verified",
    "file_digest",
]

CHECKSUMS_FILE = "checksums.json"

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"  # 2024-05-02, CC BY-SA 4.0
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.zip"
FSDD_SHA256: str | None = None  # unknown offline: trust on first use, see module docstring

AUDIOMNIST_COMMIT = "6c5eb77d8e9242d6ce31af807f0409d36a246f51"  # a commit containing data/
AUDIOMNIST_URL = f"https://github.com/soerenab/AudioMNIST/archive/{AUDIOMNIST_COMMIT}.zip"
AUDIOMNIST_SHA256: str | None = None  # unknown offline: trust on first use

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {  # file name -> official MD5
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_COMPLETE = ".dispart-complete"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file."""
    h = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_records(folder: Path) -> dict[str, str]:
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    data = read_json(path, error=DataError)
    if not isinstance(data, dict):
        raise DataError(f"{path}: checksum record must be a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def _write_record(folder: Path, name: str, sha256: str) -> None:
    records = _read_records(folder)
    records[name] = sha256
    atomic_write_json(folder / CHECKSUMS_FILE, records, indent=2, sort_keys=True)


def _verify(path: Path, sha256: str | None, md5: str | None) -> str | None:
    """None if ``path`` matches the pinned and recorded checksums, else a reason.

    Records the file's SHA-256 in ``checksums.json`` when it has no record yet.
    """
    if md5 is not None:
        got = file_digest(path, "md5")
        if got != md5:
            return f"MD5 {got} != pinned {md5}"
    actual = file_digest(path, "sha256")
    recorded = _read_records(path.parent).get(path.name)
    if sha256 is not None and actual != sha256:
        return f"SHA-256 {actual} != pinned {sha256}"
    if recorded is not None and actual != recorded:
        return f"SHA-256 {actual} != {recorded} recorded in {path.parent / CHECKSUMS_FILE}"
    if recorded is None:
        if sha256 is None and md5 is None:
            print(f"{path.name}: SHA-256 {actual} (no pinned checksum; recorded on first use)")
        _write_record(path.parent, path.name, actual)
    return None


def fetch_verified(
    urls: str | tuple[str, ...], dest_file: Path, sha256: str | None = None, md5: str | None = None
) -> Path:
    """Download ``dest_file`` from the first working URL unless already present, then verify.

    Verification uses ``sha256``/``md5`` when given, else the SHA-256 recorded in
    ``checksums.json`` next to the file, else records it (trust on first use).
    """
    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    if dest_file.is_file():
        reason = _verify(dest_file, sha256, md5)
        if reason:
            raise DataError(
                f"{dest_file}: checksum mismatch ({reason}); the file is corrupt or not the "
                "expected release - delete it to download again"
            )
        return dest_file
    errors = []
    for url in (urls,) if isinstance(urls, str) else urls:
        try:
            print(f"downloading {url} -> {dest_file}")
            with urllib.request.urlopen(url, timeout=60) as r, atomic_open(dest_file) as f:
                shutil.copyfileobj(r, f, 1 << 20)
            break
        except OSError as e:  # URLError, HTTPError, timeouts are OSErrors
            errors.append(f"{url}: {e}")
    else:
        raise DataError(f"{dest_file}: download failed ({'; '.join(errors)})")
    # Verify under the final name so a trust-on-first-use record uses it.
    reason = _verify(dest_file, sha256, md5)
    if reason:
        dest_file.unlink(missing_ok=True)
        raise DataError(f"{dest_file}: downloaded file has a checksum mismatch ({reason})")
    return dest_file


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        root = dest.resolve()
        for name in z.namelist():
            target = (dest / name).resolve()
            if target != root and root not in target.parents:
                raise DataError(f"{archive}: member '{name}' would extract outside {dest}")
        z.extractall(dest)


def _download_archive(url: str, dest: Path, sha256: str | None, folder_name: str) -> Path:
    dest = Path(dest)
    out = dest / folder_name
    if (out / _COMPLETE).is_file():
        return out
    archive = fetch_verified(url, dest / f"{folder_name}.zip", sha256=sha256)
    _extract_zip(archive, dest)
    if not out.is_dir():
        raise DataError(f"{archive}: archive did not contain the folder '{folder_name}'")
    atomic_write(out / _COMPLETE, file_digest(archive) + "\n")
    return out


def download_fsdd(dest: str | Path) -> Path:
    """Download FSDD at commit ``FSDD_COMMIT`` into ``dest``; returns its ``recordings`` folder."""
    name = f"free-spoken-digit-dataset-{FSDD_COMMIT}"
    return _download_archive(FSDD_URL, Path(dest), FSDD_SHA256, name) / "recordings"


def download_audiomnist(dest: str | Path) -> Path:
    """Download AudioMNIST (~1 GB) at ``AUDIOMNIST_COMMIT``; returns its ``data`` folder."""
    name = f"AudioMNIST-{AUDIOMNIST_COMMIT}"
    return _download_archive(AUDIOMNIST_URL, Path(dest), AUDIOMNIST_SHA256, name) / "data"


def download_mnist(dest: str | Path) -> Path:
    """Download the four official MNIST IDX ``.gz`` files into ``dest``; returns ``dest``.

    The folder can be passed to :func:`dispart.data.mnist.load_mnist`.
    """
    dest = Path(dest)
    for name, md5 in MNIST_FILES.items():
        fetch_verified(tuple(m + name for m in MNIST_MIRRORS), dest / name, md5=md5)
    return dest
