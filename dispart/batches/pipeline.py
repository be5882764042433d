"""From a DataConfig to arrays ready for training and evaluation.

wav files -> (cached) log-Mel features -> split -> normaliser fitted on the training split ->
normalised features; MNIST -> images in [0, 1]. Used by training and by evaluation, so both see
exactly the same features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dispart.batches.labels import binarize
from dispart.config import DataConfig
from dispart.data.corpus import Utterance, scan_corpus
from dispart.data.mnist import load_mnist
from dispart.data.sample import sample_fsdd_dir, sample_mnist_path
from dispart.data.splits import split_utterances
from dispart.errors import ConfigError
from dispart.features.cache import compute_features, default_cache_dir
from dispart.features.fbank import FbankConfig
from dispart.features.normalize import FeatureNormalizer


@dataclass
class SpeechSet:
    """Normalised speech features of one split. ``features[i]`` is (T_i, n_mels)."""

    features: list[np.ndarray]
    labels: list[str]
    speakers: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class ImageSet:
    """``images`` (N, 28, 28) float32 in [0, 1]; ``labels`` as class-name strings."""

    images: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ExperimentData:
    """Speech sets and the normaliser are None for runs without speech (e.g. image + label)."""

    fbank: FbankConfig
    normalizer: FeatureNormalizer | None
    speech_train: SpeechSet | None
    speech_test: SpeechSet | None
    image_train: ImageSet
    image_test: ImageSet
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def has_speech(self) -> bool:
        return self.speech_train is not None


def fbank_config(cfg: DataConfig) -> FbankConfig:
    return FbankConfig(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, vad_top_db=cfg.vad_top_db)


def audio_source(cfg: DataConfig) -> Path:
    return sample_fsdd_dir() if cfg.audio == "sample" else Path(cfg.audio).expanduser()


def image_source(cfg: DataConfig) -> Path:
    return sample_mnist_path() if cfg.images == "sample" else Path(cfg.images).expanduser()


def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def _check(cfg: DataConfig) -> None:
    if cfg.on_error not in ("raise", "skip"):
        raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {cfg.on_error!r}")
    if cfg.normalize not in ("global", "utterance"):
        raise ConfigError(f"data.normalize must be 'global' or 'utterance', got {cfg.normalize!r}")
    if cfg.binarize not in BINARIZE:
        raise ConfigError(f"data.binarize must be one of {BINARIZE}, got {cfg.binarize!r}")
    if cfg.unpaired not in ("split", "drop"):
        raise ConfigError(f"data.unpaired must be 'split' or 'drop', got {cfg.unpaired!r}")
    if not 0.0 <= cfg.paired_fraction <= 1.0:
        raise ConfigError(f"data.paired_fraction must be in [0, 1], got {cfg.paired_fraction}")


BINARIZE = ("none", "stochastic", "threshold")
BINARIZE_SEED = 0  # one fixed draw, so every model of a comparison sees the same binary images


def binarize_images(images: np.ndarray, mode: str, seed: int = BINARIZE_SEED) -> np.ndarray:
    """(N, 28, 28) intensities in [0, 1] -> {0, 1} float32 ("stochastic": pixel ~ Bernoulli(x),
    drawn once with ``seed``; "threshold": x > 0.5); ``mode="none"`` returns the input."""
    if mode == "none":
        return images
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    gen = torch.Generator().manual_seed(seed)
    out = binarize(t, threshold=0.5 if mode == "threshold" else None, generator=gen)
    return out.numpy().astype(np.float32)


def load_images(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """MNIST train and test sets, binarised as ``cfg.binarize`` says (test with another seed)."""
    mnist = load_mnist(image_source(cfg))
    sets = []
    for i, split in enumerate(("train", "test")):
        images, labels = mnist[split]
        sets.append(ImageSet(binarize_images(images, cfg.binarize, BINARIZE_SEED + i),
                             [str(int(y)) for y in labels]))
    return sets[0], sets[1]


def _center(feats: list[np.ndarray], mode: str) -> list[np.ndarray]:
    if mode == "utterance":
        return [f - f.mean(axis=0, keepdims=True) for f in feats]
    return feats


def speech_features(
    utts: list[Utterance], cfg: DataConfig, progress: bool = True
) -> tuple[list[Utterance], list[np.ndarray], list[tuple[str, str]]]:
    """Raw log-Mel features of ``utts`` (cached); returns kept utterances, features, skips."""
    fs = compute_features(utts, fbank_config(cfg), cache_dir(cfg), on_error=cfg.on_error,
                          progress=progress)
    return fs.utterances, fs.features, fs.skipped


def _speech_set(utts: list[Utterance], feats: list[np.ndarray], norm: FeatureNormalizer,
                mode: str) -> SpeechSet:
    return SpeechSet(
        features=[norm.transform(f).astype(np.float32) for f in _center(feats, mode)],
        labels=[u.label for u in utts],
        speakers=[u.speaker for u in utts],
        paths=[str(u.path) for u in utts],
    )


def load_experiment_data(
    cfg: DataConfig, progress: bool = True, normalizer: FeatureNormalizer | None = None,
    speech: bool = True,
) -> ExperimentData:
    """Everything training needs: split, features, normaliser fitted on train only, images.

    Pass the ``normalizer`` of a trained run to reuse its statistics instead of refitting.
    ``speech=False`` loads only the images (runs whose modalities are image and label).
    """
    _check(cfg)
    if not speech:
        image_train, image_test = load_images(cfg)
        return ExperimentData(fbank_config(cfg), None, None, None, image_train, image_test)
    utts = scan_corpus(audio_source(cfg), layout=cfg.layout)
    kept, feats, skipped = speech_features(utts, cfg, progress)
    by_path = {str(u.path): f for u, f in zip(kept, feats, strict=True)}
    train_u, test_u = split_utterances(kept, cfg.split)
    train_f = [by_path[str(u.path)] for u in train_u]
    test_f = [by_path[str(u.path)] for u in test_u]
    if not train_u or not test_u:
        raise ConfigError(f"data.split={cfg.split!r} leaves {len(train_u)} training and "
                          f"{len(test_u)} test utterances in {audio_source(cfg)}; both must be > 0")
    norm = normalizer or FeatureNormalizer().fit(_center(train_f, cfg.normalize))
    image_train, image_test = load_images(cfg)
    return ExperimentData(
        fbank=fbank_config(cfg),
        normalizer=norm,
        speech_train=_speech_set(train_u, train_f, norm, cfg.normalize),
        speech_test=_speech_set(test_u, test_f, norm, cfg.normalize),
        image_train=image_train,
        image_test=image_test,
        skipped=skipped,
    )


def load_speech_set(
    source: str | Path, cfg: DataConfig, normalizer: FeatureNormalizer, layout: str = "auto",
    progress: bool = True,
) -> tuple[SpeechSet, list[tuple[str, str]]]:
    """All utterances of another corpus/CSV, normalised with a trained run's statistics."""
    _check(cfg)
    utts = scan_corpus(Path(source).expanduser(), layout=layout)
    kept, feats, skipped = speech_features(utts, cfg, progress)
    return _speech_set(kept, feats, normalizer, cfg.normalize), skipped
