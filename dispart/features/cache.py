"""Compute log-Mel features for a list of utterances, with an on-disk cache.

A cache file is keyed by a SHA-256 of the feature settings, of the versions of the libraries that
shape the features (librosa, numpy, scipy, soxr, soundfile and libsndfile) and of every input
file's absolute path, label, speaker and SHA-256 of its bytes: a file rewritten with the same
size and modification time still gives a new key. Files are ``np.savez`` archives holding the
concatenated frames, per-utterance offsets and JSON metadata, written atomically through
:mod:`dispart.files` and read with ``allow_pickle=False``.

A cache file that cannot be parsed or whose metadata does not match its contents is reported in
one warning line naming it, deleted and recomputed. Only errors of a file's content (unreadable
format, empty, silent...) are cached; errors of the operating system (permission denied, missing
file, I/O error) are reported as skips for this call and retried on the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dispart.data.corpus import Utterance
from dispart.errors import DataError
from dispart.features import fbank as _fbank
from dispart.features.fbank import FbankConfig
from dispart.files import atomic_open, file_sha256

__all__ = [
    "CACHE_VERSION",
    "FeatureSet",
    "cache_key",
    "compute_features",
    "default_cache_dir",
    "file_digests",
    "library_versions",
]

CACHE_VERSION = 2  # bump when the feature code changes in a way the settings do not capture

_SF_ERR_SYSTEM = 2  # libsndfile's error code when the OS refuses to open or read a file


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


class _Result(NamedTuple):
    """Outcome for one file: features, or an error reason; ``transient`` errors are not cached."""

    feats: np.ndarray | None
    reason: str = ""
    transient: bool = False


def default_cache_dir() -> Path:
    """``$DISPART_CACHE`` if set, else ``~/.cache/dispart``."""
    env = os.environ.get("DISPART_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dispart"


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose output shapes the features (part of the cache key)."""
    import librosa
    import scipy
    import soundfile

    try:
        import soxr  # librosa's default resampler ("soxr_hq")

        soxr_version = str(soxr.__version__)
    except ImportError:
        soxr_version = "absent"
    return {
        "librosa": str(librosa.__version__),
        "numpy": str(np.__version__),
        "scipy": str(scipy.__version__),
        "soxr": soxr_version,
        "soundfile": str(soundfile.__version__),
        "libsndfile": str(soundfile.__libsndfile_version__),
    }


def _abs(u: Utterance) -> str:
    return str(Path(u.path).absolute())


def _digest(path: str | Path) -> tuple[str | None, str]:
    """``(sha256 of the bytes, "")``, or ``(None, reason)`` when the OS refuses to read the file."""
    try:
        return file_sha256(path), ""
    except OSError as e:
        return None, f"{path}: cannot read file ({e.__class__.__name__}: {e.strerror or e})"


def file_digests(utts: Sequence[Utterance]) -> list[str | None]:
    """SHA-256 of every utterance's file (None where it cannot be read)."""
    return [_digest(u.path)[0] for u in utts]


def cache_key(
    utts: Sequence[Utterance], cfg: FbankConfig, digests: Sequence[str | None] | None = None
) -> str:
    """Hex SHA-256 of (settings, library versions, sorted (abs path, digest, label, speaker)).

    ``digests`` are the files' :func:`file_digests`, computed here when not given.
    """
    if digests is None:
        digests = file_digests(utts)
    records = sorted(
        [_abs(u), d or "", u.label, u.speaker] for u, d in zip(utts, digests, strict=True)
    )
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "cfg": cfg.to_dict(),
            "libs": library_versions(),
            "files": records,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _is_transient(exc: BaseException | None) -> bool:
    """True if ``exc`` (or an error it was raised from) comes from the OS, not the file's bytes."""
    import soundfile

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return True
        if isinstance(exc, soundfile.LibsndfileError) and exc.code == _SF_ERR_SYSTEM:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _one(path: str, cfg: FbankConfig) -> _Result:
    try:
        return _Result(_fbank.fbank_from_file(path, cfg))
    except DataError as e:
        return _Result(None, str(e), _is_transient(e))
    except OSError as e:
        return _Result(None, f"{path}: cannot read file ({e.__class__.__name__}: {e})", True)


def _compute_all(
    paths: Sequence[str], cfg: FbankConfig, on_error: str, progress: bool, n_jobs: int
) -> list[_Result]:
    if n_jobs != 1 and len(paths) > 1:
        from joblib import Parallel, delayed

        results = list(Parallel(n_jobs=n_jobs, batch_size=32)(delayed(_one)(p, cfg) for p in paths))
        if on_error == "raise":
            for r in results:
                if r.feats is None:
                    raise DataError(r.reason)
        return results
    results = []
    start, last = time.monotonic(), time.monotonic()
    for i, p in enumerate(paths):
        if on_error == "raise":
            results.append(_Result(_fbank.fbank_from_file(p, cfg)))
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


# --- cache file -------------------------------------------------------------------------------


def _save(
    path: Path, key: str, entries: dict[str, tuple[str, _Result]], cfg: FbankConfig
) -> None:
    """Write ``{abs path: (digest, result)}`` (transient errors already left out) atomically."""
    paths = sorted(entries)
    results = [entries[p][1] for p in paths]
    offsets = np.zeros(len(paths) + 1, dtype=np.int64)
    for i, r in enumerate(results):
        offsets[i + 1] = offsets[i] + (0 if r.feats is None else r.feats.shape[0])
    feats = [r.feats for r in results if r.feats is not None]
    frames = (
        np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, cfg.n_mels), np.float32)
    )
    meta = {
        "version": CACHE_VERSION,
        "key": key,
        "cfg": cfg.to_dict(),
        "libs": library_versions(),
        "paths": paths,
        "digests": [entries[p][0] for p in paths],
        "errors": [r.reason for r in results],
    }
    try:
        with atomic_open(path, "wb") as f:
            np.savez(f, frames=frames, offsets=offsets, meta=np.array(json.dumps(meta)))
    except OSError as e:
        warnings.warn(f"cannot write feature cache {path} ({e}); continuing without it", stacklevel=4)


def _parse(data: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return z["frames"], z["offsets"], json.loads(str(z["meta"]))


def _meta_lists(meta: Any, key: str) -> tuple[list, list, list]:
    """``(paths, digests, errors)`` of the metadata; ValueError if they do not fit together."""
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION or meta.get("key") != key:
        raise ValueError("metadata does not belong to this key or version")
    lists = meta.get("paths"), meta.get("digests"), meta.get("errors")
    if not all(isinstance(x, list) and all(isinstance(v, str) for v in x) for x in lists):
        raise ValueError("metadata lists are missing or hold non-strings")
    paths, digests, errors = lists
    if not len(paths) == len(digests) == len(errors) == len(set(paths)):
        raise ValueError("metadata lists differ in length or repeat a path")
    return paths, digests, errors


def _frame_lengths(frames: np.ndarray, offsets: np.ndarray, n: int, cfg: FbankConfig) -> np.ndarray:
    """Frames per entry; ValueError unless the offsets partition finite (T, n_mels) float32 frames."""
    if frames.dtype != np.float32 or frames.ndim != 2 or frames.shape[1] != cfg.n_mels:
        raise ValueError(f"frames have shape {frames.shape} and dtype {frames.dtype}")
    if offsets.dtype.kind not in "iu" or offsets.shape != (n + 1,):
        raise ValueError(f"offsets have shape {offsets.shape} for {n} files")
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != len(frames) or (lengths < 0).any():
        raise ValueError("offsets do not partition the frames")
    if not np.isfinite(frames).all():
        raise ValueError("frames contain non-finite values")
    return lengths


def _check(
    frames: np.ndarray, offsets: np.ndarray, meta: Any, key: str, cfg: FbankConfig
) -> dict[str, tuple[str, _Result]]:
    """``{abs path: (digest, result)}`` of a parsed cache file; ValueError if inconsistent."""
    paths, digests, errors = _meta_lists(meta, key)
    lengths = _frame_lengths(frames, offsets, len(paths), cfg)
    out = {}
    for i, (p, d, err) in enumerate(zip(paths, digests, errors, strict=True)):
        if bool(err) == bool(lengths[i]):  # an error has no frames, a result has some
            raise ValueError(f"entry {i} has {lengths[i]} frames and error {err!r}")
        out[p] = (d, _Result(None, err) if err else _Result(frames[offsets[i] : offsets[i + 1]]))
    return out


def _load(path: Path, key: str, wanted: dict[str, str], cfg: FbankConfig) -> dict[str, _Result]:
    """Cached results by abs path; an unusable file is reported, deleted and gives ``{}``."""
    if not path.is_file():
        return {}
    try:
        data = path.read_bytes()
    except OSError as e:  # e.g. permissions of the cache folder: not the file's fault, keep it
        warnings.warn(f"cannot read feature cache {path} ({e}); recomputing", stacklevel=4)
        return {}
    try:
        entries = _check(*_parse(data), key, cfg)
        for p, (d, _) in entries.items():
            if wanted.get(p) != d:
                raise ValueError(f"entry {p} has another content digest")
    except Exception as e:  # any parse or consistency failure means a corrupt file
        reason = " ".join(f"{e.__class__.__name__}: {e}".split())
        warnings.warn(f"corrupt feature cache {path} ({reason}); deleted, recomputing", stacklevel=4)
        with contextlib.suppress(OSError):
            path.unlink()
        return {}
    return {p: r for p, (_, r) in entries.items()}


# --- entry point ------------------------------------------------------------------------------


def _cached(
    utts: list[Utterance], cfg: FbankConfig, cache_dir: Path, on_error: str, progress: bool, n_jobs: int
) -> list[_Result]:
    """Results of ``utts`` through the cache in ``cache_dir`` (see the module docstring)."""
    read = [_digest(u.path) for u in utts]
    if on_error == "raise" and any(d is None for d, _ in read):
        raise DataError(next(reason for d, reason in read if d is None))
    digests = [d for d, _ in read]
    key = cache_key(utts, cfg, digests)
    cache_file = cache_dir / f"fbank-{key}.npz"
    wanted = {_abs(u): d for u, d in zip(utts, digests, strict=True) if d is not None}
    stored = _load(cache_file, key, wanted, cfg) if wanted else {}
    known: dict[int, _Result] = {}
    for i, (u, (d, reason)) in enumerate(zip(utts, read, strict=True)):
        if d is None:  # the OS refused to read it: report, never cache
            known[i] = _Result(None, reason, True)
        elif _abs(u) in stored:
            known[i] = stored[_abs(u)]
    todo = [i for i in range(len(utts)) if i not in known]
    if todo:
        new = _compute_all([str(utts[i].path) for i in todo], cfg, on_error, progress, n_jobs)
        known.update(zip(todo, new, strict=True))
    results = [known[i] for i in range(len(utts))]
    if any(not results[i].transient for i in todo) and _unchanged(utts, digests, todo):
        entries = {
            _abs(u): (d, r)
            for u, d, r in zip(utts, digests, results, strict=True)
            if d is not None and not r.transient
        }
        _save(cache_file, key, entries, cfg)
    return results


def _unchanged(utts: list[Utterance], digests: list[str | None], todo: list[int]) -> bool:
    """True if the files just computed still have the digests of the key (else warn)."""
    changed = [str(utts[i].path) for i in todo if _digest(utts[i].path)[0] != digests[i]]
    if changed:
        warnings.warn(
            f"not caching features: {changed[0]} changed while it was read ({len(changed)} file(s))",
            stacklevel=4,
        )
    return not changed


def _assemble(utts: list[Utterance], results: list[_Result], on_error: str) -> FeatureSet:
    out = FeatureSet([], [], [])
    for u, r in zip(utts, results, strict=True):
        if r.feats is None:
            if on_error == "raise":
                raise DataError(r.reason)
            out.skipped.append((str(u.path), r.reason))
        else:
            out.utterances.append(u)
            out.features.append(r.feats)
    if out.skipped:
        shown = "; ".join(r for _, r in out.skipped[:5])
        more = f"; ... ({len(out.skipped) - 5} more)" if len(out.skipped) > 5 else ""
        n_os = sum(r.transient for r in results)
        retry = f" ({n_os} were OS errors: not cached, retried next time)" if n_os else ""
        warnings.warn(
            f"skipped {len(out.skipped)} of {len(utts)} files{retry}: {shown}{more}", stacklevel=3
        )
    return out


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
            with ``"skipped N of M files: ..."``. Errors of the OS (permission denied, missing
            file, I/O) are reported the same way but never cached: the next call retries them.
        progress: print progress to stderr while computing.
        n_jobs: parallel worker processes (joblib); 1 computes in this process.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    utts = list(utts)
    if cache_dir is None:
        results = _compute_all([str(u.path) for u in utts], cfg, on_error, progress, n_jobs)
    else:
        results = _cached(utts, cfg, Path(cache_dir), on_error, progress, n_jobs)
    return _assemble(utts, results, on_error)
