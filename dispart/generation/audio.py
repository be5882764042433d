"""Generated speech features -> something you can hear and see.

The models work on *normalised* log-Mel frames (T, n_mels). To listen to them:

1. undo the normalisation: ``normalizer.inverse_transform`` gives log-Mel power (natural log);
   with ``data.normalize = "utterance"`` (or "speaker") the utterance's (speaker's) mean was
   removed before the global normaliser, so the inverse is mean-removed log-Mel: we add back
   the *training split's mean log-Mel frame* (:func:`utterance_offset`: the normaliser stores it
   when it is fitted, in ``run.json``; for runs saved before it did, it is recomputed from the
   cached raw features of the training split. The normaliser's own mean is ~0 in that mode and
   cannot serve). With ``"speaker_var"`` each speaker's per-band std was divided out as well: the
   inverse is first multiplied by the training split's pooled within-speaker std
   (``normalizer.utterance_scale``), then the offset is added;
2. Mel -> linear magnitude and Griffin-Lim phase reconstruction. ``method="nnls"`` is
   :func:`dispart.features.fbank.fbank_to_waveform` (librosa's non-negative least squares,
   ~0.5 s per utterance); the default ``method="pinv"`` uses the cached pseudo-inverse of the
   same Mel filterbank, clipped at 0 (~10x faster; the re-analysed log-Mel of a real utterance
   correlates 0.99 with the original either way). Same STFT settings as the features;
3. write a 16-bit PCM wav at the corpus rate (``fbank.sample_rate``), scaled down only if it
   would clip (loudness is a speaking-style attribute, so it is not normalised away).

Log-magnitude spectra (:mod:`dispart.features.spectrum`, DSAE's 200 bins) need no Mel inversion:
:func:`spectra_to_waveforms` exponentiates them (``spectrum_to_magnitude``) and runs the same
Griffin-Lim with ``n_fft = win_length`` and the spectrum's hop (:func:`spectrum_stft`).

Log *power* spectrograms aligned with video frames (the "audio" of ``data.loader=grid_clips``,
:mod:`dispart.batches.grid_clips`: 513 bins at 16 kHz, hop = one video frame) are not log-Mel
either: :func:`log_powers_to_waveforms` runs that loader's own inverse,
:func:`dispart.batches.grid_clips.log_power_to_waveform` (its STFT settings, Griffin-Lim with
momentum), on the normaliser's inverse, and limits the peak like every other wav.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dispart.batches.grid_clips import ClipAudioConfig, log_power_to_waveform
from dispart.features.fbank import FbankConfig, fbank_to_waveform, log_mel, mel_basis
from dispart.features.normalize import FeatureNormalizer, centre_as
from dispart.features.spectrum import SpectrumConfig, spectrum_to_magnitude
from dispart.files import atomic_write_with

__all__ = [
    "features_to_logmel",
    "logmel_to_waveform",
    "features_to_waveform",
    "logmels_to_waveforms",
    "griffin_lim",
    "write_wav",
    "wav_bytes",
    "spectrogram_png",
    "spectrogram_thumbnail",
    "utterance_offset",
    "waveforms_to_features",
    "StftSettings",
    "spectrum_stft",
    "spectra_to_waveforms",
    "log_powers_to_waveforms",
]

PEAK = 0.95  # waveforms louder than this are scaled down to it before writing


def utterance_offset(run) -> np.ndarray | None:
    """(n_mels,) mean log-Mel frame of the run's training split when ``data.normalize`` is
    "utterance" or "speaker" (what the centring removed on average), else None (nothing to add
    back): generated speech comes out in the training speakers' average voice.

    Read from the run's normaliser (``run.json`` stores it since dispart records
    ``utterance_offset``); an older run's is recomputed from the training split's cached features.
    """
    cfg = run.config.data
    if cfg.normalize == "global":
        return None
    stored = getattr(run.normalizer, "utterance_offset", None)
    if stored is not None:
        return np.asarray(stored, dtype=np.float32)
    return _training_mean_frame(cfg)


def _training_mean_frame(cfg) -> np.ndarray:
    """Mean raw log-Mel frame of the training split of ``cfg`` (a DataConfig): scans the corpus."""
    from dispart.batches.loaders import audio_source, speech_features
    from dispart.data.corpus import scan_corpus
    from dispart.data.splits import split_utterances

    utts = scan_corpus(audio_source(cfg), layout=cfg.layout)
    train_u, _ = split_utterances(utts, cfg.split)
    _, feats, _ = speech_features(train_u, cfg, progress=False)
    frames = np.concatenate(feats, axis=0)
    return frames.mean(axis=0).astype(np.float32)


def features_to_logmel(
    features: np.ndarray, normalizer: FeatureNormalizer, offset: np.ndarray | None = None
) -> np.ndarray:
    """Normalised features (T, n_mels) -> natural-log Mel power (T, n_mels) float32.

    ``offset`` (n_mels,) is added after the inverse normalisation (see :func:`utterance_offset`),
    and before it, with an ``offset``, the normaliser's ``utterance_scale`` multiplied (fitted with
    ``data.normalize = "speaker_var"``; None otherwise).
    """
    logmel = normalizer.inverse_transform(np.asarray(features, dtype=np.float32))
    scale = getattr(normalizer, "utterance_scale", None)
    if offset is not None and scale is not None:
        logmel = logmel * np.asarray(scale, dtype=np.float32)
    if offset is not None:
        logmel = logmel + np.asarray(offset, dtype=np.float32)
    return logmel.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _mel_pinv(fbank: FbankConfig) -> np.ndarray:
    """(1 + n_fft // 2, n_mels) pseudo-inverse of the feature Mel filterbank."""
    pinv = np.linalg.pinv(mel_basis(fbank).astype(np.float64))
    pinv.flags.writeable = False
    return pinv


def logmel_to_waveform(logmel: np.ndarray, fbank: FbankConfig, n_iter: int = 32,
                       method: str = "pinv") -> np.ndarray:
    """Log-Mel (T, n_mels) -> waveform (hop * (T - 1),) float32 at ``fbank.sample_rate`` Hz,
    peak at most :data:`PEAK`. ``method``: "pinv" (fast) or "nnls" (see the module docstring)."""
    logmel = np.asarray(logmel, dtype=np.float32)
    if logmel.ndim != 2 or logmel.shape[1] != fbank.n_mels:
        raise ValueError(f"expected (T, {fbank.n_mels}) log-Mel features, got {logmel.shape}")
    if method == "nnls":
        return _limit(fbank_to_waveform(logmel, fbank, n_iter=n_iter))
    if method == "pinv":
        return _limit(griffin_lim(_magnitude(logmel, fbank), fbank, n_iter))
    raise ValueError(f"method must be 'pinv' or 'nnls', got {method!r}")


class StftSettings(NamedTuple):
    """The STFT :func:`griffin_lim` inverts (samples); an :class:`FbankConfig` serves as well."""

    n_fft: int
    hop_length: int
    win_length: int


def spectrum_stft(cfg: SpectrumConfig) -> StftSettings:
    """The STFT of :func:`dispart.features.spectrum.log_spectrum`: n_fft = window (400 at 16 kHz),
    hop 160."""
    return StftSettings(cfg.win_length, cfg.hop_length, cfg.win_length)


def griffin_lim(magnitude: np.ndarray, fbank: FbankConfig | StftSettings, n_iter: int = 32,
                momentum: float = 0.99, seed: int = 0) -> np.ndarray:
    """Fast Griffin-Lim (librosa's algorithm: random initial phase, momentum 0.99) in torch,
    batched: magnitudes (..., 1 + n_fft // 2, T) -> waveforms (..., hop * (T - 1)) float32.

    Same STFT as the features (Hann window of ``win_length`` centred in ``n_fft``, ``center``
    with zero padding); torch avoids librosa's numba compilation (~15 s per new process).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small FFTs: intra-op threads only contend (10x slower when busy)
    try:
        return _griffin_lim(torch, magnitude, fbank, n_iter, momentum, seed)
    finally:
        torch.set_num_threads(threads)


def _griffin_lim(torch, magnitude: np.ndarray, fbank: FbankConfig | StftSettings, n_iter: int,
                 momentum: float, seed: int) -> np.ndarray:
    mag = torch.as_tensor(np.asarray(magnitude, dtype=np.float32))
    lead, (n_freq, n_frames) = mag.shape[:-2], mag.shape[-2:]
    mag = mag.reshape(-1, n_freq, n_frames)
    length = fbank.hop_length * (n_frames - 1)
    window = torch.hann_window(fbank.win_length, periodic=True, dtype=torch.float32)
    kw = {"n_fft": fbank.n_fft, "hop_length": fbank.hop_length, "win_length": fbank.win_length,
          "window": window, "center": True}
    gen = torch.Generator().manual_seed(seed)
    angles = torch.polar(torch.ones_like(mag), 2 * np.pi * torch.rand(mag.shape, generator=gen))
    rebuilt = torch.zeros_like(angles)
    for _ in range(n_iter):
        previous = rebuilt
        wave = torch.istft(mag * angles, length=length, **kw)
        rebuilt = torch.stft(wave, pad_mode="constant", return_complex=True, **kw)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-16)
    wave = torch.istft(mag * angles, length=length, **kw)
    return wave.reshape(*lead, length).numpy().astype(np.float32)


def _magnitude(logmel: np.ndarray, fbank: FbankConfig) -> np.ndarray:
    """(T, n_mels) log-Mel power -> (1 + n_fft // 2, T) linear magnitude via the pseudo-inverse."""
    pinv = _mel_pinv(fbank)
    return np.sqrt(np.maximum(pinv @ np.exp(np.asarray(logmel, np.float64).T), 0.0))


def _limit(wave: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    return (wave * (PEAK / peak) if peak > PEAK else wave).astype(np.float32)


def logmels_to_waveforms(logmels: list[np.ndarray], fbank: FbankConfig, n_iter: int = 32
                         ) -> list[np.ndarray]:
    """Batched "pinv" :func:`logmel_to_waveform` of many (T_i, n_mels) log-Mels: one Griffin-Lim
    over zero-padded magnitudes (padding is silence), each waveform cut to hop * (T_i - 1)."""
    if not logmels:
        return []
    t_max = max(int(x.shape[0]) for x in logmels)
    mags = np.zeros((len(logmels), 1 + fbank.n_fft // 2, t_max), np.float64)
    for i, x in enumerate(logmels):
        mags[i, :, : x.shape[0]] = _magnitude(x, fbank)
    waves = griffin_lim(mags, fbank, n_iter)
    return [_limit(waves[i, : fbank.hop_length * (x.shape[0] - 1)]) for i, x in enumerate(logmels)]


def spectra_to_waveforms(logspecs: list[np.ndarray], cfg: SpectrumConfig, n_iter: int = 32
                         ) -> list[np.ndarray]:
    """Log-magnitude spectra (T_i, n_bins) (natural log, :func:`~dispart.features.spectrum.log_spectrum`)
    -> waveforms (hop * (T_i - 1),) float32 at ``cfg.sample_rate``, peak at most :data:`PEAK`: one
    batched Griffin-Lim over zero-padded magnitudes (padding is silence)."""
    if not logspecs:
        return []
    stft = spectrum_stft(cfg)
    for x in logspecs:
        if np.ndim(x) != 2 or x.shape[1] != cfg.n_bins:
            raise ValueError(f"expected (T, {cfg.n_bins}) log-magnitude spectra, got {np.shape(x)}")
    t_max = max(int(x.shape[0]) for x in logspecs)
    mags = np.zeros((len(logspecs), cfg.n_bins + 1, t_max), np.float32)
    for i, x in enumerate(logspecs):
        mags[i, :, : x.shape[0]] = spectrum_to_magnitude(x)
    waves = griffin_lim(mags, stft, n_iter)
    return [_limit(waves[i, : stft.hop_length * (x.shape[0] - 1)]) for i, x in enumerate(logspecs)]


def log_powers_to_waveforms(log_powers: list[np.ndarray], acfg: ClipAudioConfig, n_iter: int = 32
                            ) -> list[np.ndarray]:
    """Log power spectrograms (T_i, n_bins) (natural log of |STFT|^2, after the normaliser's
    inverse) -> waveforms ((T_i - 1) * hop,) float32 at ``acfg.sample_rate``, peak at most
    :data:`PEAK`: :func:`dispart.batches.grid_clips.log_power_to_waveform` (seed 0) each."""
    return [_limit(log_power_to_waveform(x, acfg, n_iter=n_iter)) for x in log_powers]


def features_to_waveform(
    features: np.ndarray, normalizer: FeatureNormalizer, fbank: FbankConfig,
    offset: np.ndarray | None = None, n_iter: int = 32, method: str = "pinv",
) -> np.ndarray:
    """Normalised features (T, n_mels) -> waveform (N,) float32 (see the module docstring)."""
    return logmel_to_waveform(features_to_logmel(features, normalizer, offset), fbank, n_iter, method)


def waveforms_to_features(
    waves: list[np.ndarray], normalizer: FeatureNormalizer, fbank: FbankConfig, normalize: str = "global"
) -> list[np.ndarray]:
    """Waveforms (N_i,) -> normalised model features (1 + N_i // hop, n_mels) each, no VAD (the input
    is already voiced speech), centred as ``data.normalize`` says: "utterance" removes each one's
    mean frame; "speaker" treats them as one voice (generated speech: the decoder's) and removes
    their common mean frame."""
    feats = centre_as([log_mel(w, fbank) for w in waves], normalize, ["generated"] * len(waves))
    return [normalizer.transform(f) for f in feats]


def write_wav(path: str | os.PathLike[str], wave: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float waveform in [-1, 1] as 16-bit PCM wav (atomically); returns the path."""
    import soundfile as sf

    target = Path(path)
    samples = np.clip(np.asarray(wave, dtype=np.float32), -1, 1)
    atomic_write_with(target, lambda tmp: sf.write(tmp, samples, int(sample_rate),
                                                   subtype="PCM_16", format="WAV"))
    return target


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """The bytes of a 16-bit PCM wav file of ``wave`` (for data: URIs)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, dtype=np.float32), -1, 1), int(sample_rate),
             subtype="PCM_16", format="WAV")
    return buf.getvalue()


def spectrogram_png(
    logmel: np.ndarray, path: str | os.PathLike[str], fbank: FbankConfig, title: str = "",
    vmin: float | None = None, vmax: float | None = None,
) -> Path:
    """Save a log-Mel spectrogram (T, n_mels) as a PNG image (atomically): time (s) across, Mel
    band up."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(logmel, dtype=np.float32)
    fig = Figure(figsize=(max(2.5, 0.03 * x.shape[0] + 1.2), 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    seconds = x.shape[0] * fbank.hop_ms / 1000.0
    im = ax.imshow(x.T, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                   extent=(0.0, seconds, 0, x.shape[1]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("Mel band")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="log power")
    fig.tight_layout()
    target = Path(path)
    atomic_write_with(target, lambda tmp: fig.savefig(tmp, format="png"))
    return target


def spectrogram_thumbnail(
    logmel: np.ndarray, path: str | os.PathLike[str], vmin: float | None = None,
    vmax: float | None = None, scale: int = 2,
) -> Path:
    """Axis-free PNG of a log-Mel (T, n_mels): one column per frame (x ``scale``), low bands at
    the bottom, magma colours; fast (no figure), for reports and grids of clips. Atomic."""
    import matplotlib.image

    x = np.asarray(logmel, dtype=np.float32).T[::-1]
    x = np.repeat(np.repeat(x, scale, axis=0), scale, axis=1)
    target = Path(path)
    atomic_write_with(target, lambda tmp: matplotlib.image.imsave(tmp, x, cmap="magma", vmin=vmin,
                                                                  vmax=vmax, format="png"))
    return target
