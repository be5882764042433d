"""Benchmark result files that keep one entry per setting (its ``tag``) across calls, and the
options and recorded command line the scripts writing them share.

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the path;
the scripts put the project root there before importing this)."""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from dispart.files import atomic_write_json, read_json


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, e.g. "AMD EPYC"), else the platform's
    processor or architecture: results differ between hosts of the same size."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """Python, torch and processor of this machine, as the result files record them."""
    return {"python": platform.python_version(), "torch": torch.__version__, "processor": cpu_model()}


@contextmanager
def results_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock (flock) on the folder of ``out`` (created if missing) for a
    read-modify-write of ``out``, so two benchmarks finishing together both keep their entries."""
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(out.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def write_tagged_run(out: Path, entry: dict[str, Any], what: str, units: str) -> None:
    """Write ``out`` atomically as {what, units, runs, machine}: the runs already in it whose tag is
    not ``entry["tag"]``, then ``entry``; under :func:`results_lock`."""
    with results_lock(out):
        old = read_json(out) if out.is_file() else {}
        runs = [r for r in old.get("runs", []) if r.get("tag") != entry["tag"]] + [entry]
        atomic_write_json(out, {"what": what, "units": units, "runs": runs, "machine": machine()})


def add_tagged_arguments(ap: argparse.ArgumentParser, results: Path) -> None:
    """The options of every tagged benchmark: --tag, --threads, --out (default ``results``) and
    the config overrides (positional ``key=value``)."""
    ap.add_argument("--tag", default="config", help="name of this setting in the results")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(results))
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")


def recorded_command(script: str, argv: Sequence[str], threads: int) -> str:
    """The command a result records: ``OMP_NUM_THREADS=<threads> OMP_WAIT_POLICY=PASSIVE python
    benchmarks/<script> <argv>`` (the thread count the run used, whatever the environment said)."""
    return (f"OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE "
            + shlex.join(["python", f"benchmarks/{script}", *argv]))
