"""The feature cache: keyed by content and library versions, corrupt files recovered, OS errors
never cached. Results are always compared exactly with a fresh computation."""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy
import soundfile as sf

import dispart.features.cache as cache_mod
import dispart.features.fbank as fbank_mod
from dispart.data.corpus import Utterance, scan_corpus
from dispart.data.sample import sample_fsdd_dir
from dispart.errors import DataError
from dispart.features.cache import cache_key, compute_features
from dispart.features.fbank import FbankConfig, fbank_from_file

CFG = FbankConfig()
NAMES = ("0_george_0.wav", "3_jackson_1.wav", "7_nicolas_0.wav", "9_lucas_1.wav")
OTHER = "5_yweweler_0.wav"  # source of "new content" rewritten into an existing file


@pytest.fixture
def utts(tmp_path: Path) -> list[Utterance]:
    """Four sample recordings copied into a private folder."""
    src = tmp_path / "wavs"
    src.mkdir()
    for name in NAMES:
        shutil.copy(sample_fsdd_dir() / name, src / name)
    return scan_corpus(src)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files whose features are computed (not read from the cache), in order."""
    seen: list[str] = []
    real = fbank_mod.fbank_from_file

    def counting(path: str | Path, cfg: FbankConfig) -> np.ndarray:
        seen.append(Path(path).name)
        return real(path, cfg)

    monkeypatch.setattr(fbank_mod, "fbank_from_file", counting)
    return seen


def _fresh(utts: list[Utterance]) -> list[np.ndarray]:
    return [fbank_from_file(u.path, CFG) for u in utts]


def _assert_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for x, y in zip(got, want, strict=True):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)


def _quiet(fn: Callable[[], object]) -> object:
    """Run ``fn`` and fail on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def _only_cache_file(cache: Path) -> Path:
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1, files
    return files[0]


# --- keyed by content -------------------------------------------------------------------------


def _rewrite_same_size_and_mtime(path: Path, source: Path) -> None:
    """Put ``source``'s audio into ``path`` with the same byte size, header and timestamps."""
    st = path.stat()
    old, sr = sf.read(path, dtype="int16")
    new, _ = sf.read(source, dtype="int16")
    new = np.resize(new, old.shape)  # repeat/truncate to the same number of samples
    assert not np.array_equal(new, old)
    sf.write(path, new, sr, subtype=sf.info(path).subtype)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_changed_bytes_same_size_and_mtime_recomputed(
    tmp_path: Path, utts: list[Utterance], calls: list[str]
) -> None:
    cache = tmp_path / "cache"
    before = compute_features(utts, CFG, cache, progress=False)
    key = cache_key(utts, CFG)
    _rewrite_same_size_and_mtime(utts[1].path, sample_fsdd_dir() / OTHER)
    assert cache_key(utts, CFG) != key
    calls.clear()
    after = _quiet(lambda: compute_features(utts, CFG, cache, progress=False))
    assert calls == [u.path.name for u in utts]  # a new key: the set is recomputed
    assert len(list(cache.glob("*.npz"))) == 2
    want = _fresh(utts)
    _assert_equal(after.features, want)
    assert not np.array_equal(after.features[1], before.features[1])
    _assert_equal(before.features[::2], want[::2])


def test_library_versions_in_key(
    tmp_path: Path, utts: list[Utterance], calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = cache_key(utts, CFG)
    versions = cache_mod.library_versions()
    assert versions["libsndfile"] == sf.__libsndfile_version__
    assert versions["librosa"] == librosa.__version__ and versions["scipy"] == scipy.__version__
    for module, attr in [
        (librosa, "__version__"),
        (sf, "__libsndfile_version__"),
        (sf, "__version__"),
        (np, "__version__"),
        (scipy, "__version__"),
    ]:
        with monkeypatch.context() as m:
            m.setattr(module, attr, "0.0.0-test")
            assert cache_key(utts, CFG) != base, (module.__name__, attr)
        assert cache_key(utts, CFG) == base
    cache = tmp_path / "cache"
    compute_features(utts, CFG, cache, progress=False)
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(librosa, "__version__", "0.0.0-test")
        again = compute_features(utts, CFG, cache, progress=False)
    assert calls == [u.path.name for u in utts]  # a new librosa: nothing reused
    assert len(list(cache.glob("*.npz"))) == 2
    _assert_equal(again.features, _fresh(utts))


def test_soxr_version_in_key(utts: list[Utterance], monkeypatch: pytest.MonkeyPatch) -> None:
    soxr = pytest.importorskip("soxr")
    base = cache_key(utts, CFG)
    monkeypatch.setattr(soxr, "__version__", "0.0.0-test")
    assert cache_mod.library_versions()["soxr"] == "0.0.0-test"
    assert cache_key(utts, CFG) != base


# --- corrupt cache files ----------------------------------------------------------------------


def _rewrite_npz(path: Path, edit: Callable[[dict, dict], None]) -> None:
    """Rewrite a cache file as a valid npz after ``edit(arrays, meta)``."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    edit(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    with path.open("wb") as f:
        np.savez(f, **arrays)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _flip_frame_byte(path: Path) -> None:  # a bit flip inside the frames: caught by zip's CRC
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


def _short_errors(a: dict, m: dict) -> None:  # the ValueError that used to crash
    m["errors"] = m["errors"][:-1]


def _offsets_past_end(a: dict, m: dict) -> None:
    a["offsets"] = a["offsets"].copy()
    a["offsets"][-1] += 7


def _wrong_n_mels(a: dict, m: dict) -> None:
    a["frames"] = a["frames"][:, :40].copy()


def _other_digest(a: dict, m: dict) -> None:  # claims another content for one file
    m["digests"][0] = "0" * 64


def _error_with_frames(a: dict, m: dict) -> None:  # a "skipped" file that still has frames
    m["errors"][0] = "x.wav: silent after VAD"


def _meta_not_dict(a: dict, m: dict) -> None:
    m.clear()


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "random_bytes": _random_bytes,
    "empty": lambda p: p.write_bytes(b""),
    "bit_flip": _flip_frame_byte,
    "short_errors": lambda p: _rewrite_npz(p, _short_errors),
    "offsets_past_end": lambda p: _rewrite_npz(p, _offsets_past_end),
    "wrong_n_mels": lambda p: _rewrite_npz(p, _wrong_n_mels),
    "other_digest": lambda p: _rewrite_npz(p, _other_digest),
    "error_with_frames": lambda p: _rewrite_npz(p, _error_with_frames),
    "meta_not_dict": lambda p: _rewrite_npz(p, _meta_not_dict),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_cache_recomputed_with_one_line_warning(
    tmp_path: Path, utts: list[Utterance], calls: list[str], corruption: str
) -> None:
    cache = tmp_path / "cache"
    want = compute_features(utts, CFG, None, progress=False).features
    compute_features(utts, CFG, cache, progress=False)
    path = _only_cache_file(cache)
    CORRUPTIONS[corruption](path)
    calls.clear()
    with pytest.warns(UserWarning) as record:
        got = compute_features(utts, CFG, cache, progress=False)
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 1 and "\n" not in msgs[0], msgs
    assert msgs[0].startswith(f"corrupt feature cache {path} (") and "deleted, recomputing" in msgs[0]
    assert calls == [u.path.name for u in utts]
    _assert_equal(got.features, want)
    assert _only_cache_file(cache) == path  # replaced by a good file, which is now a hit
    calls.clear()
    hit = _quiet(lambda: compute_features(utts, CFG, cache, progress=False))
    assert calls == []
    _assert_equal(hit.features, want)


def test_unwritable_cache_warns_and_continues(tmp_path: Path, utts: list[Utterance]) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.warns(UserWarning) as record:
        got = compute_features(utts, CFG, blocker, progress=False)
    assert len(record) == 1
    assert str(record[0].message).startswith(f"cannot write feature cache {blocker}/fbank-")
    _assert_equal(got.features, _fresh(utts))


def test_file_changed_while_computing_not_cached(
    tmp_path: Path, utts: list[Utterance], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fbank_mod.fbank_from_file

    def rewrite_after(path: str | Path, cfg: FbankConfig) -> np.ndarray:
        out = real(path, cfg)
        if Path(path).name == NAMES[2]:
            shutil.copy(sample_fsdd_dir() / OTHER, path)
        return out

    monkeypatch.setattr(fbank_mod, "fbank_from_file", rewrite_after)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=rf"not caching features: .*{NAMES[2]} changed"):
        compute_features(utts, CFG, cache, progress=False)
    assert list(cache.glob("*.npz")) == []


# --- OS errors are not cached -----------------------------------------------------------------


def _os_errors() -> dict[str, BaseException]:
    return {
        "permission": PermissionError(errno.EACCES, "Permission denied"),
        "eio": OSError(errno.EIO, "Input/output error"),
        "missing": FileNotFoundError(errno.ENOENT, "No such file or directory"),
        "libsndfile_system": sf.LibsndfileError(2, prefix="Error opening 'x.wav': "),
    }


def _failing_read(target: Path, exc: BaseException) -> Callable[..., object]:
    real = sf.read

    def read(file: object, *args: object, **kwargs: object) -> object:
        if Path(str(file)).name == target.name:
            raise exc
        return real(file, *args, **kwargs)

    return read


@pytest.mark.parametrize("kind", list(_os_errors()))
def test_os_error_of_reader_not_cached(
    tmp_path: Path,
    utts: list[Utterance],
    calls: list[str],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    exc = _os_errors()[kind]
    cache = tmp_path / "cache"
    target = utts[2].path
    with monkeypatch.context() as m:
        m.setattr(sf, "read", _failing_read(target, exc))
        with pytest.warns(UserWarning, match=r"skipped 1 of 4 files \(1 were OS errors"):
            first = compute_features(utts, CFG, cache, on_error="skip", progress=False)
        assert [p for p, _ in first.skipped] == [str(target)]
        reason = first.skipped[0][1]
        assert reason.startswith(f"{target}: ") and str(exc) in reason  # names file and error
        assert first.utterances == [u for u in utts if u.path != target]
        with pytest.raises(DataError) as info:  # on_error=raise: the same error, not a cached one
            compute_features(utts, CFG, cache, progress=False)
        assert str(info.value) == reason
    calls.clear()  # the permission is "fixed"
    second = _quiet(lambda: compute_features(utts, CFG, cache, on_error="skip", progress=False))
    assert calls == [target.name]  # only the failed file; the others came from the cache
    assert second.skipped == [] and second.utterances == utts
    _assert_equal(second.features, _fresh(utts))
    calls.clear()
    third = _quiet(lambda: compute_features(utts, CFG, cache, progress=False))
    assert calls == []  # now cached
    _assert_equal(third.features, second.features)


def test_unreadable_bytes_not_cached(
    tmp_path: Path, utts: list[Utterance], calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The content hash itself cannot read the file (permission): skipped, not hashed, retried."""
    target = utts[0].path
    real = cache_mod.file_sha256

    def sha(path: str | Path) -> str:
        if Path(path) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    cache = tmp_path / "cache"
    with monkeypatch.context() as m:
        m.setattr(cache_mod, "file_sha256", sha)
        with pytest.warns(UserWarning, match=r"skipped 1 of 4 files \(1 were OS errors"):
            first = compute_features(utts, CFG, cache, on_error="skip", progress=False)
        reason = f"{target}: cannot read file (PermissionError: Permission denied)"
        assert first.skipped == [(str(target), reason)]
        assert calls == [u.path.name for u in utts[1:]]
        with pytest.raises(DataError, match=r"cannot read file \(PermissionError"):
            compute_features(utts, CFG, cache, progress=False)
    calls.clear()
    second = _quiet(lambda: compute_features(utts, CFG, cache, on_error="skip", progress=False))
    assert second.utterances == utts and calls == [u.path.name for u in utts]  # another key: the set changed
    _assert_equal(second.features, _fresh(utts))


def test_missing_file_not_cached(tmp_path: Path, utts: list[Utterance]) -> None:
    late = utts[0].path.with_name("1_george_0.wav")
    every = [*utts, Utterance(late, "1", "george", 0)]
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"skipped 1 of 5 files \(1 were OS errors.*FileNotFoundError"):
        first = compute_features(every, CFG, cache, on_error="skip", progress=False)
    assert [p for p, _ in first.skipped] == [str(late)]
    shutil.copy(sample_fsdd_dir() / "1_george_0.wav", late)  # the file arrives
    second = _quiet(lambda: compute_features(every, CFG, cache, on_error="skip", progress=False))
    assert second.utterances == every
    _assert_equal(second.features, _fresh(every))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads chmod 000 files")
def test_real_chmod_000_not_cached(tmp_path: Path, utts: list[Utterance]) -> None:
    target = utts[3].path
    cache = tmp_path / "cache"
    target.chmod(0)
    try:
        with pytest.warns(UserWarning, match=r"skipped 1 of 4 files \(1 were OS errors"):
            compute_features(utts, CFG, cache, on_error="skip", progress=False)
    finally:
        target.chmod(0o644)
    second = _quiet(lambda: compute_features(utts, CFG, cache, on_error="skip", progress=False))
    _assert_equal(second.features, _fresh(utts))


def test_content_errors_still_cached(tmp_path: Path, utts: list[Utterance], calls: list[str]) -> None:
    junk = utts[0].path.with_name("2_george_9.wav")
    junk.write_bytes(b"RIFF but not really a wav file")
    every = [*utts, Utterance(junk, "2", "george", 9)]
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"skipped 1 of 5 files: .*2_george_9\.wav: cannot read audio"):
        first = compute_features(every, CFG, cache, on_error="skip", progress=False)
    calls.clear()
    with pytest.warns(UserWarning, match=r"skipped 1 of 5 files: ") as record:
        again = compute_features(every, CFG, cache, on_error="skip", progress=False)
    assert "OS errors" not in str(record[0].message)
    assert calls == [] and again.skipped == first.skipped
