"""Log-Mel filterbank features of speech, voice activity detection and their inversion.

Frames are 25 ms Hann windows every 10 ms (``center=True``), zero-padded to ``n_fft`` samples.
80 Mel bands at 8 kHz are narrow at low frequencies (~21 Hz apart): with ``n_fft=512`` (15.6 Hz
bins) every filter spans at least 3 FFT bins, while the unpadded 200-sample window leaves 21
filters with a single bin and ``n_fft=128`` leaves some empty (librosa then warns).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dispart.data.corpus import load_waveform
from dispart.errors import ConfigError, DataError

__all__ = ["FbankConfig", "change_speed", "fbank_from_file", "fft_length", "fbank_to_waveform", "log_mel",
           "mel_basis", "vad"]

# A waveform whose peak is below this is treated as digital silence (16-bit LSB is 3e-5).
_SILENCE_PEAK = 1e-5


def fft_length(window: float, at_least: int = 1) -> int:
    """The smallest power of two >= ``window`` samples and >= ``at_least``: an FFT that holds the window."""
    return max(at_least, 1 << int(np.ceil(np.log2(max(window, 1.0)))))


class FrameTiming:
    """Window and hop in samples, for configs with ``sample_rate`` (Hz), ``win_ms`` and ``hop_ms``."""

    sample_rate: int
    win_ms: float
    hop_ms: float

    @property
    def win_length(self) -> int:
        """Window length in samples."""
        return int(round(self.sample_rate * self.win_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        """Hop in samples."""
        return int(round(self.sample_rate * self.hop_ms / 1000.0))


@dataclass(frozen=True)
class FbankConfig(FrameTiming):
    """Settings of the log-Mel features.

    Attributes:
        sample_rate: Hz; audio at other rates is resampled.
        n_mels: number of Mel bands (feature dimension D).
        win_ms, hop_ms: analysis window and hop, milliseconds.
        n_fft: FFT size in samples (>= window length in samples).
        fmin, fmax: Mel filterbank range in Hz (``fmax`` None = sample_rate / 2).
        vad_top_db: frames more than this many dB below the loudest frame are silence.
        min_frames: fewer frames than this after VAD is an error.
        log_floor: power floor before the log (log(1e-6) ~= -13.8).
        speed: the waveform is played this many times faster before analysis (speed
            perturbation: duration / speed, pitch and formants x speed; resampled with librosa);
            1.0 = as recorded. Left out of :meth:`to_dict` at 1.0, so caches keyed before the
            field existed stay valid.
    """

    sample_rate: int = 8000
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    fmin: float = 0.0
    fmax: float | None = None
    vad_top_db: float = 30.0
    min_frames: int = 5
    log_floor: float = 1e-6
    speed: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 <= self.speed <= 2.0:
            raise ConfigError(f"FbankConfig.speed={self.speed} must be in [0.5, 2]")
        if self.sample_rate <= 0 or self.n_mels <= 0 or self.hop_ms <= 0 or self.win_ms <= 0:
            raise ConfigError(f"FbankConfig: sizes and rates must be positive ({self})")
        if self.win_length > self.n_fft:
            raise ConfigError(
                f"FbankConfig.n_fft={self.n_fft} is smaller than the window "
                f"({self.win_length} samples = {self.win_ms} ms at {self.sample_rate} Hz)"
            )
        if self.hop_length < 1:
            raise ConfigError(f"FbankConfig.hop_ms={self.hop_ms} is below one sample")
        if self.log_floor <= 0:
            raise ConfigError("FbankConfig.log_floor must be > 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.speed == 1.0:
            del d["speed"]
        return d


@functools.lru_cache(maxsize=8)
def _mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    import librosa

    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    basis = basis.astype(np.float32)
    basis.flags.writeable = False
    return basis


def mel_basis(cfg: FbankConfig) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 Mel filterbank of the features (librosa's Slaney-normalised
    default), read-only and cached: ``log_mel`` is ``log(mel_basis(cfg) @ |STFT|^2)`` and its
    inversion (``dispart.generation.audio``) uses the pseudo-inverse of the same matrix."""
    return _mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)


def log_mel(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Log-Mel power spectrogram of a mono waveform (N,) -> (T, n_mels) float32.

    ``T = 1 + N // hop_length`` (frames centred on multiples of the hop). Equals
    ``log(max(librosa.feature.melspectrogram(power=2, ...), log_floor))``.
    """
    import librosa

    spec = librosa.stft(
        np.asarray(wave, dtype=np.float32),
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=True,
    )
    power = (spec.real**2 + spec.imag**2).astype(np.float32)  # (1 + n_fft/2, T)
    # Same as librosa.feature.melspectrogram(power=2), with the filterbank cached and a plain
    # matrix product (melspectrogram's einsum is ~10x slower on short utterances).
    mel = mel_basis(cfg) @ power
    return np.log(np.maximum(mel, cfg.log_floor)).T.astype(np.float32)


def vad(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Energy-based voice activity detection: the voiced intervals of ``wave`` concatenated.

    Uses ``librosa.effects.split(top_db=cfg.vad_top_db)`` with frames of ``n_fft`` samples every
    hop. A digitally silent waveform (peak below 1e-5) gives an empty array, because
    ``librosa.effects.split`` measures loudness relative to the loudest frame.
    """
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    if wave.size == 0 or float(np.max(np.abs(wave))) < _SILENCE_PEAK:
        return wave[:0]
    intervals = librosa.effects.split(
        wave, top_db=cfg.vad_top_db, frame_length=cfg.n_fft, hop_length=cfg.hop_length
    )
    if len(intervals) == 0:
        return wave[:0]
    return np.concatenate([wave[s:e] for s, e in intervals])


def change_speed(wave: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """(N,) waveform at ``sample_rate`` Hz -> (round(N / speed),) the same sound played ``speed``
    times faster at the same rate (as sox's ``speed``: pitch and formants move with it)."""
    import librosa

    target = sample_rate / speed
    return librosa.resample(np.asarray(wave, np.float32), orig_sr=float(sample_rate),
                            target_sr=float(target)).astype(np.float32)


def fbank_from_file(path: str | Path, cfg: FbankConfig) -> np.ndarray:
    """Features of one audio file: load (resample, mono) -> VAD -> log-Mel, (T, n_mels).

    Raises DataError naming the file if it cannot be read, is silent after VAD (fewer than
    ``cfg.min_frames`` frames) or yields non-finite features.
    """
    wave = load_waveform(path, cfg.sample_rate)
    if cfg.speed != 1.0:
        wave = change_speed(wave, cfg.sample_rate, cfg.speed)
    voiced = vad(wave, cfg)
    n_frames = 1 + len(voiced) // cfg.hop_length if len(voiced) else 0
    if n_frames < cfg.min_frames:
        raise DataError(
            f"{path}: silent after VAD ({n_frames} frames < min_frames={cfg.min_frames}, "
            f"vad_top_db={cfg.vad_top_db})"
        )
    feats = log_mel(voiced, cfg)
    if not np.all(np.isfinite(feats)):
        raise DataError(f"{path}: features contain non-finite values")
    return feats


def fbank_to_waveform(logmel: np.ndarray, cfg: FbankConfig, n_iter: int = 32) -> np.ndarray:
    """Approximate waveform (N,) float32 from log-Mel features (T, n_mels) via Griffin-Lim."""
    import librosa

    logmel = np.asarray(logmel, dtype=np.float32)
    if logmel.ndim != 2 or logmel.shape[1] != cfg.n_mels:
        raise ValueError(f"expected (T, {cfg.n_mels}) log-Mel features, got {logmel.shape}")
    mel = np.exp(logmel.T.astype(np.float64))
    stft_mag = librosa.feature.inverse.mel_to_stft(
        mel, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=2.0, fmin=cfg.fmin, fmax=cfg.fmax
    )
    wave = librosa.griffinlim(
        stft_mag,
        n_iter=n_iter,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        n_fft=cfg.n_fft,
        window="hann",
        center=True,
    )
    return wave.astype(np.float32)
