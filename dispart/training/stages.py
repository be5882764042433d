"""Two-stage training (MDVAE): the pieces :func:`dispart.training.run.train` puts together.

A model whose registry entry names a ``stage1`` model (MDVAE: "vq_vae") is trained in two stages by
one ``dispart train CONFIG --out RUN``:

1. one stage-1 run per modality, each an ordinary run folder ``RUN/stage1_<modality>`` (its own
   config.yaml, model.safetensors, run.json, checkpoints; ``dispart evaluate`` reads it like any
   other), trained on the same data with the stage-1 model's config (:func:`stage1_config`:
   the model's ``stage1_config()``, ``model.stage1_epochs`` epochs or ``train.epochs``, no purity
   monitor); with ``model.stage1_dir`` the finished stage-1 runs of that folder are used instead;
2. the model itself in ``RUN``, with the stage-1 weights loaded (``model.load_stage1``) before
   training; the folders and SHA-256 of the stage-1 ``model.safetensors`` (verified against
   their run.json) are written to ``RUN/stage1.json`` before stage 2 starts and to run.json's
   ``data.stage1`` when it ends (stage 2's observations are the stage-1 encodings).

``--resume`` continues whatever was interrupted: a finished stage-1 run (run.json present) is
skipped, a stage-1 run with checkpoints is resumed, one without is started over; stage 2 resumes
from its checkpoints, after checking that the stage-1 weights are those it started from
(:func:`check_stage1_unchanged`). ``--overwrite`` starts both stages over. A finished stage-1 run
whose model no longer fits the config (``model.vq_*`` changed) is refused when stage 2 loads it,
naming the folder. Both stages train on one data load. Two-stage training under DDP is untested
(each launched process would walk the stages on its own).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

from dispart.config import ExperimentConfig, model_params, model_section
from dispart.errors import ConfigError, RunDirError
from dispart.files import atomic_write_json, read_json
from dispart.models.registry import entry
from dispart.runs import Run

PREFIX = "stage1_"
RECORD = "stage1.json"  # in the stage-2 run folder: the stage-1 weights stage 2 started from


def stage1_model(cfg: ExperimentConfig) -> str | None:
    """The registry name of the stage-1 model of ``cfg``'s model, or None (one stage)."""
    return entry(cfg.model.name).stage1


def stage1_config(cfg: ExperimentConfig, modality: str) -> ExperimentConfig:
    """The config of the stage-1 run of ``modality``: the same data, evaluation and trainer
    settings, the stage-1 model (its config from the model's ``stage1_config()``) over
    ``modality`` alone, ``model.stage1_epochs`` epochs (0: ``train.epochs``), no purity monitor."""
    name = stage1_model(cfg)
    if name is None:
        raise ConfigError(f"model {cfg.model.name!r} is trained in one stage")
    params = model_params(cfg.model)
    section = model_section(name)(
        display_name=f"{cfg.model.display_name} stage 1 ({modality})", modalities=[modality],
        image_net=cfg.model.image_net, **dataclasses.asdict(params.stage1_config()))
    train = dataclasses.replace(cfg.train, epochs=params.stage1_epochs or cfg.train.epochs, eval_every=0,
                                stop_at_purity=None)
    return ExperimentConfig(data=copy.deepcopy(cfg.data), model=section, train=train,
                            eval=copy.deepcopy(cfg.eval))


def stage1_folder(cfg: ExperimentConfig, out: Path, modality: str) -> Path:
    """``RUN/stage1_<modality>``, or under ``model.stage1_dir`` when it is set."""
    base = cfg.model.stage1_dir  # type: ignore[attr-defined]
    return (Path(base) if base else out) / f"{PREFIX}{modality}"


def external(cfg: ExperimentConfig) -> bool:
    """Whether the stage-1 runs come from ``model.stage1_dir`` (never trained by this command)."""
    return bool(cfg.model.stage1_dir)  # type: ignore[attr-defined]


def has_checkpoints(folder: Path) -> bool:
    ckpt = folder / "checkpoints"
    return ckpt.is_dir() and any(ckpt.glob("*.ckpt"))


def folder_state(folder: Path) -> str:
    """"finished" (run.json written: training ended), "checkpoints" (interrupted after a
    checkpoint: resume it) or "fresh" (nothing usable: train it from the start)."""
    if (folder / "run.json").is_file():
        return "finished"
    return "checkpoints" if has_checkpoints(folder) else "fresh"


def remove_stage1_outputs(out: Path) -> None:
    """``--overwrite``: delete the stage-1 run folders of ``out`` and its stage-1 record (only those)."""
    for path in sorted(out.glob(f"{PREFIX}*")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    (out / RECORD).unlink(missing_ok=True)


def stage1_record(cfg: ExperimentConfig, out: Path, runs: dict[str, Run]) -> dict[str, dict[str, str]]:
    """modality -> {"path": the stage-1 run folder (relative to ``out`` when inside it),
    "weights_sha256": of its model.safetensors (verified against its run.json by ``load_run``)}."""
    record = {}
    for m, run in runs.items():
        path = run.path
        try:
            shown = str(path.resolve().relative_to(out.resolve()))
        except ValueError:
            shown = str(path)
        record[m] = {"path": shown, "weights_sha256": run.weights_sha256}
    return record


def write_record(out: Path, record: dict[str, dict[str, str]]) -> None:
    """``out/stage1.json``: the stage-1 weights stage 2 starts from (written before it starts)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RECORD, {"format": 1, "stage1": record}, sort_keys=True)


def check_stage1_unchanged(out: Path, record: dict[str, dict[str, str]]) -> None:
    """RunDirError when stage 2 in ``out`` started from other stage-1 weights than ``record``'s
    (resuming it would keep the old VQ-VAE weights of its checkpoints). Without a record (a run
    folder written otherwise) there is nothing to compare."""
    path = out / RECORD
    if not path.is_file():
        return
    raw = read_json(path)
    before = raw.get("stage1") if isinstance(raw, dict) else None
    if not isinstance(before, dict):
        raise RunDirError(f"{path}: not a stage-1 record (expected {{'stage1': {{modality: ...}}}})")
    old = {m: (v or {}).get("weights_sha256") if isinstance(v, dict) else None for m, v in before.items()}
    new = {m: v["weights_sha256"] for m, v in record.items()}
    if old == new:
        return
    m = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))[0]
    raise RunDirError(
        f"{out}: stage 2 started from stage-1 weights {str(old.get(m))[:16]}... of {m!r}, the "
        f"stage-1 run now holds {str(new.get(m))[:16]}... (stage 1 changed); delete "
        f"{out / 'checkpoints'} to train stage 2 again on it, or pass --overwrite to start both "
        "stages over")


def load_stage1(model: Any, runs: dict[str, Run]) -> None:
    """Load every stage-1 run's model into ``model`` (``model.load_stage1``), errors as RunDirError
    naming the folder."""
    for m, run in runs.items():
        try:
            model.load_stage1(m, run.model)
        except ValueError as e:
            raise RunDirError(f"{run.path}: does not fit this model's stage 1 ({e}); delete it (or pass "
                              "--overwrite) to train stage 1 again") from e
