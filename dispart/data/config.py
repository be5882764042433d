"""``DataConfig``: where the data is and how speech becomes features (the ``data`` config section).

A plain dataclass with no validation, so the data pipeline (below models and config in the layer
order) can take it without importing :mod:`dispart.config`; ``dispart.config`` checks every
``data.*`` value against its rules and re-exports this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# data.binarize: "none" (intensities, Gaussian pixels), "stochastic" (one fixed Bernoulli draw),
# "threshold" (> 0.5), "dynamic" (training images redrawn every epoch, everything else sees the
# fixed draw of "stochastic")
BINARIZE = ("none", "stochastic", "threshold", "dynamic")


@dataclass
class DataConfig:
    """Where the data is and how speech becomes features.

    ``audio``: "sample" (the embedded sample), a folder in FSDD or AudioMNIST layout, or a
    ``label,speaker,path`` CSV. ``images``: "sample", an MNIST ``.npz`` or a folder of IDX files.
    ``split``: "official" (FSDD takes 0-4 test), "speaker:NAME" or "speakers:A,B" (held out).
    ``audio_extra``: a second spoken-digit corpus trained on beside ``audio`` (e.g. Arabic digits
    beside FSDD), layout found automatically and split by its publishers' official split whatever
    ``split`` says; its speakers must not share a name with ``audio``'s; "" (default): none.
    ``loader``: "auto" (spoken digits from ``audio`` and MNIST from ``images``; MNIST alone for
    runs without speech) or registered corpus loaders joined by "+" (e.g. "grid": GRID clips in
    the folder ``audio``; see :mod:`dispart.batches.loaders`). ``pairing``: how the modalities of
    a training example are joined: "label" (a random example of the same class, redrawn every
    epoch), "example" (the modalities of one example, by example id) or "auto" (the loader's).
    """

    audio: str = "sample"
    layout: str = "auto"
    audio_extra: str = ""  # a second spoken-digit source, split officially ("" = none)
    images: str = "sample"
    split: str = "official"
    loader: str = "auto"  # "auto" | a registered corpus loader name ("speech", "mnist", "grid"), "+"-joined
    pairing: str = "auto"  # "auto" (the loader's) | "label" | "example"
    sample_rate: int = 8000  # Hz
    n_mels: int = 80
    hop_ms: float = 10.0  # log-Mel frame hop, milliseconds
    win_ms: float = 25.0  # log-Mel analysis window, milliseconds (FFT: 512 samples or more)
    vad_top_db: float = 30.0  # dB below the peak that counts as silence
    normalize: str = "global"  # "global": train-split mean/std; "utterance" / "speaker": first remove
    # each utterance's / each speaker's mean log-Mel frame (a speaker's over their utterances in the split);
    # "speaker_var": also divide each Mel band by the speaker's std of it
    augment: str = "none"  # "none" | "warp": random Mel-axis (VTLP-like) and time warps (train only)
    warp_freq: float = 0.1  # Mel-axis warp factor range: 1 +- warp_freq
    warp_time: float = 0.1  # time-axis warp factor range: 1 +- warp_time
    speed_perturb: list[float] = field(default_factory=list)  # spoken digits: the training split also
    # played at each of these speeds (e.g. [0.9, 1.1]: pitch and formants move too), each copy of a
    # speaker a speaker of its own ("george@0.9"); [] = off
    image_shift: int = 0  # training images moved by up to this many pixels each way (0 = off)
    cache_dir: str | None = None  # default: $DISPART_CACHE or ~/.cache/dispart
    on_error: str = "raise"  # "raise" at the first bad file, or "skip" and report the count
    num_workers: int = 0
    binarize: str = "none"  # images: one of BINARIZE (above)
    paired_fraction: float = 1.0  # image+label runs: fraction of training examples kept paired
    unpaired: str = "split"  # the rest: "split" into image-only and label-only halves | "drop"
