"""The GRID audio-visual sentence corpus: clips (MPEG-1 video with sound) and word alignments.

Layout (as in the GRID release, one folder per speaker): ``video/{id}.mpg`` (360 x 288,
25 fps, MP2 audio) and ``align/{id}.align`` with one ``start end word`` line per word in units of
1/25,000 s; ``sil`` marks silence. Every sentence is six words: command, colour, preposition,
letter, digit, adverb. Decoding needs PyAV (``pip install av``).

For the sequence models (``grid_clips`` loader, :mod:`dispart.batches.grid_clips`) this module
also reads colour face crops with their sound from any clip source (:func:`scan_av_clips`,
:func:`read_av_clip`): GRID folders, folders of videos with sound in any container PyAV reads,
or per clip a folder of PNG frames and one wav, with an optional ``clip,speaker,label`` CSV.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dispart.data.corpus import load_waveform
from dispart.errors import DataError

__all__ = [
    "ALIGN_UNITS_PER_SECOND", "AVClip", "AVSource", "Clip", "FACE_SIZE", "FRAMES_FPS", "GRID_FACE_BOX",
    "GRID_FRAME_SIZE", "GRID_TEST_EVERY", "GRID_WORDS", "UNLABELLED", "VIDEO_EXTENSIONS", "Word",
    "area_resize", "damaged_frames", "face_box", "grid_split", "grid_words", "read_align", "read_av_clip",
    "read_clip", "read_clip_table", "scan_av_clips", "scan_grid", "sentence",
]

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


# --------------------------------------------------------------------------- colour face clips with sound

GRID_WORDS = ("command", "colour", "preposition", "letter", "digit", "adverb")  # a GRID sentence
GRID_TEST_EVERY = 5  # every 5th clip of the sorted list (positions 0, 5, 10, ...) is test
GRID_FRAME_SIZE = (360, 288)  # width, height of GRID frames
GRID_FACE_BOX = (76, 96, 236, 256)
"""The fixed face box of GRID frames, ``(left, top, right, bottom)`` in pixels of the 360 x 288
frame (right and bottom exclusive): a 160 x 160 square from the forehead (hair cut off) to below
the chin, x 76-235, y 96-255, chosen by looking at frames of speaker 1 across the corpus: one
speaker, fixed camera, the head moves by about +-15 px, and the box keeps ears, eyes, mouth and
chin in every clip looked at (including the second recording session, teal background and a
slightly closer camera)."""
FACE_SIZE = 64  # face crops are FACE_SIZE x FACE_SIZE RGB
FRAMES_FPS = 25.0  # frame rate assumed for a folder of PNG frames (it carries none)
UNLABELLED = "unlabelled"  # label of a clip with neither an alignment nor a CSV label
VIDEO_EXTENSIONS = (".mpg", ".mpeg", ".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".flv", ".ogv")
CLIP_TABLE = "clips.csv"  # the optional clip,speaker,label table inside a clip folder
_FRAME_EXTENSIONS = (".png",)
Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom exclusive
_GREY, _GREY_TOL, _GREY_FRACTION = 128, 4, 0.3  # see damaged_frames


def grid_split(n: int, every: int = GRID_TEST_EVERY) -> list[str]:
    """"test" for positions 0, every, 2 * every, ... of ``n`` clips sorted by id, else "train"."""
    return ["test" if i % every == 0 else "train" for i in range(n)]


def grid_words(words: list[str], where: str | Path) -> dict[str, str]:
    """The six words of a GRID sentence by role (:data:`GRID_WORDS`); other counts are a DataError
    naming ``where`` (the alignment file)."""
    if len(words) != len(GRID_WORDS):
        raise DataError(f"{where}: {len(words)} words {words}, a GRID sentence has six "
                        f"({' '.join(GRID_WORDS)})")
    return dict(zip(GRID_WORDS, words, strict=True))


@dataclass(frozen=True)
class AVSource:
    """Where one audio-visual clip comes from: a video file with sound (``video``), or a folder
    of PNG frames (``frames``) with one wav (``wav``; None when the folder has none, an error
    when the clip is read). ``align``: its GRID alignment or None; ``speaker`` / ``label``: from
    the CSV (label None: take it from the alignment)."""

    id: str
    video: Path | None = None
    frames: Path | None = None
    wav: Path | None = None
    align: Path | None = None
    speaker: str = ""
    label: str | None = None

    @property
    def path(self) -> Path:
        """The file or folder that names this clip in messages."""
        assert self.video is not None or self.frames is not None
        return self.video if self.video is not None else self.frames  # type: ignore[return-value]

    def files(self) -> list[Path]:
        """Every file whose bytes make this clip (its cache key hashes them)."""
        if self.video is not None:
            return [self.video]
        return [*_frame_files(self.frames), *([self.wav] if self.wav is not None else [])]  # type: ignore[arg-type]


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _FRAME_EXTENSIONS and p.is_file())


def read_clip_table(path: str | Path) -> dict[str, tuple[str, str]]:
    """``clip,speaker,label`` CSV (header required; speaker or label may be empty) ->
    {clip: (speaker, label)}. ``clip`` is a clip id: a video's file name (with or without its
    extension) or a frame folder's name. Errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read clip table ({e.__class__.__name__}: {e})") from e
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip().lower() for c in rows[0]] != ["clip", "speaker", "label"]:
        raise DataError(f"{path}: the first line must be the header 'clip,speaker,label', got "
                        f"{','.join(rows[0]) if rows else 'an empty file'!r}")
    table: dict[str, tuple[str, str]] = {}
    for line_no, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 3:
            raise DataError(f"{path}, line {line_no}: expected 3 fields clip,speaker,label, got {row!r}")
        clip, speaker, label = (c.strip() for c in row)
        if not clip:
            raise DataError(f"{path}, line {line_no}: empty clip field")
        key = Path(clip).stem if Path(clip).suffix.lower() in VIDEO_EXTENSIONS else Path(clip).name
        if key in table:
            raise DataError(f"{path}, line {line_no}: clip {clip!r} is listed twice")
        table[key] = (speaker, label)
    if not table:
        raise DataError(f"{path}: clip table lists no clip")
    return table


def scan_av_clips(source: str | Path) -> list[AVSource]:
    """The audio-visual clips of ``source``, sorted by id.

    ``source`` is a folder holding any mix of

    * video files with sound (extensions :data:`VIDEO_EXTENSIONS`), directly or in ``video/``
      (the GRID layout; alignments ``align/{id}.align`` are picked up when that folder exists);
    * one sub-folder per clip with its frames as PNG files (sorted by name: zero-pad the numbers)
      and one ``.wav`` (frames at :data:`FRAMES_FPS` frames per second);

    and optionally ``clips.csv`` (``clip,speaker,label``, :func:`read_clip_table`) overriding the
    speaker (default: the folder's name) and label (default: the GRID colour word when an
    alignment exists, else :data:`UNLABELLED`). ``source`` may also be such a CSV: then only the
    clips it lists are used, found in the CSV's folder. A clip id found twice, a CSV row naming no
    clip, or no clip at all is a DataError naming the file.
    """
    source = Path(source).expanduser()
    table: dict[str, tuple[str, str]] = {}
    only_listed = False
    if source.is_file() and source.suffix.lower() == ".csv":
        table, only_listed, root, table_path = read_clip_table(source), True, source.parent, source
    elif source.is_dir():
        root, table_path = source, source / CLIP_TABLE
        if table_path.is_file():
            table = read_clip_table(table_path)
    else:
        raise DataError(f"{source}: clip folder (or clip CSV) does not exist")
    video_dir = root / "video" if (root / "video").is_dir() else root
    align_dir = root / "align" if (root / "align").is_dir() else None
    found: dict[str, AVSource] = {}

    def add(src: AVSource) -> None:
        if src.id in found:
            raise DataError(f"{src.path}: clip id {src.id!r} is also {found[src.id].path}")
        found[src.id] = src

    for p in sorted(video_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            a = align_dir / f"{p.stem}.align" if align_dir is not None else None
            add(AVSource(p.stem, video=p, align=a))
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name not in ("video", "align") and _frame_files(d):
            wavs = sorted(p for p in d.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
            a = align_dir / f"{d.name}.align" if align_dir is not None else None
            add(AVSource(d.name, frames=d, wav=wavs[0] if len(wavs) == 1 else None, align=a))
    unknown = sorted(set(table) - set(found))
    if unknown:
        raise DataError(f"{table_path}: clip(s) {unknown[:5]} not found in {root} (found {len(found)} clips: "
                        f"video files {', '.join(VIDEO_EXTENSIONS)} or folders of PNG frames + wav)")
    clips = []
    for cid in sorted(found):
        if only_listed and cid not in table:
            continue
        speaker, label = table.get(cid, ("", ""))
        clips.append(replace(found[cid], speaker=speaker or root.name, label=label or None))
    if not clips:
        raise DataError(f"{source}: no clips found (video files {', '.join(VIDEO_EXTENSIONS)}, directly or "
                        f"in video/, or one folder of PNG frames + one wav per clip)")
    return clips


def face_box(width: int, height: int, box: Box | None = None) -> Box:
    """The crop box ``(left, top, right, bottom)`` of a ``width`` x ``height`` frame: ``box`` when
    given; else :data:`GRID_FACE_BOX` for GRID's 360 x 288 frames and the central square of any
    other size (frames already cropped to the face). A box outside the frame is a ValueError."""
    if box is None:
        if (width, height) == GRID_FRAME_SIZE:
            box = GRID_FACE_BOX
        else:
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            box = (left, top, left + side, top + side)
    left, top, right, bottom = (int(v) for v in box)
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(f"face box {box} does not fit in {width} x {height} frames")
    return left, top, right, bottom


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights averaging the input pixels each output pixel covers (area resampling)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def area_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, C) -> (T, size, size, C) float32 by area averaging (every output pixel the mean
    of the input area it covers; exact block means when H and W are multiples of ``size``)."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"area_resize expects (T, H, W, C) frames, got shape {frames.shape}")
    t, h, w, c = frames.shape
    rows, cols = _area_matrix(h, size), _area_matrix(w, size)
    x = np.matmul(rows, frames.astype(np.float32).reshape(t, h, w * c))  # (T, size, W * C)
    x = np.matmul(x.reshape(t, size, w, c).transpose(0, 1, 3, 2), cols.T)  # (T, size, C, size)
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2))


def damaged_frames(frames: np.ndarray) -> np.ndarray:
    """(T,) True for frames of (T, H, W, 3) uint8 face crops of which at least 30% of the pixels
    are flat mid-grey (every channel within 4 of 128).

    Four clips of ``grid_s1`` (bbizzn, brwg8p, lgbf8n, prii9a) start with a blank grey I-frame;
    their first 12 frames (one MPEG group of pictures) decode as grey with the face painted in
    piecemeal by the P-frames. No frame of the other clips comes near the threshold: a face crop
    has no large neutral-grey area.
    """
    frames = np.asarray(frames)
    grey = (np.abs(frames.astype(np.int16) - _GREY) <= _GREY_TOL).all(axis=-1)
    return grey.reshape(len(frames), -1).mean(axis=1) >= _GREY_FRACTION


@dataclass(frozen=True)
class AVClip:
    """A decoded clip: ``frames`` (T, size, size, 3) uint8 RGB face crops; ``wave`` (N,) float32
    mono at ``sample_rate``, sample 0 at the time of frame 0; ``fps`` video frames per second;
    ``box`` the crop box used (in pixels of the source frames)."""

    frames: np.ndarray
    wave: np.ndarray
    fps: float
    box: Box


def _crop_resize(crops: list[np.ndarray], size: int) -> np.ndarray:
    return np.clip(np.rint(area_resize(np.stack(crops), size)), 0, 255).astype(np.uint8)


def _box_of(path: Path, rgb: np.ndarray, box: Box | None) -> Box:
    """:func:`face_box` of a decoded (H, W, 3) frame; a box that does not fit names the file."""
    try:
        return face_box(rgb.shape[1], rgb.shape[0], box)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def _start(stream) -> float:  # noqa: ANN001 (a PyAV stream)
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _read_container(path: Path, sample_rate: int, box: Box | None,
                    size: int) -> AVClip:
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            if not container.streams.audio:
                raise DataError(f"{path}: no audio track (the clip needs its sound)")
            vs, aus = container.streams.video[0], container.streams.audio[0]
            fps = float(vs.average_rate or vs.guessed_rate or 0.0)
            native = int(aus.rate or aus.codec_context.sample_rate or 0)
            if native <= 0:
                raise DataError(f"{path}: audio track has no sample rate")
            offset = _start(aus) - _start(vs)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=native)
            crops: list[np.ndarray] = []
            chunks: list[np.ndarray] = []
            used: Box | None = None
            for packet in container.demux(vs, aus):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        rgb = frame.to_ndarray(format="rgb24")
                        if used is None:
                            used = _box_of(path, rgb, box)
                        left, top, right, bottom = used
                        crops.append(rgb[top:bottom, left:right])
                    else:
                        chunks += [g.to_ndarray().reshape(-1) for g in resampler.resample(frame)]
            chunks += [g.to_ndarray().reshape(-1) for g in resampler.resample(None)]
    except DataError:
        raise
    except Exception as e:  # PyAV raises its own error types (InvalidDataError, FFmpegError...), OSError
        raise DataError(f"{path}: cannot decode clip ({e.__class__.__name__}: {e})") from e
    if not crops or fps <= 0:
        raise DataError(f"{path}: no video frames (or no frame rate)")
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise DataError(f"{path}: audio track is empty")
    if not np.all(np.isfinite(wave)):
        raise DataError(f"{path}: audio track holds NaN or infinite samples")
    shift = int(round(offset * native))  # audio starting after the video: pad; before: cut
    wave = np.concatenate([np.zeros(shift, np.float32), wave]) if shift > 0 else wave[-shift:]
    if native != sample_rate:
        import librosa

        wave = librosa.resample(wave, orig_sr=native, target_sr=sample_rate)
    assert used is not None
    return AVClip(_crop_resize(crops, size), np.clip(wave, -1.0, 1.0).astype(np.float32), fps, used)


def _read_frame_folder(src: AVSource, sample_rate: int, box: Box | None,
                       size: int) -> AVClip:
    from PIL import Image

    folder = src.frames
    assert folder is not None
    if src.wav is None:
        wavs = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".wav")
        raise DataError(f"{folder}: a frame folder needs exactly one .wav (the clip's sound), found "
                        f"{len(wavs)}{': ' + ', '.join(wavs) if wavs else ''}")
    crops: list[np.ndarray] = []
    used: Box | None = None
    shape0: tuple[int, ...] | None = None
    for p in _frame_files(folder):
        try:
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ...
            raise DataError(f"{p}: cannot read frame ({e.__class__.__name__}: {e})") from e
        if shape0 is None:
            shape0, used = rgb.shape, _box_of(p, rgb, box)
        elif rgb.shape != shape0:
            raise DataError(f"{p}: frame is {rgb.shape[1]} x {rgb.shape[0]}, the clip's first frame is "
                            f"{shape0[1]} x {shape0[0]}")
        left, top, right, bottom = used  # type: ignore[misc]
        crops.append(rgb[top:bottom, left:right])
    wave = load_waveform(src.wav, sample_rate)
    assert used is not None
    return AVClip(_crop_resize(crops, size), wave, FRAMES_FPS, used)


def read_av_clip(src: AVSource, sample_rate: int, box: Box | None = None,
                 size: int = FACE_SIZE) -> AVClip:
    """Decode one clip: RGB face crops (``box``, see :func:`face_box`, area-resampled to
    ``size`` x ``size``) and its sound, mono, resampled (librosa) to ``sample_rate`` and shifted
    so that sample 0 is the time of video frame 0 (containers whose audio starts later or earlier
    than the video). Any problem is a DataError naming the file: no audio track, no video
    stream, an undecodable file, an unreadable frame, a frame folder without exactly one wav."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if src.video is not None:
        return _read_container(src.video, sample_rate, box, size)
    return _read_frame_folder(src, sample_rate, box, size)
