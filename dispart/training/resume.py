"""Exact, safe resume: the run folder's training outputs, RNG state in checkpoints, and
checkpoints that are written atomically and loaded without code execution.

- :func:`prepare_run_folder` refuses to train into a non-empty folder unless told to
  ``resume`` (continue it) or ``overwrite`` (clear its training outputs first).
- :class:`RngState` saves the torch / numpy / Python RNG states of every rank in each
  checkpoint and restores them just before the first resumed training step.
- :class:`SafeCheckpointIO` writes checkpoints through :func:`dispart.files.atomic_write_with`
  and loads them with ``torch.load(weights_only=True)`` whatever the environment says.
- :func:`resume_checkpoint` picks the checkpoint with the most steps among those that load
  and match the model, naming every one it skips in a one-line warning.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from dispart.errors import RunDirError
from dispart.files import atomic_write_with
from dispart.models import upgrade_state_dict
from dispart.training.averaging import averaged_checkpoint

LAST = "last.ckpt"
RNG_KEY = "dispart_rng_states"
# What `dispart train` writes into a run folder (and --overwrite removes).
TRAINING_OUTPUTS = ("checkpoints", "logs", "config.yaml", "run.json", "model.safetensors",
                    "train_summary.json")
REQUIRED_KEYS = ("state_dict", "optimizer_states", "loops", "epoch", "global_step")


def is_launched_worker() -> bool:
    """True in the processes Lightning's DDP launcher starts for ranks > 0 (or nodes > 0):
    rank 0 prepares the run folder and reports."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def prepare_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``resume``, or ``overwrite`` (which removes the
    training outputs it holds, and nothing else)."""
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite starts it over: pass one")
    if resume or is_launched_worker() or not out.exists():
        return
    if not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if overwrite:
        for name in TRAINING_OUTPUTS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        return
    state = ("already holds a finished run" if (out / "model.safetensors").exists()
             else f"is not empty ({', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''})")
    raise RunDirError(f"{out} {state}; pass --resume to continue its training or --overwrite to "
                      "start over")


class CheckpointError(RunDirError):
    """A checkpoint that cannot be resumed from; names the file and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def _reason(error: Exception) -> str:
    """A short one-line reason a checkpoint did not load."""
    if isinstance(error, pickle.UnpicklingError):
        code = re.search(r"GLOBAL (\S+)", str(error))
        what = f"it names the Python callable {code.group(1)}" if code else "not plain tensors"
        return f"refused by torch.load(weights_only=True) ({what}); nothing in it was run"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0].split(". ")[0].rstrip(".") if lines else "empty file"
    return f"unreadable, truncated or corrupt ({type(error).__name__}: {first})"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` (explicit, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    cannot turn it off) plus a schema check; any failure is a CheckpointError naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(path, "checkpoint is missing") from e
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(path, _reason(e)) from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(path, f"not a Lightning training checkpoint (no {missing[0]!r})")
    return _upgrade_weight_names(ckpt)


def _upgrade_weight_names(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before the models' generative/inference split name their weights
    differently ("model.unimodal.audio..." for "model.inference.unimodal.audio..."): rename
    them from the model hyper-parameters the checkpoint holds. Parameter order (and so the
    optimizer state) is unchanged by the split."""
    hparams = ckpt.get("hyper_parameters")
    model = hparams.get("model_hparams") if isinstance(hparams, dict) else None
    if isinstance(model, dict) and isinstance(ckpt["state_dict"], dict):
        try:
            ckpt["state_dict"] = upgrade_state_dict(model, ckpt["state_dict"], prefix="model.")
        except ValueError:  # unknown model name: check_weights reports the mismatch
            pass
    return ckpt


def check_weights(path: Path, ckpt: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    """CheckpointError unless ``ckpt``'s weights have exactly ``expected``'s names and shapes."""
    got = ckpt["state_dict"]
    names = set(got) if isinstance(got, dict) else set()
    if names != set(expected):
        odd = sorted(names ^ set(expected))[0]
        raise CheckpointError(path, f"its weights do not fit this model ({odd!r} is in only one "
                                    "of them); resume with the run's own config.yaml")
    for name, tensor in expected.items():
        if not isinstance(got[name], torch.Tensor) or got[name].shape != tensor.shape:
            raise CheckpointError(path, f"weight {name!r} has shape "
                                        f"{tuple(getattr(got[name], 'shape', ()))}, the model needs "
                                        f"{tuple(tensor.shape)}; resume with the run's own config.yaml")


def resume_checkpoint(folder: Path, expected: dict[str, torch.Tensor], quiet: bool = False,
                      averaged: bool = False) -> Path:
    """The checkpoint to resume from: of those that load and fit the model, the one with the
    most training steps (``last.ckpt`` on a tie). Not simply ``last.ckpt``: ModelCheckpoint
    writes it after the epoch/step file, so a kill in between leaves it one save behind.
    ``averaged``: the run averages its weights (``train.average_from``); a checkpoint written
    with averaging (its ``state_dict`` is the average) does not fit a run without it.
    Each checkpoint skipped as unusable is named in a printed warning; when none is usable,
    one RunDirError names them all."""
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.name != LAST, p.name))
    if not candidates:
        raise RunDirError(f"--resume: no checkpoint in {folder}; train without --resume "
                          "(with --overwrite if the run folder is not empty)")
    best: tuple[int, Path] | None = None
    problems: list[CheckpointError] = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
            check_weights(path, ckpt, expected)
            if averaged_checkpoint(ckpt) and not averaged:
                raise CheckpointError(path, "it was written with train.average_from (its weights are "
                                      "the average); resume with the run's own config.yaml")
        except CheckpointError as e:
            problems.append(e)
            continue
        if best is None or int(ckpt["global_step"]) > best[0]:
            best = (int(ckpt["global_step"]), path)
    if best is None:
        by_reason: dict[str, list[str]] = {}
        for e in problems:
            by_reason.setdefault(e.reason, []).append(e.path.name)
        raise RunDirError(f"--resume: no usable checkpoint in {folder}: " + "; ".join(
            f"{', '.join(names)}: {reason}" for reason, names in by_reason.items()))
    if not quiet:
        for e in problems:
            print(f"warning: skipping checkpoint {e}; resuming from {best[1].name}", file=sys.stderr)
    return best[1]


def remove_partial_writes(folder: Path) -> None:
    """Delete temporary files that a killed atomic write left behind (``.<name>.*.tmp``)."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes (temp file + fsync + rename in the same folder;
    Lightning's own goes through a temp file elsewhere and a copy) and weights-only loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO.save_checkpoint takes no storage_options")
        atomic_write_with(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path: Any, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path)


def rng_states() -> dict[str, Any]:
    """This process's RNG states as tensors and plain containers (weights-only loadable)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngState(L.Callback):
    """Puts every rank's RNG states in each checkpoint; restores them when training resumes.

    The global torch RNG draws the reparameterisation noise and the CM negatives. ``train``
    seeds it at start, so without this a resumed run replays the seed's first draws. States are
    gathered from all ranks (rank 0 writes the file) and restored at ``on_train_start``: after
    everything that setting up a resumed run draws, and before its first step.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state = rng_states()
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, state)
            checkpoint[RNG_KEY] = gathered
        else:
            checkpoint[RNG_KEY] = [state]

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(RNG_KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self._pending = self._pending, None
        if not states:
            return
        if len(states) != trainer.world_size:
            if trainer.is_global_zero:
                print(f"warning: the checkpoint holds RNG states of {len(states)} processes, this "
                      f"run has {trainer.world_size}: it cannot match an uninterrupted run exactly")
            return
        set_rng_states(states[trainer.global_rank])
