"""The GRID audio-visual sentence corpus: clips (MPEG-1 video with sound) and word alignments.

Layout (as in the GRID release and ``../shared/data/grid_s1``): ``video/{id}.mpg`` (360 x 288,
25 fps, MP2 audio) and ``align/{id}.align`` with one ``start end word`` line per word in units of
1/25,000 s; ``sil`` marks silence. Every sentence is six words: command, colour, preposition,
letter, digit, adverb. Decoding needs PyAV (``pip install av``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dispart.errors import DataError

__all__ = ["ALIGN_UNITS_PER_SECOND", "Clip", "Word", "read_align", "read_clip", "scan_grid", "sentence"]

ALIGN_UNITS_PER_SECOND = 25_000.0
_SILENCE = ("sil", "sp")


@dataclass(frozen=True)
class Word:
    """One aligned word; ``start``/``end`` in seconds from the start of the clip."""

    start: float
    end: float
    word: str


@dataclass(frozen=True)
class Clip:
    """One GRID clip: its id (file stem), video file and alignment file (or None)."""

    id: str
    video: Path
    align: Path | None


def read_align(path: str | Path) -> list[Word]:
    """Words of an ``.align`` file (times converted to seconds); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read alignment ({e.__class__.__name__}: {e})") from e
    words = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DataError(f"{path}, line {line_no}: expected 'start end word', got {line!r}")
        try:
            start, end = int(parts[0]), int(parts[1])
        except ValueError:
            raise DataError(f"{path}, line {line_no}: start and end must be integers, got {line!r}") from None
        if end < start:
            raise DataError(f"{path}, line {line_no}: end {end} is before start {start}")
        words.append(Word(start / ALIGN_UNITS_PER_SECOND, end / ALIGN_UNITS_PER_SECOND, parts[2]))
    if not words:
        raise DataError(f"{path}: alignment has no words")
    return words


def sentence(words: list[Word]) -> list[str]:
    """The spoken words, silences left out."""
    return [w.word for w in words if w.word not in _SILENCE]


def scan_grid(root: str | Path) -> list[Clip]:
    """Clips of a GRID folder holding ``video/`` (and ``align/``), sorted by id."""
    root = Path(root).expanduser()
    video_dir = root / "video" if (root / "video").is_dir() else root
    if not video_dir.is_dir():
        raise DataError(f"{root}: GRID folder does not exist")
    align_dir = root / "align"
    clips = []
    for p in sorted(video_dir.glob("*.mpg")):
        a = align_dir / (p.stem + ".align")
        clips.append(Clip(p.stem, p, a if a.is_file() else None))
    if not clips:
        raise DataError(f"{root}: no .mpg clips found (expected {root}/video/*.mpg)")
    return clips


def _av():  # noqa: ANN202 (module)
    try:
        import av
    except ImportError as e:
        raise DataError("decoding GRID clips needs PyAV: pip install av") from e
    return av


def _downsample(frames: np.ndarray, factor: int) -> np.ndarray:
    """(T, H, W) -> (T, H // factor, W // factor) by averaging factor x factor blocks."""
    if factor == 1:
        return frames
    t, h, w = frames.shape
    h2, w2 = h // factor, w // factor
    blocks = frames[:, : h2 * factor, : w2 * factor].reshape(t, h2, factor, w2, factor)
    return blocks.mean(axis=(2, 4))


def read_clip(path: str | Path, sample_rate: int,
              downsample: int = 8) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode one clip.

    Returns:
        frames: (T, 1, H // downsample, W // downsample) float32 grey levels in [0, 1]
            (block means of the decoded 8-bit luma);
        wave: (N,) float32 mono waveform at ``sample_rate`` Hz, clipped to [-1, 1];
        fps: video frames per second.
    """
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    av = _av()
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            if not container.streams.audio:
                raise DataError(f"{path}: no audio stream")
            fps = float(container.streams.video[0].average_rate or 0.0)
            grey = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
        with av.open(str(path)) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=int(sample_rate))
            chunks = [g.to_ndarray().reshape(-1) for f in container.decode(audio=0)
                      for g in resampler.resample(f)]
            chunks += [g.to_ndarray().reshape(-1) for g in resampler.resample(None)]
    except DataError:
        raise
    except Exception as e:  # PyAV raises its own error types (InvalidDataError, FFmpegError...)
        raise DataError(f"{path}: cannot decode clip ({e.__class__.__name__}: {e})") from e
    if not grey or fps <= 0:
        raise DataError(f"{path}: no video frames (or no frame rate)")
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise DataError(f"{path}: audio track is empty")
    frames = _downsample(np.stack(grey).astype(np.float32) / 255.0, downsample)
    return frames[:, None].astype(np.float32), np.clip(wave, -1.0, 1.0).astype(np.float32), fps
