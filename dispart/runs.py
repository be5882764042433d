"""A run folder: what training writes and what evaluation, generation and reports read.

RUN_DIR/
  config.yaml          resolved experiment config
  run.json             model hyper-parameters, feature settings, normaliser statistics,
                       classes, data summary, provenance (all plain JSON), and the SHA-256 of
                       config.yaml and model.safetensors; written last, so a folder is a
                       finished run only when run.json exists and its hashes match
  model.safetensors    final model weights (loads without executing code)
  checkpoints/last.ckpt  Lightning checkpoint for --resume (plain tensors and dicts)
  logs/                CSV or TensorBoard logs
  evaluation.json / evaluation.md   written by `dispart evaluate`
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import dispart
from dispart.config import ExperimentConfig, load_config, save_config
from dispart.errors import ConfigError, RunDirError
from dispart.features.fbank import FbankConfig
from dispart.features.normalize import FeatureNormalizer
from dispart.files import atomic_write_json, atomic_write_with, file_sha256, read_json
from dispart.models import build_model, upgrade_state_dict
from dispart.models.base import MultimodalModel

RUN_FORMAT = 2
"""Format 2 records the SHA-256 of config.yaml and model.safetensors in run.json ("files")."""
SUPPORTED_FORMATS = (1, 2)  # format 1 (no hashes) still loads, without the integrity check
HASHED_FILES = ("config.yaml", "model.safetensors")


@dataclass
class Run:
    path: Path
    config: ExperimentConfig
    model: MultimodalModel
    normalizer: FeatureNormalizer | None  # None for runs without speech
    fbank: FbankConfig
    info: dict[str, Any]
    weights_sha256: str = ""  # of model.safetensors: outputs computed from the run record it
    normalizers: dict[str, FeatureNormalizer] = field(default_factory=dict)  # modality -> statistics

    @property
    def display_name(self) -> str:
        return self.config.model.display_name


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def code_version() -> str:
    """dispart version plus the git commit of the source tree, when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(dispart.__file__).parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{dispart.__version__}+{commit}" if commit else dispart.__version__


def provenance(cfg: ExperimentConfig) -> dict[str, Any]:
    return {
        "dispart": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": cfg.train.seed,
        "command": " ".join(sys.argv),
    }


def save_run(path: Path, cfg: ExperimentConfig, model: MultimodalModel,
             normalizer: FeatureNormalizer | None, fbank: FbankConfig, data_summary: dict,
             normalizers: dict[str, FeatureNormalizer] | None = None,
             extra: dict[str, Any] | None = None) -> None:
    """Write config.yaml, model.safetensors, then run.json (with their SHA-256), each atomically.

    ``normalizer``: the "audio" statistics (run.json "normalizer", read by every version);
    ``normalizers``: the statistics of every standardised modality (run.json "normalizers");
    ``extra``: further run.json entries (e.g. "erasure", written by ``dispart erase``).

    An existing run.json is removed first, so a crash part-way leaves a folder that is not a
    finished run (load_run says run.json is missing) rather than old hashes over new files.
    """
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").unlink(missing_ok=True)
    atomic_write_with(path / "config.yaml", lambda tmp: save_config(cfg, tmp))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(path / "model.safetensors", lambda tmp: save_file(state, tmp))
    info = {
        "format": RUN_FORMAT,
        "files": {name: file_sha256(path / name) for name in HASHED_FILES},
        "model": model.hparams(),
        "fbank": fbank.to_dict(),
        "normalizer": _jsonable(normalizer.state_dict()) if normalizer is not None else None,
        "normalizers": {m: _jsonable(n.state_dict()) for m, n in (normalizers or {}).items()},
        "data": data_summary,
        "provenance": provenance(cfg),
        **(extra or {}),
    }
    atomic_write_json(path / "run.json", _jsonable(info), sort_keys=True)


def require_speech_and_images(run: Run, what: str) -> None:
    """Raise RunDirError unless the run's model has both speech and images (``what`` needs them)."""
    missing = [m for m in ("audio", "image") if m not in run.model.modalities]
    if missing:
        raise RunDirError(f"{run.path}: {what} needs a model over speech and images; this run's "
                          f"{run.model.name} model has {list(run.model.modalities)} (missing "
                          f"{missing}). For image + label runs use `dispart evaluate` and "
                          f"`dispart likelihood`")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _read_info(p: Path) -> dict[str, Any]:
    """run.json as a dict of a supported format; errors name the file."""
    info = read_json(p / "run.json")
    if not isinstance(info, dict):
        raise RunDirError(f"{p / 'run.json'}: not a run description (top level is "
                          f"{type(info).__name__}, not an object)")
    if info.get("format") not in SUPPORTED_FORMATS:
        raise RunDirError(f"{p / 'run.json'}: run format {info.get('format')!r} is not "
                          f"supported by this dispart (expects one of {list(SUPPORTED_FORMATS)})")
    return info


def _recorded_hashes(p: Path, info: dict[str, Any]) -> dict[str, str]:
    """{file name: SHA-256} recorded in run.json; {} for format 1 (no record)."""
    if info["format"] == 1:
        return {}
    files = info.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(files.get(n), str) and len(files[n]) == 64 for n in HASHED_FILES):
        raise RunDirError(f"{p / 'run.json'}: 'files' must record the SHA-256 of "
                          f"{' and '.join(HASHED_FILES)}; got {files!r}")
    return {n: files[n] for n in HASHED_FILES}


def _check_hash(file: Path, recorded: str | None) -> str:
    """SHA-256 of ``file``; RunDirError if it cannot be read or differs from ``recorded``."""
    try:
        actual = file_sha256(file)
    except OSError as e:
        raise RunDirError(f"{file}: cannot be read ({e.__class__.__name__}: {e.strerror})") from e
    if recorded is not None and actual != recorded:
        raise RunDirError(f"{file}: SHA-256 {actual[:16]}... does not match {recorded[:16]}... "
                          f"recorded in run.json (the file is truncated, corrupt or was changed "
                          f"after training)")
    return actual


def _load_weights(p: Path, info: dict[str, Any], device: str) -> MultimodalModel:
    """The model of run.json with the weights of model.safetensors; one-line errors."""
    file = p / "model.safetensors"
    try:
        model = build_model(info["model"])
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise RunDirError(f"{p / 'run.json'}: invalid model hyper-parameters "
                          f"({e.__class__.__name__}: {_one_line(e)})") from e
    try:
        state = load_file(str(file), device=device)
    except (SafetensorError, OSError) as e:
        raise RunDirError(f"{file}: not a readable safetensors file ({_one_line(e)})") from e
    # Runs saved before the model's generative/inference split name their weights differently.
    state = upgrade_state_dict(info["model"], state)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise RunDirError(f"{file}: tensors do not match the model of run.json (missing: "
                          f"{missing[:5]}{'...' if len(missing) > 5 else ''}; unexpected: "
                          f"{extra[:5]}{'...' if len(extra) > 5 else ''})")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise RunDirError(f"{file}: tensor {k} has shape {tuple(state[k].shape)}, the model "
                              f"of run.json needs {tuple(v.shape)}")
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise RunDirError(f"{file}: tensor {k} holds NaN or infinite values")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        raise RunDirError(f"{file}: {_one_line(e)}") from e
    return model


def _normalizer(state: dict[str, Any]) -> FeatureNormalizer:
    return FeatureNormalizer.from_state_dict(
        {k: np.asarray(v, dtype=np.float32) if isinstance(v, list) else v for k, v in state.items()})


def _load_features(p: Path, info: dict[str, Any]
                   ) -> tuple[FbankConfig, FeatureNormalizer | None, dict[str, FeatureNormalizer]]:
    """The log-Mel settings, the "audio" normaliser and every modality's normaliser (runs written
    before "normalizers" existed have the "audio" one only)."""
    try:
        fbank = FbankConfig(**info["fbank"])
        norm = info.get("normalizer")
        normalizer = None if norm is None else _normalizer(norm)
        normalizers = {m: _normalizer(v) for m, v in (info.get("normalizers") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunDirError(f"{p / 'run.json'}: invalid feature settings "
                          f"({e.__class__.__name__}: {_one_line(e)})") from e
    if normalizer is not None:
        normalizers.setdefault("audio", normalizer)
    return fbank, normalizer, normalizers


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Load a finished run; every error is one RunDirError line naming the file and the problem.

    For format 2 the SHA-256 of config.yaml and model.safetensors must match run.json, so a
    truncated or changed file is refused instead of loading with defaults.
    """
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"run folder not found: {p}")
    for name in ("run.json", "config.yaml", "model.safetensors"):
        if not (p / name).is_file():
            hint = " (training may not have finished: see checkpoints/ and --resume)" \
                if name in ("model.safetensors", "run.json") else ""
            raise RunDirError(f"{p} is not a finished dispart run: {name} is missing{hint}")
    info = _read_info(p)
    recorded = _recorded_hashes(p, info)
    _check_hash(p / "config.yaml", recorded.get("config.yaml"))
    weights_sha256 = _check_hash(p / "model.safetensors", recorded.get("model.safetensors"))
    try:
        cfg = load_config(p / "config.yaml")
    except ConfigError as e:
        msg = _one_line(e)
        raise RunDirError(msg if str(p / "config.yaml") in msg else
                          f"{p / 'config.yaml'}: {msg}") from e
    model = _load_weights(p, info, device)
    model.to(device).eval()
    fbank, normalizer, normalizers = _load_features(p, info)
    return Run(p, cfg, model, normalizer, fbank, info, weights_sha256, normalizers)


def current_weights_sha256(path: str | Path) -> str:
    """SHA-256 of RUN_DIR/model.safetensors as it is now (without loading the run)."""
    file = Path(path) / "model.safetensors"
    if not file.is_file():
        raise RunDirError(f"{Path(path)} is not a finished dispart run: model.safetensors is missing")
    return file_sha256(file)
