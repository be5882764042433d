"""Speech of many speakers as fixed-length segments: the DSAE paper's TIMIT setup (section 4.2).

Each utterance's log-magnitude spectrum (:mod:`dispart.features.spectrum`, one frame every 10 ms)
is cut into non-overlapping segments of ``SEGMENT_FRAMES`` = 20 frames (200 ms, T = 20); the
frames past the last whole segment are dropped, and an utterance shorter than one segment is left
out (listed in ``Corpus.skipped``). Every segment is one example of the "speech" modality (kind
"sequence", (n_bins,) frames at 100 frames/s) with the word as label, the speaker as speaker and
``meta["utterance"]`` (its file) / ``meta["segment"]`` (its index in the utterance), so evaluation
can pool segments back into utterances (speaker verification).

Corpora and splits (``data.audio``), always speaker-disjoint:

* speech-commands layout (``{word}/{speaker}_{tag}_{n}.wav``; Arabic Speech Commands, Google Speech
  Commands), the ten digit words: ``data.split=official`` takes the publishers' split (Arabic:
  train/val/test CSVs, 17/5/5 speakers; Google: its validation/testing lists), ``speakers:A,B``
  holds those speakers out instead. The "val" split is kept as a third split when non-empty.
* FSDD / AudioMNIST / CSV manifest (``data.layout``): ``data.split`` must be ``speakers:A,B``
  (FSDD's official split has every speaker on both sides).

Bins: ``data.sample_rate`` 16000 -> 200 (the paper's), 8000 (FSDD's rate) -> 100 (same 40 Hz bins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dispart.batches.corpus import Corpus, audio_source, cache_dir, register_loader
from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.data.config import DataConfig
from dispart.data.corpus import Utterance, scan_corpus
from dispart.data.speech_commands import (
    DIGIT_WORDS,
    is_speech_commands,
    scan_speech_commands,
    split_speech_commands,
)
from dispart.data.splits import leave_speakers_out, parse_split
from dispart.errors import ConfigError, DataError
from dispart.features.spectrum import SpectrumConfig, compute_spectra

__all__ = ["MODALITY", "SEGMENT_FRAMES", "cut_segments", "load_segments", "segment_set", "segments_spec",
           "spectrum_config", "split_corpus"]

MODALITY = "speech"
SEGMENT_FRAMES = 20  # 200 ms of 10 ms frames (the paper's T)


def cut_segments(feats: np.ndarray, length: int = SEGMENT_FRAMES) -> np.ndarray:
    """(T, D) frames -> (T // length, length, D) non-overlapping segments (the remainder dropped)."""
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise ValueError(f"cut_segments expects (T, D) frames, got shape {feats.shape}")
    if length < 1:
        raise ValueError(f"segment length must be >= 1, got {length}")
    n = len(feats) // length
    return feats[: n * length].reshape(n, length, feats.shape[1])


def spectrum_config(cfg: DataConfig) -> SpectrumConfig:
    """The spectrum settings of a data config: its sample rate and VAD threshold."""
    return SpectrumConfig(sample_rate=cfg.sample_rate, vad_top_db=cfg.vad_top_db)


def segments_spec(scfg: SpectrumConfig, name: str = MODALITY) -> ModalitySpec:
    """A "sequence" modality of (n_bins,) log-magnitude frames, 1000 / hop_ms frames per second."""
    return ModalitySpec(name, "sequence", (scfg.n_bins,), frame_rate=1000.0 / scfg.hop_ms)


def segment_set(utts: list[Utterance], feats: list[np.ndarray], length: int = SEGMENT_FRAMES
                ) -> tuple[ModalitySet, list[tuple[str, str]]]:
    """The segments of ``utts`` as one set (id ``{path}#{k}``) and the utterances too short for one."""
    examples, labels, ids, speakers, paths, seg_idx = [], [], [], [], [], []
    short = []
    for u, f in zip(utts, feats, strict=True):
        segs = cut_segments(f, length)
        if len(segs) == 0:
            short.append((str(u.path), f"{len(f)} frames after VAD, shorter than one {length}-frame segment"))
        for k, s in enumerate(segs):
            examples.append(np.ascontiguousarray(s, dtype=np.float32))
            labels.append(u.label)
            ids.append(f"{u.path}#{k}")
            speakers.append(u.speaker)
            paths.append(str(u.path))
            seg_idx.append(k)
    return ModalitySet(examples, labels, ids, speakers, paths,
                       {"utterance": list(paths), "segment": seg_idx}), short


def split_corpus(source: Path, cfg: DataConfig) -> dict[str, list[Utterance]]:
    """The utterances of ``source`` by split ("train", "val", "test"), speaker-disjoint (see module)."""
    held_out = parse_split(cfg.split)
    if is_speech_commands(source):
        utts = scan_speech_commands(source, DIGIT_WORDS)
        return split_speech_commands(source, utts, held_out)
    if held_out is None:
        raise ConfigError(f"data.split=official: {source} is not in the speech-commands layout, and its "
                          f"official split (if any) is not speaker-disjoint; hold speakers out with "
                          f"data.split=speakers:A,B")
    train, test = leave_speakers_out(scan_corpus(source, layout=cfg.layout), held_out)
    return {"train": train, "val": [], "test": test}


def load_segments(source: str | Path, cfg: DataConfig, progress: bool = False,
                  length: int = SEGMENT_FRAMES) -> Corpus:
    """Speech of ``source`` as 200 ms spectrum segments, split by speaker (see the module docstring)."""
    source = Path(source).expanduser()
    by_split = split_corpus(source, cfg)
    scfg = spectrum_config(cfg)
    all_utts = [u for us in by_split.values() for u in us]
    if progress:
        print(f"speech segments: spectra of {len(all_utts)} files in {source}", flush=True)
    kept, feats, skipped = compute_spectra(all_utts, scfg, cache_dir(cfg), on_error=cfg.on_error)
    by_path = {str(u.path): f for u, f in zip(kept, feats, strict=True)}
    sets: dict[str, ModalitySet] = {}
    for split, us in by_split.items():
        us = [u for u in us if str(u.path) in by_path]
        if split == "val" and not us:
            continue
        mset, short = segment_set(us, [by_path[str(u.path)] for u in us], length)
        skipped += short
        if len(mset) == 0:
            raise DataError(f"{source}: no {length}-frame segment in the {split} split "
                            f"({len(us)} usable files)")
        sets[split] = mset
    return Corpus({MODALITY: sets}, {MODALITY: segments_spec(scfg)}, pairing="example",
                  normalize=(MODALITY,), skipped=skipped)


@register_loader("speech_segments")
def load_speech_segments(cfg: DataConfig, progress: bool = True) -> Corpus:
    """``data.audio`` (a speech-commands folder, FSDD, AudioMNIST or CSV; "sample": the embedded
    FSDD sample) -> "speech" 200 ms segments (:func:`load_segments`)."""
    return load_segments(audio_source(cfg), cfg, progress)
