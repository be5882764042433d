"""The ``grid_clips`` loader (MDVAE, issue 11): real GRID clips when ../shared/data/grid_s1 is there,
synthetic clips (made with PyAV) for the bad inputs, frame folders + wav + CSV for user clips."""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from grid_helpers import GRID, write_av_clip

from dispart.batches import grid_clips
from dispart.batches.corpus import get_loader
from dispart.batches.grid_clips import (
    ClipAudioConfig,
    cached_clip_features,
    load_clips,
    log_power_spectrogram,
    log_power_to_waveform,
    window_starts,
)
from dispart.batches.modality import ModalitySpec
from dispart.batches.pipeline import load_experiment_data
from dispart.data.config import DataConfig
from dispart.data.grid import (
    GRID_FACE_BOX,
    area_resize,
    face_box,
    read_align,
    read_av_clip,
    scan_av_clips,
    sentence,
)
from dispart.errors import ConfigError, DataError

DAMAGED = "bbizzn"  # one of the four grid_s1 clips whose first 12 frames decode grey


def _cfg(root: Path, tmp_path: Path, **kw) -> DataConfig:
    return replace(DataConfig(), audio=str(root), sample_rate=16000, cache_dir=str(tmp_path / "cache"),
                   loader="grid_clips", **kw)


def _real_subset(tmp_path: Path, ids: list[str]) -> Path:
    if not (GRID / "video").is_dir():
        pytest.skip(f"GRID sample not present at {GRID} (../shared/data/grid_s1 of the workplace)")
    pytest.importorskip("av", reason="decoding GRID clips needs PyAV (pip install 'dispart[video]')")
    root = tmp_path / "grid_s1"
    (root / "video").mkdir(parents=True)
    (root / "align").mkdir()
    for i in ids:
        (root / "video" / f"{i}.mpg").symlink_to(GRID / "video" / f"{i}.mpg")
        shutil.copy(GRID / "align" / f"{i}.align", root / "align")
    return root


def test_real_grid_clips_give_aligned_ten_frame_windows(tmp_path: Path) -> None:
    ids = ["bbaf2n", "bbal7s", DAMAGED]  # sorted: bbaf2n is test (position 0), the others train
    root = _real_subset(tmp_path, ids)
    cfg = _cfg(root, tmp_path)
    clip = scan_av_clips(root)[0]
    feats = cached_clip_features(clip, 16000, cache=None)
    assert feats.video.shape == (75, 64, 64, 3) and feats.video.dtype == np.uint8  # 3 s at 25 fps
    assert feats.audio.shape == (75, 513) and feats.fps == 25.0  # one audio frame per video frame
    assert not feats.damaged.any()
    import av  # the crop is the face box of the decoded frame, area-averaged to 64 x 64
    with av.open(str(clip.video)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    left, top, right, bottom = GRID_FACE_BOX
    expected = area_resize(first[None, top:bottom, left:right], 64)[0]
    assert np.abs(feats.video[0].astype(np.float32) - expected).max() <= 0.5 + 1e-3

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = get_loader("grid_clips")(cfg, False)
    assert any(f"{DAMAGED}.mpg: frames 0-11 are damaged" in str(w.message) for w in caught)
    assert corpus.pairing == "example" and corpus.normalize == ("audio",)
    assert corpus.specs["video"] == ModalitySpec("video", "frames", (3, 64, 64), "bernoulli", 25.0)
    assert corpus.specs["audio"] == ModalitySpec("audio", "sequence", (513,), "gaussian", 25.0)
    test, train = corpus.sets["video"]["test"], corpus.sets["video"]["train"]
    assert test.ids == [f"bbaf2n#{s}" for s in range(0, 70, 10)]  # 7 non-overlapping windows
    assert train.meta["clip"].count("bbal7s") == 7 and train.meta["clip"].count(DAMAGED) == 5
    assert [s for c, s in zip(train.meta["clip"], train.meta["start"], strict=True) if c == DAMAGED] == \
        [20, 30, 40, 50, 60]  # frames 0-11 are grey: windows 0 and 10 left out
    assert [p for p, _ in corpus.skipped] == [str(root / "video" / f"{DAMAGED}.mpg")]
    for split in ("train", "test"):
        v, a = corpus.sets["video"][split], corpus.sets["audio"][split]
        assert v.ids == a.ids and v.labels == a.labels
        for i in (0, len(v) - 1):
            x = v.examples[i]
            assert x.shape == (10, 3, 64, 64) and x.dtype == np.float32 and 0.0 <= x.min() <= x.max() <= 1.0
            assert a.examples[i].shape == (10, 513)
            start = v.meta["start"][i]
            src = next(c for c in scan_av_clips(root) if c.id == v.meta["clip"][i])
            clip_feats = cached_clip_features(src, 16000, cache=cfg.cache_dir)
            np.testing.assert_array_equal(a.examples[i], clip_feats.audio[start : start + 10])
            np.testing.assert_allclose(x, clip_feats.video[start : start + 10].transpose(0, 3, 1, 2) / 255.0)
        for i, clip_id in enumerate(v.meta["clip"]):  # labels from the alignments
            words = sentence(read_align(root / "align" / f"{clip_id}.align"))
            assert v.labels[i] == v.meta["colour"][i] == words[1]
            assert (v.meta["command"][i], v.meta["digit"][i]) == (words[0], words[4])
            assert v.speakers[i] == "grid_s1"

    # the second load reads the cache: decoding is not called again
    def fail(*args, **kw):
        raise AssertionError("decoded a cached clip")
    orig = grid_clips.read_av_clip
    grid_clips.read_av_clip = fail
    try:
        with pytest.warns(UserWarning, match="damaged"):
            data = load_experiment_data(cfg, progress=False)
    finally:
        grid_clips.read_av_clip = orig
    frames = np.concatenate(data.sets["audio"]["train"].examples).astype(np.float64)
    np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-3)  # standardised with train stats
    from dispart.training.datamodule import PairedDataModule
    dm = PairedDataModule(data, batch_size=4, seed=0)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert tuple(b["video"].data.shape) == (4, 10, 3, 64, 64) and tuple(b["audio"].data.shape) == (4, 10, 513)
    assert b["video"].lengths.tolist() == [10] * 4


def test_bad_clips_give_one_error_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    root.mkdir()
    for i in range(5):  # five good clips, 25 frames (2 windows) each; position 0 is test
        write_av_clip(root / f"ok{i}.mpg", 25)
    cfg = _cfg(root, tmp_path)
    corpus = load_clips(root, cfg)
    assert len(corpus.sets["video"]["test"]) == 2 and len(corpus.sets["audio"]["train"]) == 8
    assert corpus.sets["video"]["train"].labels[0] == "unlabelled"  # no alignment, no CSV
    cases = {
        "silent.mpg": ("no audio track", lambda p: write_av_clip(p, 25, audio=False)),
        "garbage.mpg": ("cannot decode clip", lambda p: p.write_bytes(b"not a video at all" * 100)),
        "short.mpg": ("no usable 10-frame sequence", lambda p: write_av_clip(p, 8)),
        "dubbed.mpg": ("sound and pictures differ in length",
                       lambda p: write_av_clip(p, 25, audio_seconds=0.4)),
    }
    for name, (message, make) in cases.items():
        bad = root / name
        make(bad)
        with pytest.raises(DataError) as err:
            load_clips(root, cfg)
        assert str(bad) in str(err.value) and message in str(err.value), str(err.value)
        assert len(str(err.value).splitlines()) == 1
        with pytest.warns(UserWarning, match=re.escape(f"grid clips: 1 clip(s) skipped or cut: {bad}")):
            skipping = load_clips(root, replace(cfg, on_error="skip"))
        assert [p for p, _ in skipping.skipped] == [str(bad)]
        kept = skipping.sets["video"]["train"].meta["clip"] + skipping.sets["video"]["test"].meta["clip"]
        assert sorted(kept) == sorted(f"ok{i}" for i in range(5) for _ in range(2))
        bad.unlink()
    with pytest.raises(ConfigError, match="no embedded sample"):
        get_loader("grid_clips")(DataConfig(), False)
    with pytest.raises(DataError, match="does not exist"):
        load_clips(tmp_path / "nowhere", cfg)


def test_frame_folders_with_wav_and_a_clip_table(tmp_path: Path) -> None:
    import soundfile as sf
    from PIL import Image
    root = tmp_path / "mine"
    rng = np.random.default_rng(0)
    for k in range(4):
        d = root / f"c{k}"
        d.mkdir(parents=True)
        for t in range(12):  # 96 x 80 frames: the central 80 x 80 square is the face
            Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(d / f"{t:03d}.png")
        sf.write(d / "sound.wav", 0.1 * rng.standard_normal(int(12 / 25 * 22050)), 22050)
    (root / "clips.csv").write_text("clip,speaker,label\nc0,ann,yes\nc1,bob,no\nc2,ann,no\nc3,bob,\n")
    cfg = _cfg(root, tmp_path, split="speakers:bob")
    corpus = load_clips(root, cfg)
    test = corpus.sets["video"]["test"]
    assert test.meta["clip"] == ["c1", "c3"] and test.speakers == ["bob", "bob"]
    assert test.labels == ["no", "unlabelled"]  # an empty CSV label: no alignment either
    assert corpus.sets["audio"]["train"].labels == ["yes", "no"]
    assert corpus.sets["video"]["train"].examples[0].shape == (10, 3, 64, 64)
    assert corpus.sets["audio"]["train"].examples[0].shape == (10, 513)
    assert face_box(96, 80) == (8, 0, 88, 80) and face_box(360, 288) == GRID_FACE_BOX
    clip = scan_av_clips(root / "clips.csv")[0]
    assert clip.frames == root / "c0" and clip.label == "yes"
    with pytest.raises(ConfigError, match=r"unknown speaker\(s\) \['eve'\]"):
        load_clips(root, replace(cfg, split="speakers:eve"))
    (root / "c2" / "sound.wav").unlink()
    with pytest.raises(DataError, match=re.escape(f"{root / 'c2'}: a frame folder needs exactly one .wav")):
        read_av_clip(scan_av_clips(root)[2], 16000)
    (root / "clips.csv").write_text("clip,speaker,label\nc9,ann,yes\n")
    with pytest.raises(DataError, match=re.escape(f"{root / 'clips.csv'}: clip(s) ['c9'] not found")):
        scan_av_clips(root)
    (root / "clips.csv").write_text("clip,label\nc0,yes\n")
    with pytest.raises(DataError, match="header 'clip,speaker,label'"):
        scan_av_clips(root)


def test_spectrogram_hop_matches_video_and_inverts(tmp_path: Path) -> None:
    acfg = ClipAudioConfig(16000, 25.0)
    assert (acfg.hop_length, acfg.n_fft, acfg.n_bins) == (640, 1024, 513)
    rate = 16000
    t = np.arange(rate) / rate
    wave = (0.5 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
    lp = log_power_spectrogram(wave, acfg)
    assert lp.shape == (1 + len(wave) // 640, 513) == (26, 513)
    back = log_power_to_waveform(lp, acfg, n_iter=30)
    assert back.shape == (25 * 640,)
    again = np.exp(log_power_spectrogram(back, acfg)[1:-1] / 2)  # magnitudes, edge frames aside
    mag = np.exp(lp[1:-1] / 2)
    assert np.corrcoef(again.ravel(), mag.ravel())[0, 1] > 0.95
    with pytest.raises(ConfigError, match="not a whole number of samples"):
        ClipAudioConfig(16000, 30.0)
    assert window_starts(75) == [0, 10, 20, 30, 40, 50, 60]
    damaged = np.zeros(75, bool)
    damaged[[3, 44]] = True
    assert window_starts(75, damaged) == [10, 20, 30, 50, 60] and window_starts(9) == []


def test_a_corrupt_cache_entry_is_recomputed(tmp_path: Path) -> None:
    write_av_clip(tmp_path / "a.mpg", 12)
    src = scan_av_clips(tmp_path)[0]
    first = cached_clip_features(src, 16000, cache=tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "grid_clips").glob("*.npz")
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="corrupt clip cache"):
        again = cached_clip_features(src, 16000, cache=tmp_path / "cache")
    np.testing.assert_array_equal(first.video, again.video)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert entry.stat().st_size > 1000  # rewritten
