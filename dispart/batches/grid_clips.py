"""The ``grid_clips`` corpus loader: audio-visual speech as 10-frame sequences (MDVAE, issue 11).

``data.audio`` names a clip source (:func:`dispart.data.grid.scan_av_clips`): a GRID folder
(``video/{id}.mpg`` + ``align/{id}.align``, one speaker of the GRID release), a folder of videos
with sound in any container PyAV reads, or per clip a folder of PNG frames and one wav (25 fps
assumed), with an optional ``clips.csv`` (``clip,speaker,label``); ``data.audio`` may also be that
CSV, then only the clips it lists are used. Every clip gives two modalities, aligned frame by
frame:

* **"video"**: kind "frames", frames (3, 64, 64) RGB in [0, 1], ``frame_rate`` = the video's
  (25 for GRID), likelihood "bernoulli". Frames are cropped with a fixed face box
  (:data:`dispart.data.grid.GRID_FACE_BOX` = (76, 96, 236, 256), left/top/right/bottom in the
  360 x 288 GRID frame: one speaker, fixed camera; other frame sizes: the central square) and
  area-resampled to 64 x 64. The Bernoulli likelihood (binary cross-entropy on intensities in
  [0, 1]) is chosen because its decoded means are sigmoids, inside [0, 1] like the data, which
  the PSNR / SSIM of the denoising evaluation expect; a unit-variance Gaussian would leave them
  unbounded while assuming a noise level as large as the whole pixel range. Stored as uint8
  (:class:`~dispart.batches.sprites.FrameStack`), converted to float one example at a time.
* **"audio"**: kind "sequence", (n_bins,) frames of the log power spectrogram
  (``log(max(|STFT|^2, 1e-10))``) of the sound resampled to ``data.sample_rate`` (librosa), Hann
  window and FFT of 64 ms rounded up to a power of two, **hop = sample_rate / fps** samples
  (640 at 16 kHz and 25 fps), ``center=True``: audio frame t is centred on the time of video
  frame t. At 16 kHz: 1024-sample window, 513 bins (0 .. 8 kHz, Nyquist kept, so
  :func:`log_power_to_waveform` can invert it with Griffin-Lim). Standardised per bin with the
  training split's statistics (``Corpus.normalize``); invert with the run's normaliser first.
  Use ``data.sample_rate: 16000`` (the DataConfig default, 8000, gives 257 bins).

Both streams are cut to the shorter; more than :data:`MAX_FRAME_MISMATCH` frames apart is a
DataError naming the file. Each clip is then cut into **non-overlapping** windows of
:data:`SEQUENCE_FRAMES` = 10 frames starting at frame 0 (a 75-frame GRID clip gives 7 windows,
frames 70-74 dropped); each window is one example, id ``{clip}#{start}``, with ``meta``
``clip``, ``start`` (first frame), the sentence's ``command``, ``colour``, ``preposition``,
``letter``, ``digit``, ``adverb`` and ``words`` ("" without an alignment). The label is the
colour word (a CSV label overrides it; no alignment and no CSV label: "unlabelled"); the speaker
is the folder's name (or the CSV's). Windows holding damaged frames
(:func:`dispart.data.grid.damaged_frames`: 4 clips of grid_s1 whose first 12 frames decode grey)
are left out and listed in ``Corpus.skipped``.

Split (``data.split``): ``official``: every 5th clip of the sorted list is test (the ``grid``
loader's rule; grid_s1: 160 / 40 clips, 1,112 / 280 windows, the 4 damaged clips are training
clips); ``speakers:A,B``: those speakers' clips are test.

Bad clips (no audio track, undecodable file, a frame folder without one wav, a clip shorter than
one window, audio and video lengths apart, a missing alignment when ``align/`` exists): one
DataError naming the file, or with ``data.on_error=skip`` left out and listed in ``skipped``.

Decoded clips are cached, one ``.npz`` per clip in ``CACHE/grid_clips/`` keyed by the SHA-256 of
the clip's bytes, the settings and the library versions (librosa, numpy, scipy, soxr, soundfile,
PyAV, Pillow): the first load of grid_s1 decodes 200 clips, later loads read the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dispart.batches.corpus import Corpus, cache_dir, register_loader
from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.batches.sprites import FrameStack
from dispart.data.config import DataConfig
from dispart.data.grid import (
    FACE_SIZE,
    GRID_WORDS,
    UNLABELLED,
    AVSource,
    Box,
    damaged_frames,
    grid_split,
    grid_words,
    read_align,
    read_av_clip,
    scan_av_clips,
    sentence,
)
from dispart.data.splits import parse_split
from dispart.errors import ConfigError, DataError
from dispart.features.cache import library_versions
from dispart.features.fbank import fft_length
from dispart.files import atomic_open, file_sha256

__all__ = [
    "LABEL_WORD", "MAX_FRAME_MISMATCH", "SEQUENCE_FRAMES", "ClipAudioConfig", "ClipFeatures",
    "cached_clip_features", "clip_audio_config", "clip_features", "load_clips", "load_grid_clips_corpus",
    "log_power_spectrogram", "log_power_to_waveform", "window_starts",
]

SEQUENCE_FRAMES = 10  # frames per example (MDVAE's denoising experiment)
MAX_FRAME_MISMATCH = 2  # audio and video frame counts of one clip may differ by this much
LABEL_WORD = "colour"  # the sentence word that is an example's label
CACHE_VERSION = 1  # bump when decoding or features change in a way the key does not capture
_META_WORDS = (*GRID_WORDS, "words")


# --------------------------------------------------------------------------- audio features

@dataclass(frozen=True)
class ClipAudioConfig:
    """The power spectrogram aligned with video frames.

    Attributes:
        sample_rate: Hz the sound is resampled to.
        fps: video frames per second; the hop is ``sample_rate / fps`` samples (a whole number).
        win_ms: analysis window, milliseconds; the window (= FFT) length is the next power of two.
        floor: power floor before the log.
    """

    sample_rate: int = 16000
    fps: float = 25.0
    win_ms: float = 64.0
    floor: float = 1e-10

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.fps <= 0 or self.win_ms <= 0 or self.floor <= 0:
            raise ConfigError(f"ClipAudioConfig: rates, window and floor must be positive ({self})")
        hop = self.sample_rate / self.fps
        if abs(hop - round(hop)) > 1e-6:
            raise ConfigError(f"ClipAudioConfig: sample_rate / fps = {self.sample_rate} / {self.fps} = "
                              f"{hop:.3f} is not a whole number of samples; choose data.sample_rate "
                              f"divisible by the frame rate")

    @property
    def hop_length(self) -> int:
        """Samples per video frame."""
        return int(round(self.sample_rate / self.fps))

    @property
    def n_fft(self) -> int:
        """Window and FFT length in samples (a power of two)."""
        return fft_length(self.sample_rate * self.win_ms / 1000.0)

    @property
    def n_bins(self) -> int:
        """Feature dimension: bins 0 .. Nyquist."""
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


def clip_audio_config(cfg: DataConfig, fps: float = 25.0) -> ClipAudioConfig:
    """The spectrogram settings of a data config for video at ``fps`` frames per second."""
    return ClipAudioConfig(sample_rate=cfg.sample_rate, fps=fps)


def log_power_spectrogram(wave: np.ndarray, acfg: ClipAudioConfig) -> np.ndarray:
    """(N,) waveform at ``acfg.sample_rate`` -> (1 + N // hop, n_bins) float32 log power."""
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"log_power_spectrogram expects a non-empty (N,) waveform, got shape {wave.shape}")
    spec = librosa.stft(wave, n_fft=acfg.n_fft, hop_length=acfg.hop_length, win_length=acfg.n_fft,
                        window="hann", center=True)
    return np.log(np.maximum(np.abs(spec) ** 2, acfg.floor)).T.astype(np.float32)


def log_power_to_waveform(log_power: np.ndarray, acfg: ClipAudioConfig, n_iter: int = 50,
                          seed: int = 0, momentum: float = 0.99) -> np.ndarray:
    """Invert (T, n_bins) log power (raw, i.e. after the normaliser's ``inverse_transform``) to a
    ((T - 1) * hop,) float32 waveform with fast Griffin-Lim (Perraud et al.'s momentum, random
    initial phases drawn with ``seed``)."""
    import librosa

    lp = np.asarray(log_power, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] != acfg.n_bins or len(lp) < 2:
        raise ValueError(f"log_power_to_waveform expects (T >= 2, {acfg.n_bins}) log power, got {lp.shape}")
    mag = np.sqrt(np.exp(lp)).T  # (n_bins, T)
    kw = dict(n_fft=acfg.n_fft, hop_length=acfg.hop_length, win_length=acfg.n_fft, window="hann", center=True)
    length = (mag.shape[1] - 1) * acfg.hop_length  # 1 + length // hop = T frames
    angles = np.exp(2j * np.pi * np.random.default_rng(seed).random(mag.shape))
    previous = np.zeros_like(angles)
    for _ in range(n_iter):
        wave = librosa.istft(mag * angles, length=length, **kw)
        rebuilt = librosa.stft(wave, **kw)[:, : mag.shape[1]]
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles /= np.abs(angles) + 1e-16
        previous = rebuilt
    return librosa.istft(mag * angles, length=length, **kw).astype(np.float32)


# --------------------------------------------------------------------------- one clip, cached

@dataclass(frozen=True)
class ClipFeatures:
    """One decoded clip, both streams cut to the same T frames: ``video`` (T, size, size, 3) uint8
    RGB, ``audio`` (T, n_bins) float32 log power, ``damaged`` (T,) bool, ``fps``."""

    video: np.ndarray
    audio: np.ndarray
    damaged: np.ndarray
    fps: float


def clip_features(src: AVSource, sample_rate: int, box: Box | None = None, size: int = FACE_SIZE,
                  ) -> ClipFeatures:
    """Decode ``src`` and compute its spectrogram; audio and video frame counts more than
    :data:`MAX_FRAME_MISMATCH` apart (or a frame rate the sample rate does not divide) are a
    DataError naming the file."""
    clip = read_av_clip(src, sample_rate, box, size)
    try:
        acfg = ClipAudioConfig(sample_rate=sample_rate, fps=clip.fps)
    except ConfigError as e:
        raise DataError(f"{src.path}: {clip.fps:g} fps: {e}") from None
    audio = log_power_spectrogram(clip.wave, acfg)
    n_video, n_audio = len(clip.frames), len(audio)
    if abs(n_video - n_audio) > MAX_FRAME_MISMATCH:
        raise DataError(f"{src.path}: sound and pictures differ in length: {n_audio} audio frames "
                        f"({len(clip.wave) / sample_rate:.2f} s) but {n_video} video frames "
                        f"({n_video / clip.fps:.2f} s at {clip.fps:g} fps); at most {MAX_FRAME_MISMATCH} "
                        f"frames apart are cut to the shorter")
    t = min(n_video, n_audio)
    video = clip.frames[:t]
    return ClipFeatures(video, audio[:t], damaged_frames(video), clip.fps)


def _versions() -> dict[str, str]:
    import PIL

    try:
        import av
    except ImportError as e:
        raise DataError("decoding audio-visual clips needs PyAV: pip install av") from e

    return {**library_versions(), "av": str(av.__version__), "pillow": str(PIL.__version__)}


def _digests(src: AVSource) -> list[list[str]]:
    """[name, sha256] of every file of the clip; a file the OS refuses is a DataError naming it."""
    out = []
    for p in src.files():
        try:
            out.append([p.name, file_sha256(p)])
        except OSError as e:
            raise DataError(f"{p}: cannot read file ({e.__class__.__name__}: {e.strerror or e})") from e
    return out


def _clip_key(src: AVSource, sample_rate: int, box: Box | None, size: int, versions: dict[str, str]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, "sample_rate": sample_rate, "box": box, "size": size,
                       "audio": {k: v for k, v in ClipAudioConfig().to_dict().items()
                                 if k not in ("sample_rate", "fps")},
                       "files": _digests(src), "libs": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_entry(path: Path, key: str, sample_rate: int, size: int) -> ClipFeatures | None:
    """The cached clip at ``path``; None when absent; a damaged file is reported, deleted, None."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        warnings.warn(f"cannot read clip cache {path} ({e}); recomputing", stacklevel=3)
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            video, audio, damaged = z["video"], z["audio"], z["damaged"]
        if meta.get("key") != key:
            raise ValueError("it belongs to another key")
        fps = float(meta["fps"])
        n_bins = ClipAudioConfig(sample_rate=sample_rate, fps=fps).n_bins
        t = len(video)
        if (video.dtype != np.uint8 or video.shape != (t, size, size, 3) or audio.dtype != np.float32
                or audio.shape != (t, n_bins) or damaged.dtype != bool or damaged.shape != (t,)
                or not np.isfinite(audio).all()):
            raise ValueError(f"arrays of shapes {video.shape}, {audio.shape}, {damaged.shape} do not fit")
        return ClipFeatures(video, audio, damaged, fps)
    except Exception as e:  # any parse or consistency failure means a corrupt file
        warnings.warn(f"corrupt clip cache {path} ({e.__class__.__name__}: {e}); deleted, recomputing",
                      stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def _write_entry(path: Path, key: str, feats: ClipFeatures) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.savez(f, video=feats.video, audio=feats.audio, damaged=feats.damaged,
                     meta=np.array(json.dumps({"key": key, "fps": feats.fps})))
    except OSError as e:
        warnings.warn(f"cannot write clip cache {path} ({e}); continuing without it", stacklevel=3)


def cached_clip_features(src: AVSource, sample_rate: int, box: Box | None = None, size: int = FACE_SIZE,
                         cache: str | Path | None = None, versions: dict[str, str] | None = None,
                         ) -> ClipFeatures:
    """:func:`clip_features` through the cache folder ``cache`` (None: no cache). Only decoded
    clips are cached; a bad clip is decoded (and fails) again on every call."""
    if cache is None:
        return clip_features(src, sample_rate, box, size)
    key = _clip_key(src, sample_rate, box, size, versions or _versions())
    path = Path(cache).expanduser() / "grid_clips" / f"{key[:40]}.npz"
    feats = _read_entry(path, key, sample_rate, size)
    if feats is None:
        feats = clip_features(src, sample_rate, box, size)
        _write_entry(path, key, feats)
    return feats


# --------------------------------------------------------------------------- windows and the corpus

def window_starts(n_frames: int, damaged: np.ndarray | None = None,
                  length: int = SEQUENCE_FRAMES) -> list[int]:
    """First frames of the non-overlapping ``length``-frame windows of ``n_frames`` frames
    (0, length, 2 * length, ...; the remainder dropped), leaving out windows with a damaged frame."""
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    starts = range(0, n_frames - length + 1, length)
    if damaged is None:
        return list(starts)
    return [s for s in starts if not bool(np.any(damaged[s : s + length]))]


def _words(src: AVSource) -> dict[str, str]:
    """The clip's GRID words by role (plus "words", the sentence), "" without an alignment."""
    if src.align is None:
        return dict.fromkeys(_META_WORDS, "")
    if not src.align.is_file():
        raise DataError(f"{src.path}: no alignment {src.align}")
    said = sentence(read_align(src.align))
    return {**grid_words(said, src.align), "words": " ".join(said)}


def _splits(clips: list[AVSource], split: str) -> list[str]:
    held = parse_split(split)
    if held is None:
        return grid_split(len(clips))
    known = sorted({c.speaker for c in clips})
    unknown = sorted(set(held) - set(known))
    if unknown:
        raise ConfigError(f"data.split={split!r}: unknown speaker(s) {unknown}; the clips' speakers "
                          f"are {known}")
    return ["test" if c.speaker in held else "train" for c in clips]


def _progress(i: int, n: int, start: float, last: float) -> float:
    now = time.monotonic()
    if now - last > 2.0 or i + 1 == n:
        print(f"\rgrid clips: {i + 1}/{n} ({now - start:.1f} s)", end="\n" if i + 1 == n else "",
              file=sys.stderr, flush=True)
        return now
    return last


def load_clips(source: str | Path, cfg: DataConfig, progress: bool = False, limit: int | None = None,
               length: int = SEQUENCE_FRAMES, box: Box | None = None, size: int = FACE_SIZE) -> Corpus:
    """The clips of ``source`` as ``length``-frame "audio" and "video" windows (module docstring).

    ``limit`` keeps the first clips of the sorted list (tests); ``box`` overrides the face box
    (:func:`dispart.data.grid.face_box`); ``size`` the crop's side.
    """
    if cfg.on_error not in ("raise", "skip"):
        raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {cfg.on_error!r}")
    clips = scan_av_clips(source)[:limit]
    splits = _splits(clips, cfg.split)
    cache = cache_dir(cfg)
    versions = _versions()
    rows: dict[str, dict[str, list]] = {}
    skipped: list[tuple[str, str]] = []
    fps0: float | None = None
    start_time = last = time.monotonic()
    for i, (split, src) in enumerate(zip(splits, clips, strict=True)):
        try:
            words = _words(src)
            feats = cached_clip_features(src, cfg.sample_rate, box, size, cache, versions)
            if fps0 is not None and abs(feats.fps - fps0) > 1e-6:
                raise DataError(f"{src.path}: {feats.fps:g} fps, the clips before it have {fps0:g}")
            starts = window_starts(len(feats.video), feats.damaged, length)
            if not starts:
                what = (f"{int(feats.damaged.sum())} of its {len(feats.video)} frames are damaged"
                        if feats.damaged.any() else f"{len(feats.video)} frames")
                raise DataError(f"{src.path}: no usable {length}-frame sequence ({what}; a clip needs "
                                f"{length} consecutive good frames)")
        except DataError as e:
            if cfg.on_error != "skip":
                raise
            skipped.append((str(src.path), str(e)))
            continue
        finally:
            if progress:
                last = _progress(i, len(clips), start_time, last)
        fps0 = feats.fps
        bad = [s for s in window_starts(len(feats.video), None, length) if s not in starts]
        if bad:
            frames = np.nonzero(feats.damaged)[0]
            skipped.append((str(src.path), f"{src.path}: frames {frames[0]}-{frames[-1]} are damaged "
                                           f"(flat grey); windows starting at {bad} left out"))
        label = src.label or (words[LABEL_WORD] or UNLABELLED)
        r = rows.setdefault(split, {"video": [], "audio": [], "labels": [], "ids": [], "speakers": [],
                                    "paths": [], "clip": [], "start": [], **{w: [] for w in _META_WORDS}})
        for s in starts:
            r["video"].append(feats.video[s : s + length])
            r["audio"].append(np.ascontiguousarray(feats.audio[s : s + length]))
            r["labels"].append(label)
            r["ids"].append(f"{src.id}#{s}")
            r["speakers"].append(src.speaker)
            r["paths"].append(str(src.path))
            r["clip"].append(src.id)
            r["start"].append(s)
            for w in _META_WORDS:
                r[w].append(words[w])
    missing = [s for s in ("train", "test") if s not in rows]
    if missing:
        raise DataError(f"{source}: no usable {length}-frame sequence in split(s) {missing} "
                        f"({len(clips)} clips, {len(skipped)} skipped or cut)")
    if skipped:
        shown = "; ".join(reason for _, reason in skipped[:3])
        warnings.warn(f"grid clips: {len(skipped)} clip(s) skipped or cut: {shown}"
                      f"{' ...' if len(skipped) > 3 else ''}", stacklevel=2)
    assert fps0 is not None
    sets: dict[str, dict[str, ModalitySet]] = {"audio": {}, "video": {}}
    for split, r in rows.items():
        meta_keys = ("clip", "start", *_META_WORDS)
        for m in ("audio", "video"):
            examples = FrameStack(np.stack(r["video"])) if m == "video" else r["audio"]
            sets[m][split] = ModalitySet(examples, r["labels"], r["ids"], r["speakers"], r["paths"],  # type: ignore[arg-type]
                                         {k: r[k] for k in meta_keys})
    n_bins = ClipAudioConfig(sample_rate=cfg.sample_rate, fps=fps0).n_bins
    specs = {"audio": ModalitySpec("audio", "sequence", (n_bins,), "gaussian", frame_rate=fps0),
             "video": ModalitySpec("video", "frames", (3, size, size), "bernoulli", frame_rate=fps0)}
    return Corpus(sets, specs, pairing="example", normalize=("audio",), skipped=skipped)


@register_loader("grid_clips")
def load_grid_clips_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """Audio-visual clips in ``data.audio`` as 10-frame "audio" / "video" windows (:func:`load_clips`)."""
    if cfg.audio == "sample":
        raise ConfigError("data.audio: the grid_clips loader needs a clip folder (GRID's video/ + align/, "
                          "videos with sound, or frame folders + wav) or a clip,speaker,label CSV; there "
                          "is no embedded sample")
    return load_clips(cfg.audio, cfg, progress)
