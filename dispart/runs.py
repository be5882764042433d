"""A run folder: what training writes and what evaluation, generation and reports read.

RUN_DIR/
  config.yaml          resolved experiment config
  run.json             model hyper-parameters, feature settings, normaliser statistics,
                       classes, data summary, provenance (all plain JSON)
  model.safetensors    final model weights (loads without executing code)
  checkpoints/last.ckpt  Lightning checkpoint for --resume (plain tensors and dicts)
  logs/                CSV or TensorBoard logs
  evaluation.json / evaluation.md   written by `dispart evaluate`
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import dispart
from dispart.config import ExperimentConfig, load_config, save_config
from dispart.errors import RunDirError
from dispart.features.fbank import FbankConfig
from dispart.features.normalize import FeatureNormalizer
from dispart.files import file_sha256
from dispart.models import build_model
from dispart.models.base import MultimodalModel

RUN_FORMAT = 1


@dataclass
class Run:
    path: Path
    config: ExperimentConfig
    model: MultimodalModel
    normalizer: FeatureNormalizer | None  # None for runs without speech
    fbank: FbankConfig
    info: dict[str, Any]
    weights_sha256: str = ""  # of model.safetensors: outputs computed from the run record it

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
             normalizer: FeatureNormalizer | None, fbank: FbankConfig, data_summary: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / "config.yaml")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    info = {
        "format": RUN_FORMAT,
        "model": model.hparams(),
        "fbank": fbank.to_dict(),
        "normalizer": _jsonable(normalizer.state_dict()) if normalizer is not None else None,
        "data": data_summary,
        "provenance": provenance(cfg),
    }
    (path / "run.json").write_text(json.dumps(_jsonable(info), indent=1, sort_keys=True))


def require_speech_and_images(run: Run, what: str) -> None:
    """Raise RunDirError unless the run's model has both speech and images (``what`` needs them)."""
    missing = [m for m in ("audio", "image") if m not in run.model.modalities]
    if missing:
        raise RunDirError(f"{run.path}: {what} needs a model over speech and images; this run's "
                          f"{run.model.name} model has {list(run.model.modalities)} (missing "
                          f"{missing}). For image + label runs use `dispart evaluate` and "
                          f"`dispart likelihood`")


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Load a finished run; errors name the missing or incompatible part."""
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"run folder not found: {p}")
    for name in ("run.json", "config.yaml", "model.safetensors"):
        if not (p / name).is_file():
            hint = " (training may not have finished: see checkpoints/ and --resume)" \
                if name == "model.safetensors" else ""
            raise RunDirError(f"{p} is not a finished dispart run: {name} is missing{hint}")
    try:
        info = json.loads((p / "run.json").read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{p / 'run.json'} is not valid JSON: {e}") from e
    if info.get("format") != RUN_FORMAT:
        raise RunDirError(f"{p / 'run.json'}: run format {info.get('format')!r} is not "
                          f"supported by this dispart (expects {RUN_FORMAT})")
    cfg = load_config(p / "config.yaml")
    try:
        model = build_model(info["model"])
        model.load_state_dict(load_file(str(p / "model.safetensors"), device=device))
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise RunDirError(f"{p}: model weights do not match run.json: {e}") from e
    model.to(device).eval()
    fb = info["fbank"]
    fbank = FbankConfig(**fb)
    normalizer = None if info.get("normalizer") is None else FeatureNormalizer.from_state_dict(
        {k: np.asarray(v, dtype=np.float32) if isinstance(v, list) else v
         for k, v in info["normalizer"].items()})
    return Run(p, cfg, model, normalizer, fbank, info, file_sha256(p / "model.safetensors"))
