"""Log-magnitude spectra every 10 ms: the DSAE paper's TIMIT features (after Hsu et al., 2017).

Frames are 25 ms Hann windows every 10 ms (``librosa.stft``, ``center=True``, so a waveform of
N samples gives ``1 + N // hop`` frames), with the FFT as long as the window; the Nyquist bin is
dropped, leaving ``win_length // 2`` bins 0 .. sr/2 - bin width: **16 kHz -> 400-sample window,
200 bins of 40 Hz (0-7,960 Hz)**, the paper's 200 dimensions; FSDD's 8 kHz -> 200-sample window,
100 bins of 40 Hz (0-3,960 Hz): the same bins, up to the lower Nyquist frequency. Values are
``log(max(|X|, floor))`` of the STFT magnitude (natural log; ``floor`` 1e-5 ~ a third of a 16-bit
LSB). Voice activity detection (``vad_top_db``) keeps the voiced intervals before the STFT.

:func:`compute_spectra` computes a list of files once and caches them (one ``.npz`` per
(settings, file contents, library versions), the key of :mod:`dispart.features.cache`).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dispart.data.corpus import Utterance, load_waveform
from dispart.errors import ConfigError, DataError
from dispart.features.cache import file_digests, library_versions
from dispart.features.fbank import FrameTiming
from dispart.files import atomic_open

__all__ = ["SpectrumConfig", "compute_spectra", "log_spectrum", "spectrum_from_file", "spectrum_to_magnitude"]

CACHE_VERSION = 1
_SILENCE_PEAK = 1e-5  # a waveform whose peak is below this is digital silence


@dataclass(frozen=True)
class SpectrumConfig(FrameTiming):
    """Settings of the log-magnitude spectrum.

    Attributes:
        sample_rate: Hz; audio at other rates is resampled (librosa).
        win_ms, hop_ms: analysis window (= FFT length) and hop, milliseconds.
        vad_top_db: frames this many dB below the loudest are silence and cut out; None: no VAD.
        floor: magnitude floor before the log.
        min_frames: fewer frames than this (after VAD) is an error naming the file.
    """

    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    vad_top_db: float | None = 30.0
    floor: float = 1e-5
    min_frames: int = 1

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.win_ms <= 0 or self.hop_ms <= 0 or self.floor <= 0:
            raise ConfigError(f"SpectrumConfig: rates, sizes and floor must be positive ({self})")
        if self.win_length < 2 or self.hop_length < 1:
            raise ConfigError(f"SpectrumConfig: window {self.win_length} / hop {self.hop_length} samples "
                              f"at {self.sample_rate} Hz are too short")
        if self.vad_top_db is not None and self.vad_top_db <= 0:
            raise ConfigError(f"SpectrumConfig.vad_top_db must be > 0 or None, got {self.vad_top_db}")

    @property
    def n_bins(self) -> int:
        """Feature dimension D: FFT bins 0 .. win_length // 2 - 1 (Nyquist dropped)."""
        return self.win_length // 2

    @property
    def bin_hz(self) -> float:
        """Width of one bin in Hz (sample_rate / win_length)."""
        return self.sample_rate / self.win_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_spectrum(wave: np.ndarray, cfg: SpectrumConfig) -> np.ndarray:
    """(N,) waveform at ``cfg.sample_rate`` -> (1 + N // hop, n_bins) float32 log-magnitudes (no VAD)."""
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"log_spectrum expects a non-empty (N,) waveform, got shape {wave.shape}")
    mag = np.abs(librosa.stft(wave, n_fft=cfg.win_length, hop_length=cfg.hop_length,
                              win_length=cfg.win_length, window="hann", center=True))
    return np.log(np.maximum(mag[: cfg.n_bins].T, cfg.floor)).astype(np.float32)


def spectrum_to_magnitude(logspec: np.ndarray) -> np.ndarray:
    """(T, n_bins) log-magnitudes -> (n_bins + 1, T) linear STFT magnitudes with a zero Nyquist row,
    the input a Griffin-Lim with ``n_fft = win_length`` expects."""
    mag = np.exp(np.asarray(logspec, dtype=np.float64)).T
    return np.concatenate([mag, np.zeros((1, mag.shape[1]))]).astype(np.float32)


def _vad(wave: np.ndarray, cfg: SpectrumConfig) -> np.ndarray:
    """Voiced intervals of ``wave`` concatenated (``librosa.effects.split`` on window-long frames)."""
    import librosa

    if cfg.vad_top_db is None:
        return wave
    if float(np.max(np.abs(wave))) < _SILENCE_PEAK:
        return wave[:0]
    intervals = librosa.effects.split(wave, top_db=cfg.vad_top_db, frame_length=cfg.win_length,
                                      hop_length=cfg.hop_length)
    return np.concatenate([wave[s:e] for s, e in intervals]) if len(intervals) else wave[:0]


def spectrum_from_file(path: str | Path, cfg: SpectrumConfig) -> np.ndarray:
    """One audio file: load (mono, resampled) -> VAD -> (T, n_bins) log-magnitudes.

    DataError naming the file when it cannot be read, is silent, or gives < ``min_frames`` frames.
    """
    wave = load_waveform(path, cfg.sample_rate)
    voiced = _vad(wave, cfg)
    if voiced.size == 0:
        raise DataError(f"{path}: silent (nothing left after VAD with vad_top_db={cfg.vad_top_db})")
    feats = log_spectrum(voiced, cfg)
    if len(feats) < cfg.min_frames:
        raise DataError(f"{path}: {len(feats)} frames after VAD < min_frames={cfg.min_frames}")
    if not np.all(np.isfinite(feats)):
        raise DataError(f"{path}: spectrum contains non-finite values")
    return feats


def _cache_key(paths: list[str], digests: list[str | None], cfg: SpectrumConfig) -> str:
    blob = json.dumps({"version": CACHE_VERSION, "cfg": cfg.to_dict(), "libs": library_versions(),
                       "files": sorted(zip(paths, [d or "" for d in digests], strict=True))}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _load_cache(path: Path, key: str) -> dict[str, np.ndarray | str] | None:
    """{abs path: features or error reason} from a cache file; None if absent or damaged."""
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
            frames, offsets, meta = z["frames"], z["offsets"], json.loads(str(z["meta"]))
        if meta["key"] != key or len(offsets) != len(meta["paths"]) + 1:
            return None
        return {p: (err or frames[offsets[i]:offsets[i + 1]])
                for i, (p, err) in enumerate(zip(meta["paths"], meta["errors"], strict=True))}
    except FileNotFoundError:
        return None
    except Exception:  # corrupt / truncated / foreign file: recompute
        path.unlink(missing_ok=True)
        return None


def _save_cache(path: Path, key: str, results: dict[str, np.ndarray | str], n_bins: int) -> None:
    paths = sorted(results)
    feats = [results[p] for p in paths]
    lens = [0 if isinstance(f, str) else len(f) for f in feats]
    arrays = [f for f in feats if not isinstance(f, str)]
    frames = np.concatenate(arrays) if arrays else np.zeros((0, n_bins), np.float32)
    meta = {"key": key, "paths": paths, "errors": [f if isinstance(f, str) else "" for f in feats]}
    try:
        with atomic_open(path, "wb") as fh:
            np.savez(fh, frames=frames, offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                     meta=np.array(json.dumps(meta)))
    except OSError as e:
        warnings.warn(f"cannot write spectrum cache {path} ({e}); continuing without it", stacklevel=3)


def compute_spectra(utts: Sequence[Utterance], cfg: SpectrumConfig, cache_dir: str | Path | None = None,
                    on_error: str = "raise",
                    ) -> tuple[list[Utterance], list[np.ndarray], list[tuple[str, str]]]:
    """Spectra of ``utts``: (kept utterances, (T_i, n_bins) features, skipped (path, reason)).

    ``on_error="raise"``: the first bad file is a DataError naming it; ``"skip"``: bad files are
    left out and listed. With ``cache_dir`` the result is read from / written to
    ``cache_dir/spectrum-{key}.npz``; files the OS cannot read are never cached.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    paths = [str(Path(u.path).absolute()) for u in utts]
    cache_path: Path | None = None
    results: dict[str, np.ndarray | str] | None = None
    if cache_dir is not None:
        digests = file_digests(utts)
        if all(d is not None for d in digests):
            key = _cache_key(paths, digests, cfg)
            cache_path = Path(cache_dir).expanduser() / f"spectrum-{key[:40]}.npz"
            results = _load_cache(cache_path, key)
    if results is None:
        results = {}
        for p in paths:
            try:
                results[p] = spectrum_from_file(p, cfg)
            except DataError as e:
                if on_error == "raise":
                    raise
                results[p] = str(e)
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            _save_cache(cache_path, key, results, cfg.n_bins)
    kept, feats, skipped = [], [], []
    for u, p in zip(utts, paths, strict=True):
        r = results[p]
        if isinstance(r, str):
            if on_error == "raise":
                raise DataError(r)
            skipped.append((str(u.path), r))
        else:
            kept.append(u)
            feats.append(r)
    return kept, feats, skipped
