"""Purity results tables (paper Table 1 layout) and evaluation JSON files.

- :class:`PurityRow` -- one (model, modality, latent) purity result.
- :data:`PAPER_TABLE1` -- Table 1 of Hsu & Glass (2018), transcribed from the paper.
- :func:`rows_to_markdown` -- Markdown table in the paper's layout, optionally with paper numbers.
- :func:`write_evaluation_json` / :func:`read_evaluation_json` -- plain JSON payloads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dispart.errors import DataError

__all__ = [
    "MODALITIES",
    "MODEL_ORDER",
    "PAPER_TABLE1",
    "EvaluationFileError",
    "PurityRow",
    "rows_to_markdown",
    "write_evaluation_json",
    "read_evaluation_json",
]

MODALITIES: tuple[str, str] = ("speech", "image")
"""Modalities in column order: spoken digits, then written digits."""

MODEL_ORDER: tuple[str, ...] = ("VAE-sp", "VAE-im", "JMVAE-kl", "PVAE (no CM)", "PVAE")
"""Row order of the paper's Table 1; other model names follow in first-appearance order."""

_SHARED_LATENTS = frozenset({"z", "z^s"})
_STYLE_LATENTS = frozenset({"z^a", "z^i"})


@dataclass(frozen=True)
class PurityRow:
    """One purity result: k-means purity of ``latent`` inferred from ``modality`` by ``model``.

    Attributes:
        model: model name, e.g. ``"PVAE"`` or ``"PVAE (no CM)"`` (see :data:`MODEL_ORDER`).
        modality: ``"speech"`` or ``"image"`` (the unimodal encoder the latent comes from).
        latent: latent name, e.g. ``"z"``, ``"z^s"``, ``"z^a"``, ``"z^i"``.
        purity: weighted average purity as a fraction in [0, 1] (not percent).
    """

    model: str
    modality: str
    latent: str
    purity: float

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        p = float(self.purity)
        if not 0.0 <= p <= 1.0:  # also rejects NaN
            raise ValueError(
                f"purity of {self.model}/{self.modality}/{self.latent} must be a fraction in "
                f"[0, 1], got {self.purity!r}"
            )
        object.__setattr__(self, "purity", p)


# Table 1 of Hsu & Glass (2018): weighted average purity in PERCENT (as printed in the paper),
# keyed by dataset, then by (model, modality, latent).
PAPER_TABLE1: dict[str, dict[tuple[str, str, str], float]] = {
    "TIDIGIT-MNIST": {
        ("VAE-sp", "speech", "z"): 45.73,
        ("VAE-im", "image", "z"): 76.38,
        ("JMVAE-kl", "speech", "z"): 45.48,
        ("JMVAE-kl", "image", "z"): 98.16,
        ("PVAE (no CM)", "speech", "z^s"): 65.69,
        ("PVAE (no CM)", "image", "z^s"): 97.95,
        ("PVAE", "speech", "z^s"): 99.77,
        ("PVAE", "image", "z^s"): 99.10,
        ("PVAE (no CM)", "speech", "z^a"): 30.88,
        ("PVAE (no CM)", "image", "z^i"): 21.73,
        ("PVAE", "speech", "z^a"): 24.79,
        ("PVAE", "image", "z^i"): 20.63,
    },
    "SecuVoice-MNIST": {
        ("VAE-sp", "speech", "z"): 63.73,
        ("VAE-im", "image", "z"): 76.38,
        ("JMVAE-kl", "speech", "z"): 64.43,
        ("JMVAE-kl", "image", "z"): 98.46,
        ("PVAE (no CM)", "speech", "z^s"): 77.80,
        ("PVAE (no CM)", "image", "z^s"): 98.43,
        ("PVAE", "speech", "z^s"): 99.30,
        ("PVAE", "image", "z^s"): 99.02,
        ("PVAE (no CM)", "speech", "z^a"): 33.69,
        ("PVAE (no CM)", "image", "z^i"): 22.43,
        ("PVAE", "speech", "z^a"): 25.78,
        ("PVAE", "image", "z^i"): 21.81,
    },
}


def _latent_group(latent: str) -> tuple[int, str]:
    """Table-row group of a latent: shared (z, z^s) first, style (z^a, z^i) next, others last."""
    if latent in _SHARED_LATENTS:
        return (0, "")
    if latent in _STYLE_LATENTS:
        return (1, "")
    return (2, latent)  # unknown latents pair up across modalities only by identical name


def _model_rank(models: list[str]) -> dict[str, int]:
    known = [m for m in MODEL_ORDER if m in models]
    others = [m for m in dict.fromkeys(models) if m not in MODEL_ORDER]
    return {m: i for i, m in enumerate(known + others)}


def rows_to_markdown(rows: list[PurityRow], paper: str | None = "TIDIGIT-MNIST") -> str:
    """Render purity results as a Markdown table in the layout of the paper's Table 1.

    Each table line pairs one model's speech and image latents of the same kind: shared latents
    (z / z^s) of all models come first, then style latents (z^a with z^i), models ordered as
    :data:`MODEL_ORDER` then others. Purities are printed in percent with 2 decimals; ``"-"``
    marks a modality absent for that model (e.g. VAE-sp has no image encoder).

    Args:
        rows: results; at most one row per (model, modality, latent).
        paper: a key of :data:`PAPER_TABLE1` to append the paper's speech / image purities as
            two extra columns (``"-"`` where the paper has no number), or None for no columns.

    Returns:
        The Markdown table (header, separator, one line per row group), newline-terminated.
    """
    if paper is not None and paper not in PAPER_TABLE1:
        raise ValueError(f"paper must be None or one of {sorted(PAPER_TABLE1)}, got {paper!r}")
    reference = PAPER_TABLE1[paper] if paper is not None else {}

    seen: set[tuple[str, str, str]] = set()
    lines: dict[tuple[int, str, str], dict[str, PurityRow]] = {}
    for row in rows:
        key = (row.model, row.modality, row.latent)
        if key in seen:
            raise ValueError(f"rows contains more than one entry for {key}")
        seen.add(key)
        group, name = _latent_group(row.latent)
        cell = lines.setdefault((group, name, row.model), {})
        if row.modality in cell:  # e.g. both z and z^s for the same model and modality
            group, name = 2, row.latent
            cell = lines.setdefault((group, name, row.model), {})
        cell[row.modality] = row

    rank = _model_rank([r.model for r in rows])
    ordered = sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1], rank[kv[0][2]]))

    header = ["Model", "Speech Lat.", "Speech Pur.(%)", "Image Lat.", "Image Pur.(%)"]
    if paper is not None:
        header += [f"Paper Speech Pur.(%) [{paper}]", f"Paper Image Pur.(%) [{paper}]"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for (_, _, model), cell in ordered:
        fields = [model]
        for modality in MODALITIES:
            r = cell.get(modality)
            fields += [r.latent, f"{100.0 * r.purity:.2f}"] if r else ["-", "-"]
        if paper is not None:
            for modality in MODALITIES:
                r = cell.get(modality)
                value = reference.get((model, modality, r.latent)) if r else None
                fields.append(f"{value:.2f}" if value is not None else "-")
        out.append("| " + " | ".join(fields) + " |")
    return "\n".join(out) + "\n"


class EvaluationFileError(DataError, ValueError):
    """An evaluation JSON file cannot be read or a payload cannot be written (names the path)."""


def _to_plain(obj: Any) -> Any:
    """``json.dump`` default hook: numpy scalars/arrays and dataclasses to plain Python."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def write_evaluation_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as plain, strict JSON (sorted keys, 2-space indent).

    numpy scalars and arrays become Python numbers and lists; dataclasses (e.g.
    :class:`PurityRow`) become dicts. Non-string dict keys follow ``json`` rules (int keys such
    as those of an inertia curve are written as strings). NaN / infinity are rejected. The file
    is written atomically (temporary file, then rename); parent folders are created.

    Args:
        path: destination ``.json`` file.
        payload: mapping with string keys.
    """
    target = Path(path)
    if not isinstance(payload, Mapping):
        raise EvaluationFileError(
            f"payload for {target} must be a mapping, got {type(payload).__name__}"
        )
    try:
        text = json.dumps(
            dict(payload), sort_keys=True, indent=2, allow_nan=False, default=_to_plain
        )
    except (TypeError, ValueError) as exc:
        raise EvaluationFileError(f"cannot write evaluation JSON {target}: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, target)


def read_evaluation_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_evaluation_json`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        EvaluationFileError: (a ``ValueError``) the file is not valid strict JSON or its top
            level is not an object; the message names the path.
    """
    source = Path(path)

    def _reject_constant(name: str) -> float:
        raise ValueError(f"non-standard JSON constant {name}")

    try:
        data = json.loads(source.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError, NaN / Infinity
        raise EvaluationFileError(f"malformed evaluation JSON {source}: {exc}") from exc
    if not isinstance(data, dict):
        raise EvaluationFileError(
            f"malformed evaluation JSON {source}: top level must be an object, "
            f"got {type(data).__name__}"
        )
    if not all(math.isfinite(v) for v in _iter_floats(data)):  # e.g. 1e999 parses as inf
        raise EvaluationFileError(f"malformed evaluation JSON {source}: non-finite number")
    return data


def _iter_floats(obj: Any) -> Iterator[float]:
    """All floats nested in a parsed JSON value."""
    if isinstance(obj, float):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _iter_floats(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _iter_floats(v)
