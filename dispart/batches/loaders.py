"""Corpus loaders: a new corpus plugs in as one function in :data:`LOADERS`, not as new fields.

A loader takes the DataConfig and returns a :class:`Corpus`: per modality and split the raw
(not yet normalised) examples as :class:`~dispart.batches.sets.ModalitySet`, a
:class:`~dispart.batches.modality.ModalitySpec` per modality, and how its modalities pair
("example": they are modalities of the same examples, joined by id; "label": only by class).
:func:`dispart.batches.pipeline.load_experiment_data` merges the corpora of one experiment and
standardises the modalities a corpus lists in ``normalize`` with statistics of its train split.

Built in: ``speech`` (FSDD / AudioMNIST / CSV manifest / speech-commands folder of spoken digits
-> "audio" log-Mel frames), ``mnist`` ("image" and "label"), ``grid`` (GRID audio-visual clips ->
"audio" log-Mel frames and "video" grey frames at the video's frame rate, paired by example); in
modules of their own: ``sprites`` (batches/sprites.py), ``speech_segments`` (batches/segments.py),
``ball`` (batches/ball.py). Add one in a new module and import it at the end of this file::

    from dispart.batches.corpus import Corpus, register_loader

    @register_loader("mycorpus")
    def load_mycorpus(cfg: DataConfig, progress: bool) -> Corpus: ...
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from dispart.batches.corpus import (  # noqa: F401 (re-exported: loaders are registered through here)
    LOADERS,
    Corpus,
    Loader,
    audio_source,
    cache_dir,
    fbank_config,
    get_loader,
    image_source,
    register_loader,
    speech_source,
)
from dispart.batches.labels import binarize
from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ImageSet, ModalitySet, SpeechSet
from dispart.data.config import BINARIZE, DataConfig
from dispart.data.corpus import Utterance, scan_corpus
from dispart.data.grid import GRID_TEST_EVERY, grid_split, read_align, read_clip, scan_grid, sentence
from dispart.data.mnist import N_CLASSES, load_mnist
from dispart.data.speech_commands import (
    digit_labels,
    is_speech_commands,
    scan_speech_commands,
    split_speech_commands,
)
from dispart.data.splits import parse_split, split_utterances
from dispart.errors import ConfigError, DataError
from dispart.features.cache import compute_features
from dispart.features.fbank import FbankConfig, fft_length, log_mel

__all__ = [
    "BINARIZE", "LOADERS", "Corpus", "Loader", "audio_source", "binarize_images", "fbank_config",
    "get_loader", "grid_fbank", "image_source", "load_grid", "load_images", "register_loader",
    "speech_features", "speech_splits",
]


# --------------------------------------------------------------------------- spoken digits

def speech_features(
    utts: list[Utterance], cfg: DataConfig, progress: bool = True
) -> tuple[list[Utterance], list[np.ndarray], list[tuple[str, str]]]:
    """Raw log-Mel features of ``utts`` (cached); returns kept utterances, features, skips."""
    fs = compute_features(utts, fbank_config(cfg), cache_dir(cfg), on_error=cfg.on_error,
                          progress=progress)
    return fs.utterances, fs.features, fs.skipped


def _raw_speech_set(utts: list[Utterance], feats: list[np.ndarray]) -> SpeechSet:
    return SpeechSet(feats, [u.label for u in utts], [u.speaker for u in utts], [str(u.path) for u in utts])


def audio_spec(fbank: FbankConfig, name: str = "audio") -> ModalitySpec:
    """A log-Mel modality: (n_mels,) frames, ``1000 / hop_ms`` frames per second."""
    return ModalitySpec(name, "sequence", (fbank.n_mels,), frame_rate=1000.0 / fbank.hop_ms)


def speech_splits(cfg: DataConfig) -> dict[str, list[Utterance]]:
    """The spoken digits of ``data.audio`` by split: {"train", "test"} and, for a speech-commands
    folder whose publishers' split has one, "val".

    * A folder in the speech-commands layout (``{word}/{speaker}_{tag}_{n}.wav``: Arabic or Google
      Speech Commands; found with ``data.layout=auto``): the ten digit words, labelled "0" ... "9"
      like MNIST. ``data.split=official`` is the publishers' speaker-disjoint split
      (:func:`~dispart.data.speech_commands.split_speech_commands`; Arabic: train/val/test CSVs).
      Its validation speakers stay a split of their own, "val": the pipeline never trains on it,
      so choices (epochs, features) can be made on speakers that are neither trained on nor the
      test speakers. ``speakers:A,B`` holds those speakers out as test (no "val").
    * FSDD / AudioMNIST / CSV manifest (``data.layout``): ``official`` (FSDD takes 0-4 test) or
      ``speakers:A,B`` (:func:`~dispart.data.splits.split_utterances`).
    * ``data.audio_extra``: a second corpus (auto layout, its official split) whose splits join
      these; a speaker name in both corpora is a ``ConfigError`` (the speaker is the style factor).
    """
    splits = _corpus_splits(audio_source(cfg), cfg.layout, cfg.split)
    if not cfg.audio_extra:
        return splits
    extra_source = speech_source(cfg.audio_extra)
    extra = _corpus_splits(extra_source, "auto", "official")
    speakers = {u.speaker for us in splits.values() for u in us}
    shared = sorted(speakers & {u.speaker for us in extra.values() for u in us})
    if shared:
        raise ConfigError(f"data.audio_extra: {extra_source} has speakers of data.audio too: {shared[:5]}; "
                          "the two corpora must have distinct speaker names")
    return {k: splits.get(k, []) + extra.get(k, []) for k in dict.fromkeys([*splits, *extra])}


def _corpus_splits(source: Path, layout: str, split: str) -> dict[str, list[Utterance]]:
    """One spoken-digit source by split (see :func:`speech_splits`)."""
    if layout == "auto" and is_speech_commands(source):
        words = split_speech_commands(source, scan_speech_commands(source), parse_split(split))
        return {k: digit_labels(us) for k, us in words.items() if k != "val" or us}
    train, test = split_utterances(scan_corpus(source, layout=layout), split)
    return {"train": train, "test": test}


@register_loader("speech")
def load_speech(cfg: DataConfig, progress: bool = True) -> Corpus:
    """Spoken digits (``data.audio``, ``data.layout``) split by ``data.split`` -> "audio"
    (:func:`speech_splits`: "train", "test", and "val" for a speech-commands folder)."""
    by_split = speech_splits(cfg)
    kept, feats, skipped = speech_features([u for us in by_split.values() for u in us], cfg, progress)
    by_path = {str(u.path): f for u, f in zip(kept, feats, strict=True)}
    by_split = {k: [u for u in us if str(u.path) in by_path] for k, us in by_split.items()}
    if not by_split["train"] or not by_split["test"]:
        raise ConfigError(f"data.split={cfg.split!r} leaves {len(by_split['train'])} training and "
                          f"{len(by_split['test'])} test utterances in {audio_source(cfg)}; both must be > 0")
    sets = {split: _raw_speech_set(us, [by_path[str(u.path)] for u in us]) for split, us in by_split.items()
            if us or split != "val"}
    fb = fbank_config(cfg)
    for speed in cfg.speed_perturb:
        sets["train"], more = _with_speed(sets["train"], by_split["train"], fb, speed, cfg, progress)
        skipped = [*skipped, *more]
    return Corpus({"audio": sets}, {"audio": audio_spec(fb)}, pairing="label", normalize=("audio",),
                  fbank=fb, skipped=skipped)


def _with_speed(train: SpeechSet, utts: list[Utterance], fb: FbankConfig, speed: float, cfg: DataConfig,
                progress: bool) -> tuple[SpeechSet, list[tuple[str, str]]]:
    """``train`` plus ``utts`` played ``speed`` times faster (``data.speed_perturb``; cached like
    any features), each speaker's copy a speaker of its own, "NAME@SPEED" (example id
    "PATH@SPEED"): per-speaker centring and the speaker penalty see a new voice. Returns the set
    and the (path, reason) skips."""
    if any(not u.speaker for u in utts):
        raise DataError(f"data.speed_perturb: {audio_source(cfg)} has training utterances without a speaker; "
                        "each speed's copy of a voice is named after its speaker")
    fs = compute_features(utts, dataclasses.replace(fb, speed=speed), cache_dir(cfg), on_error=cfg.on_error,
                          progress=progress)
    return SpeechSet([*train.examples, *fs.features], [*train.labels, *(u.label for u in fs.utterances)],
                     [*train.speakers, *(f"{u.speaker}@{speed:g}" for u in fs.utterances)],
                     [*train.paths, *(str(u.path) for u in fs.utterances)],
                     ids=[*train.ids, *(f"{u.path}@{speed:g}" for u in fs.utterances)]), fs.skipped


# --------------------------------------------------------------------------- MNIST

BINARIZE_SEED = 0  # one fixed draw, so every model of a comparison sees the same binary images


def binarize_images(images: np.ndarray, mode: str, seed: int = BINARIZE_SEED) -> np.ndarray:
    """(N, 28, 28) intensities in [0, 1] -> {0, 1} float32 ("stochastic" and "dynamic": pixel ~
    Bernoulli(x), drawn once with ``seed``; "threshold": x > 0.5); ``mode="none"`` returns the input."""
    if mode == "none":
        return images
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    gen = torch.Generator().manual_seed(seed)
    out = binarize(t, threshold=0.5 if mode == "threshold" else None, generator=gen)
    return out.numpy().astype(np.float32)


def load_images(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """MNIST train and test sets, binarised as ``cfg.binarize`` says (test with another seed).

    With "dynamic" the training set also keeps each image's intensities, ``meta["intensity"]``
    ((28, 28) float32 each), from which training draws new binary images every epoch
    (:class:`dispart.training.datamodule.LabelledImages`).
    """
    mnist = load_mnist(image_source(cfg))
    sets = []
    for i, split in enumerate(("train", "test")):
        images, labels = mnist[split]
        meta = {"intensity": list(images)} if cfg.binarize == "dynamic" and split == "train" else {}
        sets.append(ImageSet(binarize_images(images, cfg.binarize, BINARIZE_SEED + i),
                             [str(int(y)) for y in labels], meta=meta))
    return sets[0], sets[1]


@register_loader("mnist")
def load_mnist_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """MNIST (``data.images``) -> "image" (1, 28, 28) and its class as a "label" modality,
    paired by example (ids are positions within a split)."""
    train, test = load_images(cfg)
    likelihood = "gaussian" if cfg.binarize == "none" else "bernoulli"
    label_sets = {split: ModalitySet(np.asarray([int(y) for y in s.labels], dtype=np.int64), s.labels, s.ids)
                  for split, s in (("train", train), ("test", test))}
    return Corpus({"image": {"train": train, "test": test}, "label": label_sets},
                  {"image": ModalitySpec("image", "image", (1, 28, 28), likelihood),
                   "label": ModalitySpec("label", "categorical", (N_CLASSES,), "categorical")},
                  pairing="example")


# --------------------------------------------------------------------------- GRID audio-visual clips

GRID_DOWNSAMPLE = 8  # 360 x 288 frames -> 45 x 36
GRID_DIGIT_POSITION = 4  # command colour preposition letter DIGIT adverb


def grid_fbank(cfg: DataConfig, fps: float = 25.0) -> FbankConfig:
    """Log-Mel settings aligned with the video: one feature frame per video frame (hop = 1 / fps),
    64 ms windows; no voice activity detection (it would break the audio-video sync)."""
    hop_ms = 1000.0 / fps
    win_ms = 64.0
    n_fft = fft_length(cfg.sample_rate * win_ms / 1000.0)
    return FbankConfig(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, win_ms=win_ms, hop_ms=hop_ms,
                       n_fft=n_fft, vad_top_db=cfg.vad_top_db)


def _grid_split(split: str, n: int) -> list[str]:
    if parse_split(split) is not None:
        raise ConfigError(f"data.split={split!r}: the grid loader has one speaker per folder; "
                          f"use data.split=official (every {GRID_TEST_EVERY}th clip is test)")
    return grid_split(n)


def load_grid(root: str | Path, cfg: DataConfig, progress: bool = False, limit: int | None = None,
              downsample: int = GRID_DOWNSAMPLE) -> Corpus:
    """GRID clips under ``root`` -> "audio" (T, n_mels) log-Mel frames and "video"
    (T, 1, 288 // downsample, 360 // downsample) grey frames in [0, 1], one audio frame per
    video frame (both cut to the shorter), paired by example (the clip id).

    Labels are the spoken digit word ("zero" ... "nine"); ``meta["words"]`` holds the sentence.
    ``limit`` keeps the first clips of the sorted list (tests). ``data.on_error=skip`` leaves
    undecodable clips out and lists them in ``skipped``.
    """
    root = Path(root).expanduser()
    clips = scan_grid(root)[:limit]
    speaker = root.name
    fps0: float | None = None
    rows: dict[str, dict[str, list]] = {}
    skipped: list[tuple[str, str]] = []
    for split, clip in zip(_grid_split(cfg.split, len(clips)), clips, strict=True):
        try:
            if clip.align is None:
                raise DataError(f"{clip.video}: no alignment {root / 'align' / (clip.id + '.align')}")
            words = sentence(read_align(clip.align))
            if len(words) <= GRID_DIGIT_POSITION:
                raise DataError(f"{clip.align}: {len(words)} words, a GRID sentence has six")
            frames, wave, fps = read_clip(clip.video, cfg.sample_rate, downsample)
            if fps0 is not None and abs(fps - fps0) > 1e-6:
                raise DataError(f"{clip.video}: {fps} fps, other clips have {fps0}")
            fps0 = fps
            feats = log_mel(wave, grid_fbank(cfg, fps))
            if not np.all(np.isfinite(feats)):
                raise DataError(f"{clip.video}: features contain non-finite values")
        except DataError as e:
            if cfg.on_error != "skip":
                raise
            skipped.append((str(clip.video), str(e)))
            continue
        t = min(len(feats), len(frames))
        r = rows.setdefault(split, {"audio": [], "video": [], "labels": [], "ids": [], "paths": [],
                                    "words": []})
        r["audio"].append(feats[:t])
        r["video"].append(frames[:t])
        r["labels"].append(words[GRID_DIGIT_POSITION])
        r["ids"].append(clip.id)
        r["paths"].append(str(clip.video))
        r["words"].append(" ".join(words))
        if progress:
            print(f"\rgrid: {sum(len(v['ids']) for v in rows.values())}/{len(clips)} clips", end="")
    if progress:
        print()
    missing = [s for s in ("train", "test") if s not in rows]
    if missing:
        raise DataError(f"{root}: no usable clip in split(s) {missing} ({len(clips)} clips, "
                        f"{len(skipped)} skipped)")
    assert fps0 is not None
    sets: dict[str, dict[str, ModalitySet]] = {"audio": {}, "video": {}}
    for split, r in rows.items():
        for m in ("audio", "video"):
            sets[m][split] = ModalitySet(r[m], r["labels"], r["ids"], [speaker] * len(r["ids"]), r["paths"],
                                         {"words": r["words"]})
    frame_shape = tuple(int(n) for n in rows["train"]["video"][0].shape[1:])
    fb = grid_fbank(cfg, fps0)
    return Corpus(sets, {"audio": ModalitySpec("audio", "sequence", (cfg.n_mels,), frame_rate=fps0),
                         "video": ModalitySpec("video", "frames", frame_shape, frame_rate=fps0)},
                  pairing="example", normalize=("audio",), fbank=fb, skipped=skipped)


@register_loader("grid")
def load_grid_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """GRID audio-visual clips in the folder ``data.audio`` (see :func:`load_grid`)."""
    if cfg.audio == "sample":
        raise ConfigError("data.audio: the grid loader needs the GRID folder (with video/ and align/), "
                          "there is no embedded sample")
    return load_grid(cfg.audio, cfg, progress)


# Loaders of their own modules, registered on import (they import dispart.batches.corpus, not this).
from dispart.batches import ball, segments, sprites  # noqa: E402,F401,I001
from dispart.batches import grid_clips  # noqa: E402,F401,I001
