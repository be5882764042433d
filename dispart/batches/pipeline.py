"""From a DataConfig to arrays ready for training and evaluation, keyed by modality.

Corpus loaders (:mod:`dispart.batches.loaders`) give raw examples per modality and split; here
they are merged into one :class:`ExperimentData`, and feature sequences are standardised with a
normaliser fitted on the training split (wav files -> cached log-Mel features -> split ->
normaliser -> normalised features; MNIST -> images in [0, 1]). Used by training and by
evaluation, so both see exactly the same features.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dispart.batches.loaders import (  # noqa: F401 (re-exported: their old home)
    BINARIZE,
    BINARIZE_SEED,
    Corpus,
    audio_source,
    binarize_images,
    cache_dir,
    fbank_config,
    get_loader,
    image_source,
    load_images,
    speech_features,
)
from dispart.batches.modality import ModalitySpec
from dispart.batches.paired import PAIRINGS
from dispart.batches.sets import ImageSet, ModalitySet, SpeechSet  # noqa: F401 (re-exported)
from dispart.data.config import DataConfig
from dispart.data.corpus import Utterance, scan_corpus
from dispart.data.speech_commands import DIGIT_WORDS, digit_labels, is_speech_commands, scan_speech_commands
from dispart.errors import ConfigError, DataError
from dispart.features.fbank import FbankConfig
from dispart.features.normalize import NORMALIZE, SPEAKER_MODES, FeatureNormalizer, centre_as

SPLITS = ("train", "test")


@dataclass
class ExperimentData:
    """Everything an experiment's data is, keyed by modality.

    Attributes:
        sets: modality -> split ("train", "test") -> its examples (:class:`ModalitySet`);
            feature sequences already normalised.
        specs: modality -> :class:`ModalitySpec` of the data (see :meth:`spec`).
        normalizers: modality -> the normaliser fitted on its train split (feature sequences
            only; empty for runs without speech).
        fbank: log-Mel settings of the "audio" modality (also kept for runs without it).
        pairing: "label" (modalities pair only by class, redrawn every epoch: speech <-> MNIST)
            or "example" (modalities of the same examples, joined by id: audio and video of one
            clip, or an image and its label).
        skipped: ``(path, reason)`` of input files left out (``data.on_error=skip``).
    """

    sets: dict[str, dict[str, ModalitySet]]
    specs: dict[str, ModalitySpec]
    normalizers: dict[str, FeatureNormalizer]
    fbank: FbankConfig
    pairing: str = "label"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ConfigError(f"ExperimentData.pairing must be one of {PAIRINGS}, got {self.pairing!r}")

    @property
    def modalities(self) -> list[str]:
        return list(self.sets)

    def spec(self, modality: str) -> ModalitySpec:
        """The spec of ``modality`` as the data holds it; an unknown name is a ConfigError."""
        if modality not in self.specs:
            raise ConfigError(f"modality {modality!r} is not in the data (it has {self.modalities})")
        return self.specs[modality]

    def split(self, modality: str, split: str) -> ModalitySet:
        """The examples of ``modality`` in ``split``; unknown names are a ConfigError."""
        self.spec(modality)
        if split not in self.sets[modality]:
            raise ConfigError(f"modality {modality!r} has no split {split!r} "
                              f"(it has {list(self.sets[modality])})")
        return self.sets[modality][split]


def _check(cfg: DataConfig) -> None:
    if cfg.on_error not in ("raise", "skip"):
        raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {cfg.on_error!r}")
    if cfg.normalize not in NORMALIZE:
        raise ConfigError(f"data.normalize must be one of {NORMALIZE}, got {cfg.normalize!r}")
    if cfg.binarize not in BINARIZE:
        raise ConfigError(f"data.binarize must be one of {BINARIZE}, got {cfg.binarize!r}")
    if cfg.unpaired not in ("split", "drop"):
        raise ConfigError(f"data.unpaired must be 'split' or 'drop', got {cfg.unpaired!r}")
    if cfg.pairing not in ("auto", *PAIRINGS):
        raise ConfigError(f"data.pairing must be 'auto' or one of {PAIRINGS}, got {cfg.pairing!r}")
    if not 0.0 <= cfg.paired_fraction <= 1.0:
        raise ConfigError(f"data.paired_fraction must be in [0, 1], got {cfg.paired_fraction}")


def _speakers(s: ModalitySet, what: str) -> list[str]:
    """The speaker of each example of ``s``; a set without them is a DataError naming ``what``."""
    if s.speakers is None or any(not sp for sp in s.speakers):
        raise DataError(f"data.normalize={'/'.join(SPEAKER_MODES)}: {what} has examples without a "
                        f"speaker (per-speaker centring needs one for every utterance; use "
                        f"data.normalize=utterance)")
    return list(s.speakers)


def _center(s: ModalitySet, mode: str, what: str) -> list[np.ndarray]:
    """The raw (T, D) examples of ``s`` centred as ``data.normalize`` says (:func:`centre_as`; with
    "speaker" / "speaker_var" a speaker's mean and std come from their utterances in the same set,
    labels unused)."""
    return centre_as(list(s.examples), mode, _speakers(s, what) if mode in SPEAKER_MODES else None)


def _normalised(s: ModalitySet, norm: FeatureNormalizer, mode: str, what: str) -> ModalitySet:
    out = copy.copy(s)
    out.examples = [norm.transform(f).astype(np.float32) for f in _center(s, mode, what)]
    return out


def loader_names(cfg: DataConfig, speech: bool = True) -> list[str]:
    """The corpus loaders of a config: ``data.loader`` ("grid", "speech+mnist", ...) when it is not
    "auto"; else speech and MNIST (MNIST alone when ``speech`` is False: runs without speech).
    An unknown name is a ConfigError listing the registered ones."""
    chosen = cfg.loader
    if chosen and chosen != "auto":
        names = [n.strip() for n in str(chosen).split("+")]
        if not all(names):
            raise ConfigError(f"data.loader={chosen!r}: an empty loader name; join names with '+'")
        for n in names:
            get_loader(n)
        return names
    return ["speech", "mnist"] if speech else ["mnist"]


def merge_corpora(corpora: list[Corpus], cfg: DataConfig,
                  normalizers: dict[str, FeatureNormalizer] | None = None) -> ExperimentData:
    """One ExperimentData from the corpora of an experiment.

    Modalities a corpus asks to normalise are standardised with ``normalizers[m]`` when given (a
    trained run's statistics), else with a normaliser fitted on their train split (with
    ``data.normalize=utterance`` it also stores the mean raw frame the centring removes). Modalities
    from several corpora pair by label; those of one corpus as the corpus says; ``data.pairing``
    other than "auto" overrides that ("example" needs a single corpus: example ids of different
    corpora do not match).
    """
    normalizers = dict(normalizers or {})
    sets: dict[str, dict[str, ModalitySet]] = {}
    specs: dict[str, ModalitySpec] = {}
    used: dict[str, FeatureNormalizer] = {}
    for corpus in corpora:
        for m, by_split in corpus.sets.items():
            if m in sets:
                raise ConfigError(f"data.loader: modality {m!r} comes from two corpora")
            missing = [s for s in SPLITS if s not in by_split]
            if missing:
                raise ConfigError(f"data: modality {m!r} has no {missing} split")
            if m in corpus.normalize:
                train = by_split["train"]
                norm = normalizers.get(m) or FeatureNormalizer().fit(
                    list(train.examples), centre_utterances=cfg.normalize != "global",
                    groups=(_speakers(train, f"the {m!r} train split")
                            if cfg.normalize in SPEAKER_MODES else None),
                    scale=cfg.normalize == "speaker_var")
                used[m] = norm
                by_split = {s: _normalised(v, norm, cfg.normalize, f"the {m!r} {s} split")
                            for s, v in by_split.items()}
            sets[m] = dict(by_split)
            specs[m] = corpus.specs[m]
    fbank = next((c.fbank for c in corpora if c.fbank is not None), None) or fbank_config(cfg)
    pairing = corpora[0].pairing if len(corpora) == 1 else "label"
    chosen = cfg.pairing
    if chosen != "auto":
        if chosen == "example" and len(corpora) > 1:
            raise ConfigError(f"data.pairing=example: the modalities {list(sets)} come from "
                              f"{len(corpora)} corpora, whose example ids do not match; use "
                              f"data.pairing=label or auto")
        pairing = chosen
    return ExperimentData(sets, specs, used, fbank, pairing, [s for c in corpora for s in c.skipped])


def load_experiment_data(
    cfg: DataConfig, progress: bool = True, normalizer: FeatureNormalizer | None = None,
    speech: bool = True, loaders: list[str] | None = None,
    normalizers: dict[str, FeatureNormalizer] | None = None,
) -> ExperimentData:
    """Everything training needs: split, features, normaliser fitted on train only, images.

    Pass the ``normalizer`` of a trained run (its "audio" statistics; or ``normalizers`` per
    modality) to reuse its statistics instead of refitting. ``speech=False`` loads only the
    images (runs whose modalities are image and label). ``loaders`` names the corpus loaders
    (default: :func:`loader_names`).
    """
    _check(cfg)
    norms = dict(normalizers or {})
    if normalizer is not None:
        norms.setdefault("audio", normalizer)
    names = loaders if loaders is not None else loader_names(cfg, speech)
    corpora = [get_loader(n)(cfg, progress) for n in names]
    return merge_corpora(corpora, cfg, norms)


def load_speech_set(
    source: str | Path, cfg: DataConfig, normalizer: FeatureNormalizer, layout: str = "auto",
    progress: bool = True,
) -> tuple[SpeechSet, list[tuple[str, str]]]:
    """All utterances of another corpus/CSV, normalised with a trained run's statistics. A folder
    in the speech-commands layout (``layout="auto"``) gives the digit words it has, labelled
    "0"-"9"; its other words are listed in the returned skips (not a digit)."""
    _check(cfg)
    source = Path(source).expanduser()
    utts: list[Utterance]
    not_digits: list[tuple[str, str]] = []
    if layout == "auto" and is_speech_commands(source):
        every = scan_speech_commands(source, None)
        not_digits = [(str(u.path), f"word {u.label!r} is not a digit word") for u in every
                      if u.label not in DIGIT_WORDS]
        utts = digit_labels([u for u in every if u.label in DIGIT_WORDS])
    else:
        utts = scan_corpus(source, layout=layout)
    kept, feats, skipped = speech_features(utts, cfg, progress)
    skipped = [*skipped, *not_digits]
    raw = SpeechSet(feats, [u.label for u in kept], [u.speaker for u in kept], [str(u.path) for u in kept])
    return _normalised(raw, normalizer, cfg.normalize, str(source)), skipped  # type: ignore[return-value]
