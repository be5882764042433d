"""Spoken-digit corpora: find the utterances of a corpus and read their waveforms.

Supported layouts (see :func:`scan_corpus`):

* ``fsdd``: Free Spoken Digit Dataset, flat folder of ``{digit}_{speaker}_{take}.wav``
  (the folder itself or its ``recordings/`` sub-folder).
* ``audiomnist``: AudioMNIST, ``data/{speaker_id}/{digit}_{speaker_id}_{index}.wav``.
* ``csv``: a manifest with columns ``label,speaker,path`` (optional ``take``), the way to use
  any other corpus, e.g. TIDIGITS isolated digits (see :func:`read_manifest`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dispart.errors import DataError

__all__ = [
    "LAYOUTS",
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


@dataclass(frozen=True)
class Utterance:
    """One recording: ``label`` is the class name as a string (e.g. ``"3"``)."""

    path: Path
    label: str
    speaker: str
    take: str = ""


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
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest file does not exist")
    base = csv_path.parent
    utts = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for col in ("label", "speaker", "path"):
            if col not in header:
                raise DataError(
                    f"{csv_path}, line 1: header lacks column '{col}' (has {header}); "
                    "expected 'label,speaker,path'"
                )
        for row in reader:
            line = reader.line_num
            values = {}
            for col in ("label", "speaker", "path"):
                v = row.get(col)
                if v is None or not v.strip():
                    raise DataError(f"{csv_path}, line {line}: field '{col}' is empty or missing")
                values[col] = v.strip()
            p = Path(values["path"])
            if not p.is_absolute():
                p = base / p
            if not p.is_file():
                raise DataError(f"{csv_path}, line {line}: field 'path': file {p} does not exist")
            take = (row.get("take") or "").strip()
            utts.append(Utterance(p, values["label"], values["speaker"], take))
    if not utts:
        raise DataError(f"{csv_path}: manifest has no rows")
    return _sorted(utts)


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
    if not source.exists():
        raise DataError(f"{source}: corpus source does not exist")
    if layout == "auto":
        if source.is_file():
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
