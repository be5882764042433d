"""Benchmark result files that keep one entry per setting (its ``tag``) across calls.

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the path;
the scripts put the project root there before importing this)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from dispart.files import atomic_write_json, read_json


def machine() -> dict[str, str]:
    """Python, torch and processor of this machine, as the result files record them."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "processor": platform.processor() or platform.machine()}


def write_tagged_run(out: Path, entry: dict[str, Any], what: str, units: str) -> None:
    """Write ``out`` atomically as {what, units, runs, machine}: the runs already in it whose tag is
    not ``entry["tag"]``, then ``entry``."""
    old = read_json(out) if out.is_file() else {}
    runs = [r for r in old.get("runs", []) if r.get("tag") != entry["tag"]] + [entry]
    atomic_write_json(out, {"what": what, "units": units, "runs": runs, "machine": machine()})
