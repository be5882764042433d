"""Keyword corpora in the speech-commands folder layout: ``{word}/{speaker}_{tag}_{n}.wav``.

Two corpora use it:

* Google Speech Commands (Warden 2018): ``{word}/{speakerhash}_nohash_{n}.wav`` under the root,
  ``_background_noise_/`` beside the words, and the official split as two lists of
  ``{word}/{file}.wav`` paths, ``validation_list.txt`` and ``testing_list.txt`` (everything else
  is train). The split is speaker-disjoint (it hashes the speaker id).
* Arabic Speech Commands (Ghandoura et al. 2021): ``dataset/{word}/{speaker}_NO_{round}.wav`` and
  the publishers' speaker-disjoint split as ``train.csv``, ``val.csv``, ``test.csv`` with columns
  ``file,class`` (``file`` relative to the root, e.g. ``dataset/eight/00000014_NO_01.wav``).

Every utterance becomes a :class:`~dispart.data.corpus.Utterance` whose label is the word (the
folder name), speaker the part of the file name before the first ``_`` and take the trailing number;
:func:`digit_labels` relabels the digit words "0" ... "9" (MNIST's labels), as the ``speech`` loader
does to pair them with images.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from dispart.data.corpus import SPEECH_COMMANDS_NAME, Utterance
from dispart.data.splits import leave_speakers_out
from dispart.errors import DataError

__all__ = [
    "DIGIT_WORDS", "SPLIT_CSVS", "SPLIT_LISTS", "dataset_dir", "digit_labels", "is_speech_commands",
    "official_split", "read_split_csv", "read_split_list", "scan_speech_commands", "split_speech_commands",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_CSVS = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}  # Arabic Speech Commands
SPLIT_LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}  # Google Speech Commands

# {speaker}_{tag}_{n}.wav: the speaker may not contain "_", the tag ("nohash", "NO") may.
_NAME_RE = SPEECH_COMMANDS_NAME


def _is_wav(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() == ".wav"


def _word_dirs(folder: Path) -> list[Path]:
    """Sub-folders that hold words: not hidden, not ``_background_noise_``-like."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name[0] not in "._")


def dataset_dir(root: str | Path) -> Path:
    """The folder holding the word folders: ``root/dataset`` when it exists, else ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: speech-commands folder does not exist")
    return root / "dataset" if (root / "dataset").is_dir() else root


def is_speech_commands(root: str | Path) -> bool:
    """True when ``root`` looks like the speech-commands layout: it has the publishers' split files,
    or (``root`` or ``root/dataset``) has two or more word folders, none named by digits only
    (AudioMNIST's speaker folders are), whose first .wav is named ``{speaker}_{tag}_{n}.wav``.
    False for FSDD (one ``recordings/`` folder), AudioMNIST, a file or a missing path."""
    try:
        root = Path(root).expanduser()
        if all((root / f).is_file() for f in SPLIT_CSVS.values()) or \
                any((root / f).is_file() for f in SPLIT_LISTS.values()):
            return True
        dirs = _word_dirs(dataset_dir(root))
        if len(dirs) < 2 or any(d.name.isdigit() for d in dirs):
            return False
        wav = next((p for p in sorted(dirs[0].iterdir()) if _is_wav(p)), None)
        return wav is not None and _NAME_RE.match(wav.name) is not None
    except (DataError, OSError):
        return False


def scan_speech_commands(root: str | Path, words: Sequence[str] | None = DIGIT_WORDS) -> list[Utterance]:
    """Utterances of ``words`` (None: every word folder) under ``root``, sorted by path.

    Raises DataError naming the folder for a missing root, a requested word without a folder
    (listing the word folders present), a word folder without .wav files, and naming the file
    for a .wav whose name is not ``{speaker}_{tag}_{n}.wav``. Other files are ignored.
    """
    folder = dataset_dir(root)
    present = [d.name for d in _word_dirs(folder)]
    if words is None:
        words = present
    if not words:
        raise DataError(f"{folder}: no word folders found (speech-commands layout {{word}}/*.wav)")
    utts: list[Utterance] = []
    for word in words:
        wdir = folder / word
        if word not in present:
            raise DataError(f"{wdir}: no folder for word {word!r} (word folders here: {present})")
        wavs = sorted(p for p in wdir.iterdir() if _is_wav(p))
        if not wavs:
            raise DataError(f"{wdir}: word folder has no .wav files")
        for p in wavs:
            m = _NAME_RE.match(p.name)
            if m is None:
                raise DataError(f"{p}: file name does not match '{{speaker}}_{{tag}}_{{n}}.wav'")
            utts.append(Utterance(p, word, m["speaker"], m["take"]))
    return sorted(utts, key=lambda u: str(u.path))


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read split file ({e.__class__.__name__}: {e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def read_split_csv(csv_path: str | Path) -> list[tuple[Path, str]]:
    """``(absolute file, class)`` rows of a publishers' ``file,class`` CSV (paths relative to its folder).

    Every problem (missing file, header without ``file``/``class``, an empty field, a class that
    is not the file's word folder) is one DataError naming the CSV and line.
    """
    csv_path = Path(csv_path)
    reader = csv.DictReader(io.StringIO(_read_text(csv_path), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    if "file" not in header or "class" not in header:
        raise DataError(f"{csv_path}, line 1: header must have columns 'file,class', has {header}")
    rows = []
    try:
        for row in reader:
            line = reader.line_num
            file, cls = (row.get("file") or "").strip(), (row.get("class") or "").strip()
            if not file or not cls:
                raise DataError(f"{csv_path}, line {line}: field 'file' or 'class' is empty")
            p = csv_path.parent / file
            if p.parent.name != cls:
                raise DataError(f"{csv_path}, line {line}: class {cls!r} differs from the word folder "
                                f"{p.parent.name!r} of {file}")
            rows.append((p.absolute(), cls))
    except csv.Error as e:
        raise DataError(f"{csv_path}, line {reader.line_num + 1}: malformed CSV ({e})") from e
    return rows


def read_split_list(list_path: str | Path) -> list[Path]:
    """Absolute files of a Google ``{word}/{file}.wav`` list (one per line, relative to its folder)."""
    list_path = Path(list_path)
    return [(list_path.parent / s.strip()).absolute()
            for s in _read_text(list_path).splitlines() if s.strip()]


def official_split(root: str | Path, utts: Sequence[Utterance]) -> dict[str, list[Utterance]] | None:
    """The publishers' split of ``utts`` as {"train", "val", "test"} -> utterances (order kept), or
    None when ``root`` has neither ``train.csv``/``val.csv``/``test.csv`` nor Google's lists.

    Arabic CSVs: rows of words not scanned are ignored; a scanned file in no CSV or in two, or a
    CSV row naming a file of a scanned word that does not exist, is a DataError naming it. Google
    lists: listed files are val/test, the rest train. Either way the splits must not share a
    speaker (DataError naming one).
    """
    root = Path(root).expanduser()
    where: dict[Path, str] = {}
    if all((root / f).is_file() for f in SPLIT_CSVS.values()):
        words = {u.label for u in utts}
        for split, name in SPLIT_CSVS.items():
            for p, cls in read_split_csv(root / name):
                if cls not in words:
                    continue
                if p in where:
                    raise DataError(f"{root / name}: {p} is listed in {SPLIT_CSVS[where[p]]} too")
                where[p] = split
        scanned = {u.path.absolute() for u in utts}
        ghost = sorted(set(where) - scanned)
        if ghost:
            raise DataError(f"{root / SPLIT_CSVS[where[ghost[0]]]}: lists {ghost[0]}, which does not "
                            f"exist ({len(ghost)} such rows)")
        unlisted = sorted(scanned - set(where))
        if unlisted:
            raise DataError(f"{unlisted[0]}: file is in none of {list(SPLIT_CSVS.values())} of {root} "
                            f"({len(unlisted)} such files)")
    elif any((root / f).is_file() for f in SPLIT_LISTS.values()):
        for split, name in SPLIT_LISTS.items():
            if (root / name).is_file():
                for p in read_split_list(root / name):
                    where[p] = split
    else:
        return None
    out: dict[str, list[Utterance]] = {"train": [], "val": [], "test": []}
    for u in utts:
        out[where.get(u.path.absolute(), "train")].append(u)
    _check_disjoint(root, out)
    return out


def _check_disjoint(root: Path, splits: dict[str, list[Utterance]]) -> None:
    seen: dict[str, str] = {}
    for split, us in splits.items():
        for spk in sorted({u.speaker for u in us}):
            if spk in seen:
                raise DataError(f"{root}: speaker {spk!r} is in both the {seen[spk]} and the {split} "
                                f"split; the split must be speaker-disjoint")
            seen[spk] = split


def split_speech_commands(root: str | Path, utts: Sequence[Utterance],
                          test_speakers: Sequence[str] | None = None) -> dict[str, list[Utterance]]:
    """Speaker-disjoint {"train", "val", "test"} split: the publishers' when ``root`` has one and
    ``test_speakers`` is None, else those speakers held out as test (val empty).

    DataError when neither is available (the message says how to choose test speakers).
    """
    if test_speakers is None:
        split = official_split(root, utts)
        if split is None:
            raise DataError(f"{root}: no publishers' split ({list(SPLIT_CSVS.values())} or "
                            f"{list(SPLIT_LISTS.values())}); choose test speakers (data.split=speakers:A,B)")
        return split
    train, test = leave_speakers_out(utts, test_speakers)
    return {"train": train, "val": [], "test": test}


def digit_labels(utts: Sequence[Utterance]) -> list[Utterance]:
    """``utts`` labelled by digit ("0" ... "9", MNIST's labels) instead of digit word ("zero" ...
    "nine"), order kept; a label that is not a digit word is a DataError naming the file."""
    out = []
    for u in utts:
        if u.label not in DIGIT_WORDS:
            raise DataError(f"{u.path}: word {u.label!r} is not a digit word {list(DIGIT_WORDS)}")
        out.append(replace(u, label=str(DIGIT_WORDS.index(u.label))))
    return out
