"""The corpus-loader registry: what a loader returns (:class:`Corpus`), the table of loaders
(:data:`LOADERS`, filled by :func:`register_loader`) and the data-source settings every loader reads.

Loader modules import this; :mod:`dispart.batches.loaders` imports the loader modules (so they are
registered whenever it is imported) and holds the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dispart.batches.modality import ModalitySpec
from dispart.batches.paired import PAIRINGS
from dispart.batches.sets import ModalitySet
from dispart.data.config import DataConfig
from dispart.data.sample import sample_audio_source, sample_image_source
from dispart.errors import ConfigError
from dispart.features.cache import default_cache_dir
from dispart.features.fbank import FbankConfig, fft_length

__all__ = ["LOADERS", "Corpus", "Loader", "audio_source", "cache_dir", "fbank_config", "get_loader",
           "image_source", "register_loader", "speech_source"]


@dataclass
class Corpus:
    """What a loader returns.

    Attributes:
        sets: modality -> split ("train", "test") -> raw examples of that modality and split.
        specs: modality -> its spec (the shape of one example or of one frame).
        pairing: "example" when the modalities are modalities of the same examples (joined by
            id), "label" when they can only be paired by class.
        normalize: modalities the pipeline standardises (per-dimension mean/std of the train
            split, after ``data.normalize`` centring): (T, D) feature sequences.
        fbank: the log-Mel settings of an "audio" modality, None without one.
        skipped: ``(path, reason)`` of files left out (``data.on_error=skip``).
    """

    sets: dict[str, dict[str, ModalitySet]]
    specs: dict[str, ModalitySpec]
    pairing: str = "example"
    normalize: tuple[str, ...] = ()
    fbank: FbankConfig | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ValueError(f"Corpus.pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if set(self.sets) != set(self.specs):
            raise ValueError(f"Corpus: modalities of sets {sorted(self.sets)} and of specs "
                             f"{sorted(self.specs)} differ")
        for m, spec in self.specs.items():
            if spec.name != m:
                raise ValueError(f"Corpus: spec {spec.name!r} is filed under modality {m!r}")
        unknown = sorted(set(self.normalize) - set(self.sets))
        if unknown:
            raise ValueError(f"Corpus.normalize names unknown modalities {unknown}")


Loader = Callable[[DataConfig, bool], Corpus]  # (data config, show progress) -> corpus
LOADERS: dict[str, Loader] = {}


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Decorator: file a loader under ``name`` (a name can be registered once)."""
    def add(fn: Loader) -> Loader:
        if name in LOADERS:
            raise ValueError(f"a corpus loader named {name!r} is already registered")
        LOADERS[name] = fn
        return fn
    return add


def get_loader(name: str) -> Loader:
    """The loader filed under ``name``; an unknown name is a ConfigError listing the known ones."""
    try:
        return LOADERS[name]
    except KeyError:
        raise ConfigError(f"data.loader: unknown corpus loader {name!r}; choose among {sorted(LOADERS)}") \
            from None


# --------------------------------------------------------------------------- sources and settings

def fbank_config(cfg: DataConfig) -> FbankConfig:
    """The log-Mel settings of ``data.*``: FFT of 512 samples, or the next power of two when the
    window (``data.win_ms``) is longer."""
    window = round(cfg.sample_rate * cfg.win_ms / 1000.0)  # samples, as FbankConfig.win_length
    return FbankConfig(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, win_ms=cfg.win_ms, hop_ms=cfg.hop_ms,
                       n_fft=fft_length(window, at_least=512), vad_top_db=cfg.vad_top_db)


def audio_source(cfg: DataConfig) -> Path:
    """``data.audio`` as a path: an embedded sample ("sample", "sample-large") or the user's."""
    return speech_source(cfg.audio)


def speech_source(value: str) -> Path:
    """A speech config value (``data.audio``, ``data.audio_extra``) as a path: an embedded sample
    ("sample", "sample-large") or the user's."""
    return sample_audio_source(value) or Path(value).expanduser()


def image_source(cfg: DataConfig) -> Path:
    """``data.images`` as a path: an embedded sample ("sample", "sample-large") or the user's."""
    return sample_image_source(cfg.images) or Path(cfg.images).expanduser()


def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
