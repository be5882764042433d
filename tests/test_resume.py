"""Exact resume after kill -9, checkpoints that cannot run code, refusing to train over a run.

The end-to-end tests kill real training processes: mid-epoch (checkpoints every 3 steps) and,
resuming that run with epoch checkpoints, again between epochs; the run resumed twice must end
with weights bit-identical to an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dispart.batches.pipeline import load_experiment_data
from dispart.cli import main
from dispart.config import load_config
from dispart.runs import load_run
from dispart.training.resume import SafeCheckpointIO, resume_checkpoint
from dispart.training.run import _trainer

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
       "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # our loads must not depend on torch's default
PVAE = ["tests/sample.yaml", "model.hidden=16", "train.batch_size=64", "train.epochs=3",
        "train.eval_every=1", "train.progress_bar=false"]  # 5 steps an epoch
MVAE = ["configs/mnist_label_mvae.yaml", "model.hidden=16", "model.latent_dim=8",
        "model.anneal_steps=5", "data.paired_fraction=0.5", "train.batch_size=200",
        "train.epochs=3", "train.progress_bar=false",
        "train.lr_schedule=cosine", "data.binarize=dynamic"]
# 6 steps an epoch, weakly supervised; the lr schedule and the per-epoch image draws resume too
EPOCH_FILE = re.compile(r"epoch\d+\.ckpt")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The embedded sample's features, computed once for every training process here."""
    folder = tmp_path_factory.mktemp("features")
    load_experiment_data(load_config("tests/sample.yaml", [f"data.cache_dir={folder}"]).data,
                         progress=False)
    return folder


def _cmd(out: Path, args: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "dispart", "train", args[0], "--out", str(out), *args[1:], *extra]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (with the DDP ranks it launches)."""
    with log.open("w") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` (e.g. a DDP rank) still runs (zombies aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def _finish(proc: subprocess.Popen, log: Path) -> None:
    """Wait for ``proc`` and every rank it launched; all must end cleanly."""
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 60
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(proc.pid), "a DDP rank outlived rank 0"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _run(cmd: list[str], log: Path) -> None:
    _finish(_start(cmd, log), log)


def _kill_when(cmd: list[str], ready: Callable[[], bool], log: Path) -> None:
    """Run ``cmd`` and kill -9 it and the processes it started (DDP ranks) once ``ready()``."""
    proc = _start(cmd, log)
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"not killed mid-run: {log.read_text()[-3000:]}"


def _steps(out: Path) -> dict[str, int]:
    """The global step of every checkpoint of a run folder."""
    return {p.name: torch.load(p, weights_only=True)["global_step"]
            for p in (out / "checkpoints").glob("*.ckpt")}


def _restored(log: Path) -> str:
    """The checkpoint a (resumed) training process said it restored."""
    found = re.search(r"Restoring states from the checkpoint path at (\S+)", log.read_text())
    assert found, log.read_text()[-3000:]
    return Path(found.group(1)).name


def _has(out: Path, pattern: re.Pattern) -> Callable[[], bool]:
    folder = out / "checkpoints"
    return lambda: folder.is_dir() and any(pattern.fullmatch(p.name) for p in folder.iterdir())


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"


def _summary(run: Path) -> dict:
    return json.loads((run / "train_summary.json").read_text())


def _kill_twice_and_resume(tmp: Path, args: list[str], per_epoch: int) -> tuple[Path, Path]:
    """An uninterrupted run (in the background), and the same run killed mid-epoch, resumed
    with epoch checkpoints, killed between epochs and resumed to the end. Each resume must
    start from the newest checkpoint: the one that is mid-epoch, then the end-of-epoch one."""
    ref, run = tmp / "uninterrupted", tmp / "killed"
    background = _start(_cmd(ref, args, "train.checkpoint_every_steps=3"), tmp / "ref.log")

    _kill_when(_cmd(run, args, "train.checkpoint_every_steps=3"),
               _has(run, re.compile(r"epoch\d+-step\d+\.ckpt")), tmp / "kill1.log")
    steps = _steps(run)
    mid = max(steps.values())
    assert mid % per_epoch, steps  # killed after a mid-epoch checkpoint

    _kill_when(_cmd(run, args, "--resume", "train.checkpoint_every_steps=0"),
               _has(run, EPOCH_FILE), tmp / "kill2.log")
    assert steps[_restored(tmp / "kill2.log")] == mid
    steps = _steps(run)
    end = max(steps.values())
    assert end > mid and end % per_epoch == 0, steps  # killed after an end-of-epoch checkpoint

    _run(_cmd(run, args, "--resume"), tmp / "resume.log")
    assert steps[_restored(tmp / "resume.log")] == end
    _finish(background, tmp / "ref.log")
    return ref, run


@pytest.mark.slow
def test_pvae_killed_mid_epoch_and_between_epochs_resumes_bit_identically(tmp_path, cache):
    ref, run = _kill_twice_and_resume(tmp_path, [*PVAE, f"data.cache_dir={cache}"], per_epoch=5)
    _assert_same_weights(ref, run)
    a, b = _summary(ref), _summary(run)
    assert (b["epochs"], b["global_step"]) == (a["epochs"], a["global_step"]) == (3, 15)
    # The purity history survives both crashes (it lives in the checkpoints).
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]
    assert [h["purity"] for h in b["history"]] == [h["purity"] for h in a["history"]]
    assert not list((run / "checkpoints").glob("*-v1.ckpt"))  # last.ckpt is replaced in place


@pytest.mark.slow
def test_mvae_image_label_killed_mid_epoch_and_between_epochs_resumes_bit_identically(tmp_path):
    ref, run = _kill_twice_and_resume(tmp_path, MVAE, per_epoch=6)
    _assert_same_weights(ref, run)  # includes the KL-annealing step counter (and the cosine lr)
    assert _summary(run)["global_step"] == _summary(ref)["global_step"] == 18


def _ddp(out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dispart", "train", "tests/sample.yaml", "--out", str(out),
            "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp", "model.hidden=16",
            "train.batch_size=64", "train.progress_bar=false", f"data.cache_dir={cache}", *extra]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shards_the_batches_stops_together_and_resumes_exactly(tmp_path,
                                                                                        cache):
    # Lightning's DDP launcher re-runs the command line for rank 1. Rank 0 alone evaluates
    # purity; it reaches 0.01 at the first evaluation, and both ranks must stop there.
    ref, run = tmp_path / "ddp", tmp_path / "killed"
    args = ["train.epochs=2", "train.eval_every=1", "train.stop_at_purity=0.01",
            "train.checkpoint_every_steps=1"]
    background = _start(_ddp(ref, cache, *args), tmp_path / "ref.log")
    # Killed (both ranks) after the checkpoint of step 1 of 2; the kill may come too late.
    for _ in range(3):
        shutil.rmtree(run, ignore_errors=True)
        _kill_when(_ddp(run, cache, *args), _has(run, re.compile(r"epoch000-step000001\.ckpt")),
                   tmp_path / "kill.log")
        steps = _steps(run)
        if max(steps.values()) == 1:
            break
    else:
        pytest.fail("the DDP run was never killed between its two steps")
    _run(_ddp(run, cache, "--resume", *args), tmp_path / "resume.log")
    assert steps[_restored(tmp_path / "resume.log")] == 1
    _finish(background, tmp_path / "ref.log")
    summary = _summary(ref)
    # 300 utterances in batches of 64 -> 5 length buckets; each of 2 ranks runs 2 of them.
    assert (summary["epochs"], summary["global_step"], len(summary["history"])) == (1, 2, 1)
    assert load_run(ref).model.hidden == 16
    _assert_same_weights(ref, run)
    resumed = _summary(run)
    assert (resumed["epochs"], resumed["global_step"]) == (1, 2)
    assert [h["purity"] for h in resumed["history"]] == [h["purity"] for h in summary["history"]]


def _train_args(out: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "tests/sample.yaml", "--out", str(out), "model.hidden=16",
            "train.batch_size=64", "train.progress_bar=false", f"data.cache_dir={cache}", *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache) -> Path:
    """A tiny finished PVAE run (2 epochs of 5 steps, trained in this process)."""
    run = tmp_path_factory.mktemp("resume") / "run"
    assert main(_train_args(run, cache, "train.epochs=2")) == 0
    return run


def _resume_args(run: Path) -> list[str]:
    return ["train", str(run / "config.yaml"), "--out", str(run), "--resume"]


def _payload(marker: Path) -> object:
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return {"state_dict": RunsCode(), "epoch": 0, "global_step": 0, "loops": {},
            "optimizer_states": []}


def test_crafted_pickle_checkpoint_is_refused_in_one_line_and_never_run(finished_run, tmp_path,
                                                                        capsys, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # would make torch.load unsafe
    run = tmp_path / "crafted"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "payload-ran"
    ckpts = run / "checkpoints"
    for path in ckpts.glob("*.ckpt"):
        path.unlink()
    torch.save(_payload(marker), ckpts / "last.ckpt")
    torch.save(_payload(marker), ckpts / "epoch000.ckpt", _use_new_zipfile_serialization=False)
    capsys.readouterr()
    assert main(_resume_args(run)) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert len(err.strip().splitlines()) == 1, err
    assert "last.ckpt" in err and "epoch000.ckpt" in err and "weights_only=True" in err


def test_damaged_last_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path, capsys):
    run = tmp_path / "damaged"
    shutil.copytree(finished_run, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a torn write
    assert torch.load(run / "checkpoints" / "epoch001.ckpt", weights_only=True)["global_step"] == 10
    capsys.readouterr()
    assert main([*_resume_args(run), "train.epochs=3"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: skipping checkpoint \S*last\.ckpt: unreadable.*resuming from "
                     r"epoch001\.ckpt", err), err
    assert _summary(run)["global_step"] == 15  # epoch 2 of 3 trained on top of epoch001.ckpt
    assert torch.load(last, weights_only=True)["global_step"] == 15  # rewritten in place
    # With no loadable checkpoint at all: one line naming each file.
    for path in (run / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"")
    assert main([*_resume_args(run), "train.epochs=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no usable checkpoint" in err and "last.ckpt" in err


def test_resume_with_another_model_size_is_one_line(finished_run, tmp_path, capsys):
    run = tmp_path / "other"
    shutil.copytree(finished_run, run)
    capsys.readouterr()
    assert main([*_resume_args(run), "model.hidden=32", "train.epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the model needs" in err and "config.yaml" in err, err


def test_resume_reads_the_newest_checkpoint_even_when_last_ckpt_is_behind(finished_run, tmp_path):
    # ModelCheckpoint writes epochNNN.ckpt, then last.ckpt: a kill in between leaves last behind.
    folder = tmp_path / "checkpoints"
    shutil.copytree(finished_run / "checkpoints", folder)
    shutil.copy(folder / "epoch000.ckpt", folder / "last.ckpt")
    newest = torch.load(folder / "epoch001.ckpt", weights_only=True)
    assert newest["global_step"] == 10
    assert resume_checkpoint(folder, newest["state_dict"]).name == "epoch001.ckpt"


def test_checkpoints_are_written_atomically_beside_the_target(tmp_path, monkeypatch):
    trainer = _trainer(load_config("tests/sample.yaml"), tmp_path, [])
    io = trainer.strategy.checkpoint_io
    assert isinstance(io, SafeCheckpointIO)
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append((Path(a), Path(b))) or
                        real_replace(a, b))
    io.save_checkpoint({"global_step": 2}, path)
    # Written to a temporary file in the same folder, then renamed over the old checkpoint.
    assert [(a.parent, b) for a, b in renames] == [(path.parent, path)]
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        io.save_checkpoint({"global_step": 3, "bad": lambda: 0}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 2}  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_non_empty_run_folder_needs_resume_or_overwrite(cache, tmp_path, capsys):
    crashed = tmp_path / "crashed"
    (crashed / "checkpoints").mkdir(parents=True)
    stale = crashed / "checkpoints" / "last.ckpt"
    stale.write_bytes(b"from a crashed run")
    (crashed / "notes.txt").write_text("mine")
    args = _train_args(crashed, cache, "train.epochs=1")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and "--overwrite" in err, err
    assert "is not empty" in err and stale.read_bytes() == b"from a crashed run"
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in (crashed / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert torch.load(stale, weights_only=True)["global_step"] == 5
    assert (crashed / "notes.txt").read_text() == "mine"  # only training outputs are removed
