"""Crash-safe files: every file dispart writes goes through :func:`atomic_write`.

A writer gets a temporary file in the target's own folder; on success it is flushed, fsynced
and renamed over the target (``os.replace`` is atomic on POSIX and Windows), then the folder is
fsynced so the rename itself survives a power cut. A crash at any point leaves either the old
file or the new one, never a truncated mix. Readers of JSON/YAML use :func:`read_json` /
:func:`read_yaml`, which name the file in one line when it is missing or corrupt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from dispart.errors import RunDirError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, target: Path) -> None:
    """Give ``tmp`` the mode a plain ``open(target, "w")`` would, then rename it over ``target``."""
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)  # mkstemp creates 0600
    os.replace(tmp, target)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path, "wb") as f:
        f.write(payload)


def atomic_write_with(path: str | Path, writer: Callable[[str], Any]) -> None:
    """Atomic write through a library that wants a file name (``writer(tmp_path)``).

    For safetensors' ``save_file``, matplotlib's ``savefig`` and similar: the writer writes a
    temporary name in the same folder, which then replaces ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1, **kwargs: Any) -> None:
    """``json.dumps`` then :func:`atomic_write` (a trailing newline is added)."""
    atomic_write(path, json.dumps(obj, indent=indent, **kwargs) + "\n")


def _one_line(e: Exception) -> str:
    return " ".join(f"{e.__class__.__name__}: {e}".split())


def _read_parsed(path: str | Path, parse: Callable[[str], Any], kind: str,
                 parse_errors: tuple[type[Exception], ...], error: type[Exception]) -> Any:
    p = Path(path)
    try:
        return parse(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise error(f"{p}: file is missing") from e
    except (OSError, UnicodeDecodeError, *parse_errors) as e:
        raise error(f"{p}: not a readable {kind} file ({_one_line(e)})") from e


def read_json(path: str | Path, error: type[Exception] = RunDirError) -> Any:
    """Parse a JSON file; a missing, unreadable or corrupt file raises ``error`` naming it."""
    return _read_parsed(path, json.loads, "JSON", (json.JSONDecodeError,), error)


def read_yaml(path: str | Path, error: type[Exception] = RunDirError) -> Any:
    """Parse a YAML file; a missing, unreadable or corrupt file raises ``error`` naming it."""
    return _read_parsed(path, yaml.safe_load, "YAML", (yaml.YAMLError,), error)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
