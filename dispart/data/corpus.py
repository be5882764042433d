"""Spoken-digit corpora: find the utterances of a corpus and read their waveforms.

Supported layouts (see :func:`scan_corpus`):

* ``fsdd``: Free Spoken Digit Dataset, flat folder of ``{digit}_{speaker}_{take}.wav``
  (the folder itself or its ``recordings/`` sub-folder).
* ``audiomnist``: AudioMNIST, ``data/{speaker_id}/{digit}_{speaker_id}_{index}.wav``.
* ``csv``: a manifest with columns ``label,speaker,path`` (optional ``take``), the way to use
  any other corpus, e.g. TIDIGITS isolated digits (see :func:`read_manifest`); a speech-commands
  split file with columns ``file,class`` (Arabic Speech Commands' ``test.csv``) is read too.

Folders in the speech-commands layout (``{word}/{speaker}_{tag}_{n}.wav``) are scanned by
:mod:`dispart.data.speech_commands`, which uses :data:`SPEECH_COMMANDS_NAME` from here.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dispart.errors import DataError

__all__ = [
    "LAYOUTS",
    "SPEECH_COMMANDS_NAME",
    "Utterance",
    "load_waveform",
    "read_manifest",
    "scan_audiomnist",
    "scan_corpus",
    "scan_fsdd",
]

LAYOUTS = ("auto", "fsdd", "audiomnist", "csv")

# {digit}_{speaker}_{take}.wav ; the speaker name may not contain "_".
_NAME_RE = re.compile(r"^(?P<label>\d+)_(?P<speaker>[^_]+)_(?P<take>\d+)\.wav$", re.IGNORECASE)
SPEECH_COMMANDS_NAME = re.compile(r"^(?P<speaker>[^_]+)_(?P<tag>.+)_(?P<take>\d+)\.wav$", re.IGNORECASE)
"""A speech-commands file name ``{speaker}_{tag}_{n}.wav`` (Google: ``{hash}_nohash_{n}``, Arabic:
``{id}_NO_{round}``): the speaker may not contain "_", the tag may."""


@dataclass(frozen=True)
class Utterance:
    """One recording: ``label`` is the class name as a string (e.g. ``"3"``)."""

    path: Path
    label: str
    speaker: str
    take: str = ""


def _stat_kind(path: Path) -> str | None:
    """Return "file", "dir" or None (missing, or a name the OS refuses: too long, NUL byte)."""
    try:
        return "file" if path.is_file() else "dir" if path.is_dir() else None
    except (OSError, ValueError):
        return None


def _sorted(utts: list[Utterance]) -> list[Utterance]:
    return sorted(utts, key=lambda u: str(u.path))


def _wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")


def _parse_name(path: Path) -> re.Match[str]:
    m = _NAME_RE.match(path.name)
    if m is None:
        raise DataError(f"{path}: file name does not match '{{digit}}_{{speaker}}_{{take}}.wav'")
    return m


def scan_fsdd(root: str | Path) -> list[Utterance]:
    """Utterances of an FSDD folder (``root`` or ``root/recordings``), sorted by path.

    Every ``.wav`` must be named ``{digit}_{speaker}_{take}.wav``; other files are ignored.
    """
    root = Path(root)
    if (root / "recordings").is_dir():
        root = root / "recordings"
    if not root.is_dir():
        raise DataError(f"{root}: FSDD folder does not exist")
    utts = []
    for p in _wavs(root):
        m = _parse_name(p)
        utts.append(Utterance(p, str(int(m["label"])), m["speaker"], m["take"]))
    if not utts:
        raise DataError(f"{root}: no .wav files found (FSDD layout)")
    return _sorted(utts)


def scan_audiomnist(root: str | Path) -> list[Utterance]:
    """Utterances of an AudioMNIST folder (``root`` or ``root/data``), sorted by path.

    Layout: ``{speaker_id}/{digit}_{speaker_id}_{index}.wav``; the speaker in the file name
    must match its folder.
    """
    root = Path(root)
    if (root / "data").is_dir():
        root = root / "data"
    if not root.is_dir():
        raise DataError(f"{root}: AudioMNIST folder does not exist")
    utts = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for p in _wavs(spk_dir):
            m = _parse_name(p)
            if m["speaker"] != spk_dir.name:
                raise DataError(
                    f"{p}: speaker '{m['speaker']}' in the file name differs from its "
                    f"folder '{spk_dir.name}'"
                )
            utts.append(Utterance(p, str(int(m["label"])), m["speaker"], m["take"]))
    if not utts:
        raise DataError(f"{root}: no speaker folders with .wav files found (AudioMNIST layout)")
    return _sorted(utts)


def read_manifest(csv_path: str | Path) -> list[Utterance]:
    """Utterances listed in a CSV manifest, sorted by path.

    The header must contain ``label,speaker,path`` (any order, extra columns ignored) and may
    contain ``take``. Relative paths are relative to the CSV's folder. This is the way to use
    TIDIGITS isolated digits (licensed, LDC93S10) or any other corpus: convert it to wav (or any
    format soundfile reads) and write one row per recording, e.g.::

        label,speaker,path
        3,ae,tidigits/train/man/ae/3a.wav

    A header with ``file,class`` and no ``path`` is a speech-commands split file (Arabic Speech
    Commands' ``train.csv`` / ``val.csv`` / ``test.csv``): the label is ``class`` (the word, e.g.
    ``eight``), the speaker and take come from the file name ``{speaker}_{tag}_{n}.wav``.

    Every problem is one DataError naming the CSV, the line and the field.
    """
    csv_path = Path(csv_path)
    if _stat_kind(csv_path) != "file":
        raise DataError(f"{csv_path}: manifest file does not exist")
    utts: list[Utterance] = []
    reader = csv.DictReader(io.StringIO(_read_text(csv_path), newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        row_of = _split_file_row if _is_split_file(header) else _manifest_row
        if row_of is _manifest_row:
            _check_header(csv_path, header)
        for row in reader:
            utts.append(row_of(csv_path, reader.line_num, row))
    except csv.Error as e:  # the record being parsed starts on the next line
        raise DataError(f"{csv_path}, line {reader.line_num + 1}: malformed CSV ({e})") from e
    if not utts:
        raise DataError(f"{csv_path}: manifest has no rows")
    return _sorted(utts)


def _read_text(csv_path: Path) -> str:
    """The manifest as text (UTF-8, an Excel BOM allowed); errors name the file and line."""
    try:
        data = csv_path.read_bytes()
    except OSError as e:
        raise DataError(f"{csv_path}: cannot read manifest ({e.__class__.__name__}: {e})") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{csv_path}, line {line}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def _check_header(csv_path: Path, header: list[str]) -> None:
    for col in ("label", "speaker", "path"):
        if col not in header:
            raise DataError(
                f"{csv_path}, line 1: header lacks column '{col}' (has {header}); "
                "expected 'label,speaker,path' (or a speech-commands split file 'file,class')"
            )


def _is_split_file(header: list[str]) -> bool:
    """A speech-commands split file (``file,class``), not a ``label,speaker,path`` manifest."""
    return "file" in header and "class" in header and "path" not in header


def _fields(csv_path: Path, line: int, row: dict[str | None, Any], cols: tuple[str, ...]) -> dict[str, str]:
    """The stripped values of ``cols`` in one CSV row; a missing or empty one, or cells beyond the
    header, is a DataError naming the CSV and line."""
    extra = [c for c in row.get(None) or [] if c.strip()]  # DictReader: cells beyond the header
    if extra:
        raise DataError(f"{csv_path}, line {line}: {len(extra)} more non-empty cell(s) than the "
                        f"header has columns (an unquoted comma?)")
    values = {}
    for col in cols:
        v = row.get(col)
        if v is None or not v.strip():
            raise DataError(f"{csv_path}, line {line}: field '{col}' is empty or missing")
        values[col] = v.strip()
    return values


def _existing_file(csv_path: Path, line: int, col: str, value: str) -> Path:
    p = Path(value)
    if not p.is_absolute():
        p = csv_path.parent / p
    if _stat_kind(p) != "file":
        raise DataError(f"{csv_path}, line {line}: field '{col}': file {p} does not exist")
    return p


def _manifest_row(csv_path: Path, line: int, row: dict[str | None, Any]) -> Utterance:
    """One manifest row as an Utterance; the path must name an existing file."""
    values = _fields(csv_path, line, row, ("label", "speaker", "path"))
    p = _existing_file(csv_path, line, "path", values["path"])
    take = (row.get("take") or "").strip()
    return Utterance(p, values["label"], values["speaker"], take)


def _split_file_row(csv_path: Path, line: int, row: dict[str | None, Any]) -> Utterance:
    """One ``file,class`` row of a speech-commands split file as an Utterance (speaker and take
    from the file name); the file must exist."""
    values = _fields(csv_path, line, row, ("file", "class"))
    p = _existing_file(csv_path, line, "file", values["file"])
    m = SPEECH_COMMANDS_NAME.match(p.name)
    if m is None:
        raise DataError(f"{csv_path}, line {line}: field 'file': {p.name} does not match "
                        f"'{{speaker}}_{{tag}}_{{n}}.wav' (the speaker comes from the file name)")
    return Utterance(p, values["class"], m["speaker"], m["take"])


def _detect_layout(folder: Path) -> str:
    for cand in (folder / "recordings", folder):
        if cand.is_dir() and _wavs(cand):
            return "fsdd"
    for cand in (folder / "data", folder):
        if cand.is_dir() and any(_wavs(d) for d in cand.iterdir() if d.is_dir()):
            return "audiomnist"
    raise DataError(
        f"{folder}: cannot detect the corpus layout (no flat '{{digit}}_{{speaker}}_{{take}}.wav' "
        "files and no speaker sub-folders with .wav files); pass a CSV manifest instead"
    )


def scan_corpus(source: str | Path, layout: str = "auto") -> list[Utterance]:
    """Utterances of a corpus folder or CSV manifest, sorted by path.

    ``layout`` is one of ``auto``, ``fsdd``, ``audiomnist``, ``csv``. ``auto`` picks ``csv`` for a
    ``.csv`` file, ``fsdd`` for a flat folder of wavs (or one with ``recordings/``) and
    ``audiomnist`` for speaker sub-folders of wavs.
    """
    source = Path(source)
    if layout not in LAYOUTS:
        raise DataError(f"unknown corpus layout '{layout}'; expected one of {list(LAYOUTS)}")
    kind = _stat_kind(source)
    if kind is None:
        raise DataError(f"{source}: corpus source does not exist")
    if layout == "auto":
        if kind == "file":
            if source.suffix.lower() != ".csv":
                raise DataError(f"{source}: a corpus file must be a .csv manifest")
            layout = "csv"
        else:
            layout = _detect_layout(source)
    if layout == "csv":
        utts = read_manifest(source)
    elif layout == "fsdd":
        utts = scan_fsdd(source)
    else:
        utts = scan_audiomnist(source)
    if not utts:
        raise DataError(f"{source}: no utterances found")
    return _sorted(utts)


def load_waveform(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read an audio file as a float32 mono waveform of shape (N,), values in [-1, 1].

    Multi-channel audio is averaged to mono; a file at another rate is resampled to
    ``sample_rate`` (Hz) with ``librosa.resample``. Samples are clipped to [-1, 1].
    """
    import soundfile as sf

    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError...)
        raise DataError(f"{path}: cannot read audio ({e})") from e
    if data.size == 0:
        raise DataError(f"{path}: audio file is empty (0 samples)")
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: audio contains NaN or infinite samples")
    wave = data.mean(axis=1, dtype=np.float32)
    if sr != sample_rate:
        import librosa

        wave = librosa.resample(wave, orig_sr=sr, target_sr=sample_rate)
        if wave.size == 0:
            raise DataError(f"{path}: audio is empty after resampling {sr} -> {sample_rate} Hz")
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)
