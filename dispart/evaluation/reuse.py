"""Outputs of a run folder, reused when fresh and computed when not (for the report and the demo).

An output is reused only if it parses, has the structure its readers walk through and records
the ``weights_sha256`` of the run's current ``model.safetensors``; otherwise it is computed
again, with one warning line on stderr naming the file and why (nothing is said about a file
that is simply missing).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispart.errors import DispartError
from dispart.evaluation.table import PurityRow, read_evaluation_json, rows_to_markdown

if TYPE_CHECKING:
    from dispart.batches.pipeline import ExperimentData
    from dispart.runs import Run

__all__ = ["warn", "reuse_output", "check_evaluation", "ensure_evaluation"]


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"dispart: warning: {' '.join(message.splitlines())}", file=sys.stderr, flush=True)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def check_evaluation(ev: dict[str, Any]) -> None:
    """Raise (ValueError, TypeError, ...) unless evaluation.json has what its readers use: Table 1
    rows, and inertia curves / class estimates / probe accuracies as objects."""
    rows_to_markdown([PurityRow(**r) for r in ev.get("rows", [])])
    for key in ("inertia", "estimated_num_classes", "speaker_probe_accuracy"):
        _require(isinstance(ev.get(key) or {}, dict), f"{key} is not an object")
    for curve in (ev.get("inertia") or {}).values():
        _require(isinstance(curve, dict), "an inertia curve is not an object")
        [(int(k), float(v)) for k, v in curve.items()]


def _no_check(_: dict[str, Any]) -> None:
    """quality.json is rendered field by field, tolerating any shape."""


def reuse_output(path: Path, run: Run, read: Callable[[Path], Any] = read_evaluation_json,
                 check: Callable[[dict[str, Any]], None] = _no_check) -> dict[str, Any] | None:
    """The output at ``path`` if it exists, is well-formed (``read`` then ``check`` raise nothing)
    and was computed from the run's current weights; else None (the caller computes it again),
    with one warning line saying why unless the file is simply missing."""
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        data = read(path)
        _require(isinstance(data, dict), f"top level is a {type(data).__name__}, not an object")
        check(data)
    except (DispartError, OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        warn(f"{path} is malformed ({e.__class__.__name__}: {e}); computing it again")
        return None
    got = data.get("weights_sha256")
    if got != run.weights_sha256:
        why = "records no weights_sha256" if got is None else \
            "was computed from other weights than the run's model.safetensors"
        warn(f"{path} is stale (it {why}); computing it again")
        return None
    return data


def ensure_evaluation(run: Run, data: ExperimentData, regenerate: bool = False
                      ) -> tuple[dict[str, Any], bool]:
    """RUN_DIR/evaluation.json, reused or computed (:func:`~dispart.evaluation.evaluate.evaluate_run`
    on ``data``); the flag is True when it was computed now."""
    from dispart.evaluation.evaluate import evaluate_run

    path = Path(run.path) / "evaluation.json"
    evaluation = None if regenerate else reuse_output(path, run, check=check_evaluation)
    if evaluation is not None:
        return evaluation, False
    return evaluate_run(run.path, progress=False, data=data), True  # records weights_sha256
