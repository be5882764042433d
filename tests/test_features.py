"""Log-Mel features, VAD, normalisation and the feature cache, on real FSDD recordings."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import dispart.features.fbank as fbank_mod
from dispart.data.corpus import Utterance, load_waveform, scan_corpus
from dispart.data.sample import sample_fsdd_dir
from dispart.data.splits import official_split
from dispart.errors import ConfigError, DataError
from dispart.features.cache import cache_key, compute_features, default_cache_dir
from dispart.features.fbank import (
    FbankConfig,
    fbank_from_file,
    fbank_to_waveform,
    fft_length,
    log_mel,
    mel_basis,
    vad,
)
from dispart.features.normalize import FeatureNormalizer

CFG = FbankConfig()




@pytest.fixture(scope="module")
def sample_utts() -> list[Utterance]:
    return scan_corpus(sample_fsdd_dir())


def _no_raise(*args: object, **kwargs: object) -> None:
    raise AssertionError("fbank_from_file called although the cache should have been used")


# --- fbank ------------------------------------------------------------------------------------


def test_config() -> None:
    assert CFG.win_length == 200 and CFG.hop_length == 80
    d = CFG.to_dict()
    assert d["n_mels"] == 80 and d["fmax"] is None and FbankConfig(**d) == CFG
    with pytest.raises(ConfigError, match="n_fft"):
        FbankConfig(n_fft=128)


def test_data_hop_and_window_reach_the_features(sample_utts: list[Utterance]) -> None:
    from dispart.batches.corpus import fbank_config
    from dispart.data.config import DataConfig

    assert [fft_length(w, at_least=512) for w in (200, 512, 513)] == [512, 512, 1024]
    assert [fft_length(w) for w in (640, 1024.0, 1024.5)] == [1024, 1024, 2048]
    assert fbank_config(DataConfig()) == CFG  # the defaults are the 10 / 25 ms frames above
    long = fbank_config(DataConfig(hop_ms=20.0, win_ms=40.0))
    assert (long.hop_length, long.win_length, long.n_fft) == (160, 320, 512)
    wide = fbank_config(DataConfig(sample_rate=16000, win_ms=40.0))  # 640 samples: FFT of 1024
    assert (wide.win_length, wide.n_fft) == (640, 1024)
    path = sample_utts[3].path
    voiced = vad(load_waveform(path, 8000), long)
    feats = fbank_from_file(path, long)
    assert feats.shape == (1 + len(voiced) // 160, 80)  # one frame every 20 ms
    ref = librosa_log_mel(voiced, n_fft=512, hop_length=160, win_length=320)
    np.testing.assert_allclose(feats, ref, atol=1e-4)
    wave = fbank_to_waveform(feats, long, n_iter=8)  # Griffin-Lim with the same frames
    assert abs(len(wave) - (feats.shape[0] - 1) * 160) <= 160


def librosa_log_mel(wave: np.ndarray, **stft: int) -> np.ndarray:
    import librosa

    ref = librosa.feature.melspectrogram(y=wave, sr=8000, n_mels=80, power=2.0, **stft)
    return np.log(np.maximum(ref, 1e-6)).T


def test_no_empty_mel_filters_and_matches_librosa(sample_utts: list[Utterance]) -> None:
    import librosa

    wave = load_waveform(sample_utts[0].path, 8000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # librosa warns on empty Mel filters
        basis = librosa.filters.mel(sr=8000, n_fft=512, n_mels=80)
        ref = librosa_log_mel(wave, n_fft=512, hop_length=80, win_length=200)
        ours = log_mel(wave, CFG)
    assert ((basis > 0).sum(axis=1) >= 3).all()  # no empty or single-bin filter
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    with pytest.warns(UserWarning, match="[Ee]mpty filters"):  # the check above can fail
        librosa.filters.mel(sr=8000, n_fft=128, n_mels=80)


def _check_frame_rate(path: Path) -> None:
    feats = fbank_from_file(path, CFG)
    voiced = vad(load_waveform(path, 8000), CFG)
    assert feats.dtype == np.float32 and feats.shape[1] == 80
    assert feats.shape[0] == 1 + len(voiced) // 80  # 10 ms hop at 8 kHz, centred frames
    assert feats.shape[0] == pytest.approx(len(voiced) / 8000 / 0.010, abs=1.01)
    assert np.isfinite(feats).all() and feats.min() >= np.log(1e-6) - 1e-5


def test_shapes_and_frame_rate_sample(sample_utts: list[Utterance]) -> None:
    for u in sample_utts[::40]:
        _check_frame_rate(u.path)


def test_shapes_and_frame_rate_full(shared_fsdd: Path) -> None:
    for name in ("0_george_0.wav", "9_yweweler_49.wav", "5_nicolas_25.wav"):
        _check_frame_rate(shared_fsdd / name)


def test_vad_removes_silence(sample_utts: list[Utterance]) -> None:
    wave = load_waveform(sample_utts[5].path, 8000)
    core = vad(wave, CFG)
    rng = np.random.default_rng(0)
    pad = (1e-4 * rng.standard_normal(4000)).astype(np.float32)  # 0.5 s of near silence
    padded = np.concatenate([pad, wave, pad])
    voiced = vad(padded, CFG)
    assert len(voiced) < len(wave) + 2 * 80 * 8  # at most ~8 frames of silence kept per side
    assert len(voiced) >= 0.9 * len(core)
    assert len(vad(np.zeros(8000, np.float32), CFG)) == 0


def test_resampled_stereo_same_shape(tmp_path: Path, sample_utts: list[Utterance]) -> None:
    import librosa

    for u in sample_utts[3:400:97]:
        wave = load_waveform(u.path, 8000)
        up = librosa.resample(wave, orig_sr=8000, target_sr=16000)
        path = tmp_path / f"{u.path.stem}_16k.wav"
        sf.write(path, np.stack([up, up], axis=1), 16000, subtype="PCM_16")
        assert sf.info(path).channels == 2 and sf.info(path).samplerate == 16000
        a, b = fbank_from_file(u.path, CFG), fbank_from_file(path, CFG)
        assert abs(a.shape[0] - b.shape[0]) <= 1 and b.shape[1] == 80
        n = min(len(a), len(b))
        # same speech: the spectra agree in the loud bins
        assert np.corrcoef(a[:n].ravel(), b[:n].ravel())[0, 1] > 0.9


def test_bad_files_raise_naming_file(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"silent\.wav: silent after VAD"):
        fbank_from_file(silent, CFG)
    click = tmp_path / "click.wav"  # one loud sample: ~7 voiced frames (VAD frame = n_fft)
    x = np.zeros(8000, np.float32)
    x[4000] = 0.9
    sf.write(click, x, 8000)
    assert fbank_from_file(click, CFG).shape[0] < 10
    with pytest.raises(DataError, match=r"click\.wav: silent after VAD.*min_frames=10"):
        fbank_from_file(click, FbankConfig(min_frames=10))
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(DataError, match=r"junk\.wav"):
        fbank_from_file(tmp_path / "junk.wav", CFG)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(DataError, match=r"empty\.wav"):
        fbank_from_file(tmp_path / "empty.wav", CFG)
    y = np.full(4000, np.nan, np.float32)
    sf.write(tmp_path / "nan.wav", y, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan\.wav"):
        fbank_from_file(tmp_path / "nan.wav", CFG)


def test_griffin_lim_inversion(sample_utts: list[Utterance]) -> None:
    feats = fbank_from_file(sample_utts[10].path, CFG)
    wave = fbank_to_waveform(feats, CFG, n_iter=8)
    assert wave.dtype == np.float32 and np.isfinite(wave).all()
    assert abs(len(wave) - (feats.shape[0] - 1) * 80) <= 80
    again = log_mel(wave, CFG)
    assert abs(again.shape[0] - feats.shape[0]) <= 1
    n = min(len(again), len(feats))
    assert np.corrcoef(again[:n].ravel(), feats[:n].ravel())[0, 1] > 0.8


# --- normaliser -------------------------------------------------------------------------------


def test_normalizer_train_only_and_round_trip(sample_utts: list[Utterance]) -> None:
    train_u, test_u = official_split(sample_utts[::3])
    train = [fbank_from_file(u.path, CFG) for u in train_u]
    test = [fbank_from_file(u.path, CFG) for u in test_u]
    norm = FeatureNormalizer().fit(train)
    frames = np.concatenate(train)
    np.testing.assert_allclose(norm.mean, frames.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(norm.std, frames.std(0), rtol=1e-3)
    z = norm.transform(frames)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
    both = np.concatenate(train + test)
    assert not np.allclose(norm.mean, both.mean(0), atol=1e-3)  # test data not used
    for x in test:
        np.testing.assert_allclose(norm.inverse_transform(norm.transform(x)), x, atol=1e-4)
    again = FeatureNormalizer.from_state_dict(norm.state_dict())
    np.testing.assert_array_equal(again.transform(test[0]), norm.transform(test[0]))
    lists = {k: np.asarray(v).tolist() for k, v in norm.state_dict().items()}
    np.testing.assert_array_equal(FeatureNormalizer.from_state_dict(lists).std, norm.std)


def test_normalizer_frame_weighted_and_floored() -> None:
    a = np.zeros((3, 2), np.float32)
    b = np.ones((1, 2), np.float32)
    b[:, 1] = 0.0
    norm = FeatureNormalizer().fit([a, b])
    np.testing.assert_allclose(norm.mean, [0.25, 0.0])  # 4 frames, not 2 utterances
    assert norm.std[1] == pytest.approx(1e-5)  # constant dimension floored
    with pytest.raises(RuntimeError):
        FeatureNormalizer().transform(a)
    with pytest.raises(DataError):
        FeatureNormalizer().fit([])


def test_mel_basis_is_librosas_filterbank_read_only_and_cached() -> None:
    import librosa

    cfg = FbankConfig(sample_rate=8000, n_mels=40, n_fft=256, fmin=50.0, fmax=3800.0)
    basis = mel_basis(cfg)
    want = librosa.filters.mel(sr=8000, n_fft=256, n_mels=40, fmin=50.0, fmax=3800.0)
    assert basis.shape == (40, 129) and basis.dtype == np.float32
    np.testing.assert_allclose(basis, want, rtol=1e-6, atol=1e-9)
    assert mel_basis(cfg) is basis and not basis.flags.writeable  # shared, so nobody may edit it
    # log_mel is log(basis @ |STFT|^2), floored: check one frame of a pure tone by hand
    t = np.arange(800) / 8000.0
    wave = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    spec = librosa.stft(wave, n_fft=256, hop_length=80, win_length=200, window="hann", center=True)
    power = np.abs(spec[:, 5]) ** 2
    np.testing.assert_allclose(log_mel(wave, cfg)[5], np.log(np.maximum(want @ power, 1e-6)),
                               rtol=1e-4, atol=1e-4)


def test_normalizer_keeps_the_utterance_offset_inversion_needs() -> None:
    a = np.array([[1.0, 10.0], [3.0, 14.0]], np.float32)  # mean frame (2, 12)
    b = np.array([[5.0, 0.0], [7.0, 2.0], [9.0, 4.0], [11.0, 6.0]], np.float32)  # mean (8, 3)
    norm = FeatureNormalizer().fit([a, b], centre_utterances=True)
    # offset: mean of all 6 raw frames, frame-weighted: (36 / 6, 36 / 6)
    np.testing.assert_allclose(norm.utterance_offset, [6.0, 6.0])
    # statistics of the centred frames: a -> (-1, -2), (1, 2); b -> (-3,-3), (-1,-1), (1,1), (3,3)
    np.testing.assert_allclose(norm.mean, [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(norm.std, np.sqrt([(1 + 1 + 9 + 1 + 1 + 9) / 6, (4 + 4 + 9 + 1 + 1 + 9) / 6]),
                               rtol=1e-6)
    # centring then transform, inverted, plus the offset: a's frames minus a's own mean plus the
    # training mean frame, i.e. what generation plays back for an utterance of average level
    x = norm.transform(FeatureNormalizer.centre([a])[0])
    np.testing.assert_allclose(norm.inverse_transform(x) + norm.utterance_offset,
                               [[5.0, 4.0], [7.0, 8.0]], rtol=1e-6)
    state = norm.state_dict()
    np.testing.assert_array_equal(state["utterance_offset"], [6.0, 6.0])
    lists = {k: np.asarray(v).tolist() for k, v in state.items()}  # as run.json stores it
    again = FeatureNormalizer.from_state_dict(lists)
    np.testing.assert_array_equal(again.utterance_offset, norm.utterance_offset)
    assert again.utterance_offset.dtype == np.float32
    # global normalisation records no offset, and refitting clears an old one
    assert "utterance_offset" not in FeatureNormalizer().fit([a, b]).state_dict()
    assert norm.fit([a, b]).utterance_offset is None
    np.testing.assert_allclose(norm.mean, [6.0, 6.0])


def test_normalizer_state_without_offset_loads_and_bad_offsets_are_named() -> None:
    old = {"mean": [0.0, 1.0], "std": [1.0, 2.0], "std_floor": [1e-5]}  # run.json before offsets
    norm = FeatureNormalizer.from_state_dict(old)
    assert norm.utterance_offset is None
    np.testing.assert_allclose(norm.inverse_transform(np.ones((1, 2), np.float32)), [[1.0, 3.0]])
    for bad in ([1.0, 2.0, 3.0], [1.0, float("nan")], "abc"):
        with pytest.raises(DataError, match="utterance_offset"):
            FeatureNormalizer.from_state_dict({**old, "utterance_offset": bad})


# --- cache ------------------------------------------------------------------------------------


def test_cache_hit_and_invalidation(
    tmp_path: Path, sample_utts: list[Utterance], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "wavs"
    src.mkdir()
    for u in sample_utts[:12]:
        shutil.copy(u.path, src / u.path.name)
    utts = scan_corpus(src)
    cache = tmp_path / "cache"
    first = compute_features(utts, CFG, cache, progress=False)
    assert len(first) == 12 and first.skipped == []
    assert len(list(cache.glob("*.npz"))) == 1
    np.load(next(cache.glob("*.npz")), allow_pickle=False)  # no pickle inside

    with monkeypatch.context() as m:
        m.setattr(fbank_mod, "fbank_from_file", _no_raise)
        second = compute_features(utts, CFG, cache, progress=False)
        rev = compute_features(utts[::-1], CFG, cache, progress=False)  # same set, other order
        for x, y in zip(first.features, second.features, strict=True):
            np.testing.assert_array_equal(x, y)
        assert second.utterances == utts
        assert rev.utterances == utts[::-1]
        np.testing.assert_array_equal(rev.features[0], first.features[-1])
        # a changed setting misses the cache
        with pytest.raises(AssertionError, match="cache should have been used"):
            compute_features(utts, FbankConfig(vad_top_db=40.0), cache, progress=False)

    key = cache_key(utts, CFG)
    st = utts[0].path.stat()
    os.utime(utts[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache_key(utts, CFG) == key  # touched file, same bytes: keyed by content, not mtime
    shutil.copy(sample_utts[20].path, src / sample_utts[20].path.name)
    assert cache_key(scan_corpus(src), CFG) != cache_key(utts, CFG)  # added file
    other_label = [Utterance(u.path, "x", u.speaker, u.take) for u in utts]
    assert cache_key(other_label, CFG) != cache_key(utts, CFG)
    with monkeypatch.context() as m:
        m.setattr(fbank_mod, "fbank_from_file", _no_raise)
        third = compute_features(utts, CFG, cache, progress=False)  # still a hit after touch
    assert len(list(cache.glob("*.npz"))) == 1
    np.testing.assert_array_equal(third.features[0], first.features[0])
    shutil.copy(sample_utts[21].path, utts[0].path)  # other bytes: recomputed
    fourth = compute_features(utts, CFG, cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 2
    np.testing.assert_array_equal(fourth.features[0], fbank_from_file(sample_utts[21].path, CFG))


def test_skip_mode_counts_and_cache_keeps_errors(
    tmp_path: Path, sample_utts: list[Utterance], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "junk.wav").write_bytes(b"garbage")
    sf.write(tmp_path / "quiet.wav", np.zeros(4000, np.float32), 8000)
    bad = [
        Utterance(tmp_path / "junk.wav", "1", "x"),
        Utterance(tmp_path / "quiet.wav", "2", "x"),
    ]
    utts = sample_utts[:6] + bad
    with pytest.raises(DataError, match=r"junk\.wav"):
        compute_features(utts, CFG, None, progress=False)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"skipped 2 of 8 files: .*junk\.wav.*quiet\.wav"):
        fs = compute_features(utts, CFG, cache, on_error="skip", progress=False)
    assert len(fs) == 6 and fs.utterances == sample_utts[:6]
    assert [p for p, _ in fs.skipped] == [str(b.path) for b in bad]
    assert "silent after VAD" in fs.skipped[1][1]
    with monkeypatch.context() as m:
        m.setattr(fbank_mod, "fbank_from_file", _no_raise)
        with pytest.warns(UserWarning, match="skipped 2 of 8"):
            cached = compute_features(utts, CFG, cache, on_error="skip", progress=False)
        assert cached.skipped == fs.skipped
        with pytest.raises(DataError, match=r"junk\.wav"):  # cached errors still raise
            compute_features(utts, CFG, cache, progress=False)


def test_parallel_matches_serial(sample_utts: list[Utterance]) -> None:
    utts = sample_utts[100:108]
    serial = compute_features(utts, CFG, None, progress=False)
    parallel = compute_features(utts, CFG, None, progress=False, n_jobs=2)
    for x, y in zip(serial.features, parallel.features, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)  # BLAS threading may differ in the last bit


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISPART_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("DISPART_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "dispart"
