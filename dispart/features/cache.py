"""Compute log-Mel features for a list of utterances, with an on-disk cache.

A cache file is keyed by a SHA-256 of the feature settings and of every input file's absolute
path, size, modification time (ns), label and speaker, so changing a setting or touching,
adding or removing a file gives a new key. Files are ``np.savez`` archives holding the
concatenated frames, per-utterance offsets and JSON metadata; they are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dispart.data.corpus import Utterance
from dispart.errors import DataError
from dispart.features import fbank as _fbank
from dispart.features.fbank import FbankConfig

__all__ = ["CACHE_VERSION", "FeatureSet", "cache_key", "compute_features", "default_cache_dir"]

CACHE_VERSION = 1  # bump when the feature code changes in a way the settings do not capture


@dataclass
class FeatureSet:
    """Features of the utterances that could be used.

    ``features[i]`` is the (T_i, n_mels) float32 array of ``utterances[i]``; ``skipped`` lists
    ``(path, reason)`` for every input file that was left out (only with ``on_error="skip"``).
    """

    utterances: list[Utterance]
    features: list[np.ndarray]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def lengths(self) -> list[int]:
        return [int(f.shape[0]) for f in self.features]


def default_cache_dir() -> Path:
    """``$DISPART_CACHE`` if set, else ``~/.cache/dispart``."""
    env = os.environ.get("DISPART_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dispart"


def _file_record(u: Utterance) -> list:
    p = Path(u.path).absolute()
    try:
        st = p.stat()
        size, mtime = int(st.st_size), int(st.st_mtime_ns)
    except OSError:
        size, mtime = -1, -1  # missing file: still keyed; computing it will fail loudly
    return [str(p), size, mtime, u.label, u.speaker]


def cache_key(utts: Sequence[Utterance], cfg: FbankConfig) -> str:
    """Hex SHA-256 of (feature settings, sorted (abs path, size, mtime_ns, label, speaker))."""
    records = sorted(_file_record(u) for u in utts)
    blob = json.dumps(
        {"version": CACHE_VERSION, "cfg": cfg.to_dict(), "files": records}, sort_keys=True
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _one(path: str, cfg: FbankConfig) -> tuple[np.ndarray | None, str]:
    try:
        return _fbank.fbank_from_file(path, cfg), ""
    except DataError as e:
        return None, str(e)


def _compute_all(
    utts: Sequence[Utterance], cfg: FbankConfig, on_error: str, progress: bool, n_jobs: int
) -> list[tuple[np.ndarray | None, str]]:
    paths = [str(u.path) for u in utts]
    if n_jobs != 1 and len(paths) > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, batch_size=32)(delayed(_one)(p, cfg) for p in paths)
        if on_error == "raise":
            for feats, reason in results:
                if feats is None:
                    raise DataError(reason)
        return list(results)
    results = []
    start, last = time.monotonic(), time.monotonic()
    for i, p in enumerate(paths):
        if on_error == "raise":
            results.append((_fbank.fbank_from_file(p, cfg), ""))
        else:
            results.append(_one(p, cfg))
        if progress and (time.monotonic() - last > 2.0 or i + 1 == len(paths)):
            last = time.monotonic()
            print(
                f"\rfeatures: {i + 1}/{len(paths)} files ({last - start:.1f} s)",
                end="\n" if i + 1 == len(paths) else "",
                file=sys.stderr,
                flush=True,
            )
    return results


def _save(path: Path, utts: Sequence[Utterance], results: list, cfg: FbankConfig) -> None:
    feats = [f for f, _ in results if f is not None]
    offsets = np.zeros(len(results) + 1, dtype=np.int64)
    for i, (f, _) in enumerate(results):
        offsets[i + 1] = offsets[i] + (0 if f is None else f.shape[0])
    frames = (
        np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, cfg.n_mels), np.float32)
    )
    meta = {
        "version": CACHE_VERSION,
        "cfg": cfg.to_dict(),
        "paths": [str(Path(u.path).absolute()) for u in utts],
        "errors": [reason for _, reason in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, frames=frames, offsets=offsets, meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, utts: Sequence[Utterance]) -> list | None:
    """Cached results in the order of ``utts``, or None if the file is unusable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            frames, offsets = z["frames"], z["offsets"]
            meta = json.loads(str(z["meta"]))
    except Exception as e:  # corrupt / partial file: recompute
        warnings.warn(f"ignoring unreadable feature cache {path} ({e})", stacklevel=3)
        return None
    by_path: dict[str, tuple[np.ndarray | None, str]] = {}
    for i, (p, reason) in enumerate(zip(meta["paths"], meta["errors"], strict=True)):
        a, b = int(offsets[i]), int(offsets[i + 1])
        by_path[p] = (None, reason) if reason else (frames[a:b], "")
    try:
        return [by_path[str(Path(u.path).absolute())] for u in utts]
    except KeyError:
        return None


def compute_features(
    utts: Sequence[Utterance],
    cfg: FbankConfig,
    cache_dir: Path | str | None,
    on_error: str = "raise",
    progress: bool = True,
    n_jobs: int = 1,
) -> FeatureSet:
    """Log-Mel features (T_i, n_mels) of every utterance, in the order given.

    Args:
        utts: utterances to process.
        cfg: feature settings.
        cache_dir: folder for the cache file (created if needed); None disables caching.
        on_error: ``"raise"`` propagates the first :class:`DataError`; ``"skip"`` leaves the bad
            file out, records ``(path, reason)`` in ``skipped`` and warns once at the end
            with ``"skipped N of M files: ..."``.
        progress: print progress to stderr while computing.
        n_jobs: parallel worker processes (joblib); 1 computes in this process.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    utts = list(utts)
    results = None
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"fbank-{cache_key(utts, cfg)}.npz"
        if cache_file.is_file():
            results = _load(cache_file, utts)
    if results is None:
        results = _compute_all(utts, cfg, on_error, progress, n_jobs)
        if cache_file is not None:
            _save(cache_file, utts, results, cfg)
    out = FeatureSet([], [], [])
    for u, (feats, reason) in zip(utts, results, strict=True):
        if feats is None:
            if on_error == "raise":
                raise DataError(reason)
            out.skipped.append((str(u.path), reason))
        else:
            out.utterances.append(u)
            out.features.append(feats)
    if out.skipped:
        shown = "; ".join(r for _, r in out.skipped[:5])
        more = f"; ... ({len(out.skipped) - 5} more)" if len(out.skipped) > 5 else ""
        warnings.warn(
            f"skipped {len(out.skipped)} of {len(utts)} files: {shown}{more}", stacklevel=2
        )
    return out
