"""Purity results tables (paper Table 1 layout) and evaluation JSON files.

- :class:`PurityRow` -- one (model, modality, latent) purity result.
- :data:`PAPER_TABLE1` -- Table 1 of Hsu & Glass (2018), transcribed from the paper.
- :func:`rows_to_markdown` -- Markdown table in the paper's layout, optionally with paper numbers.
- :func:`write_evaluation_json` / :func:`read_evaluation_json` -- plain JSON payloads.
- :func:`write_run_output` / :func:`read_run_output` / :func:`fresh_run_output` -- outputs
  computed from a run (evaluation.json, quality.json, likelihood.json), stamped with the
  ``weights_sha256`` of the model they came from, so a stale one is recognised.
- :func:`row_role` / :func:`content_row_keys` -- the role ("content" / "style") of purity rows.
- :func:`probes_to_markdown` -- the linear probes of evaluation.json (class, speaker) with chance.

Roles come from the model's latent declarations (:mod:`dispart.models.latents`): rows written
by ``dispart evaluate`` carry a ``"role"`` field. Rows of evaluation.json files written before
that field existed are given a role by the paper's symbols (z, z^s: content; z^a, z^i: style;
:data:`LEGACY_ROLES`), the only place a latent's symbol decides anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dispart.errors import DataError
from dispart.files import atomic_write

if TYPE_CHECKING:
    from dispart.runs import Run

__all__ = [
    "MODALITIES",
    "MODEL_ORDER",
    "PAPER_TABLE1",
    "EvaluationFileError",
    "StaleOutputError",
    "PurityRow",
    "rows_to_markdown",
    "write_evaluation_json",
    "read_evaluation_json",
    "write_run_output",
    "read_run_output",
    "fresh_run_output",
    "read_evaluation_of",
    "LEGACY_ROLES",
    "LEGACY_SYMBOLS",
    "row_role",
    "content_row_keys",
    "probes_to_markdown",
]

MODALITIES: tuple[str, str] = ("speech", "image")
"""Modalities in column order: spoken digits, then written digits."""

MODEL_ORDER: tuple[str, ...] = ("VAE-sp", "VAE-im", "JMVAE-kl", "PVAE (no CM)", "PVAE")
"""Row order of the paper's Table 1; other model names follow in first-appearance order."""

ROLES: tuple[str, ...] = ("content", "style")
"""Latent roles, as in :mod:`dispart.models.latents` (Table 1 lists content rows first)."""

# Files written before rows carried a "role" (and callers that have no model): the paper's
# symbols of PVAE / JMVAE-kl / VAE latents. New rows never need these.
LEGACY_ROLES: dict[str, str] = {"z": "content", "z^s": "content", "z^a": "style", "z^i": "style"}
"""Role of a row without a ``"role"`` field, by its latent symbol (old evaluation.json files)."""
LEGACY_SYMBOLS: dict[str, str] = {"z_s": "z^s", "z_audio": "z^a", "z_image": "z^i"}
"""Latent name -> symbol for outputs written before declarations (old quality.json keys)."""


@dataclass(frozen=True)
class PurityRow:
    """One purity result: k-means purity of ``latent`` inferred from ``modality`` by ``model``.

    Attributes:
        model: model name, e.g. ``"PVAE"`` or ``"PVAE (no CM)"`` (see :data:`MODEL_ORDER`).
        modality: the unimodal encoder the latent comes from: ``"speech"`` or ``"image"`` (the
            Table 1 columns, :data:`MODALITIES`) or another modality's name (e.g. ``"video"``);
            never ``"audio"`` (its column is "speech").
        latent: the latent's symbol (its declaration's ``symbol``), e.g. ``"z"``, ``"z^s"``.
        purity: weighted average purity as a fraction in [0, 1] (not percent).
        role: the latent's declared role, "content" or "style"; None for rows of files written
            before roles were recorded (then :func:`row_role` falls back to :data:`LEGACY_ROLES`).
    """

    model: str
    modality: str
    latent: str
    purity: float
    role: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.modality, str) or not self.modality.strip() or self.modality == "audio":
            raise ValueError(f"modality must be a Table 1 column name such as {MODALITIES} (the "
                             f"\"audio\" modality's column is \"speech\"), got {self.modality!r}")
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"role of {self.model}/{self.modality}/{self.latent} must be one of "
                             f"{ROLES} or None, got {self.role!r}")
        p = float(self.purity)
        if not 0.0 <= p <= 1.0:  # also rejects NaN
            raise ValueError(
                f"purity of {self.model}/{self.modality}/{self.latent} must be a fraction in "
                f"[0, 1], got {self.purity!r}"
            )
        object.__setattr__(self, "purity", p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON row; ``role`` only when known (old rows stay as they were)."""
        out: dict[str, Any] = {"model": self.model, "modality": self.modality,
                               "latent": self.latent, "purity": self.purity}
        if self.role is not None:
            out["role"] = self.role
        return out


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


def row_role(row: PurityRow | Mapping[str, Any]) -> str | None:
    """Role of a purity row (a :class:`PurityRow` or its JSON dict): its ``role`` field, else
    (rows of old files) :data:`LEGACY_ROLES` of its symbol, else None."""
    role = row.role if isinstance(row, PurityRow) else row.get("role")
    if role is not None:
        return str(role)
    latent = row.latent if isinstance(row, PurityRow) else row.get("latent")
    return LEGACY_ROLES.get(str(latent))


def content_row_keys(rows: list[PurityRow] | list[Mapping[str, Any]]) -> list[str]:
    """``"<modality>/<latent>"`` keys (as in ``inertia`` and ``estimated_num_classes`` of
    evaluation.json) of the rows of content latents, in row order."""
    out = []
    for r in rows:
        if row_role(r) == "content":
            modality, latent = (r.modality, r.latent) if isinstance(r, PurityRow) else (
                r["modality"], r["latent"])
            out.append(f"{modality}/{latent}")
    return out


def _latent_group(row: PurityRow) -> tuple[int, str]:
    """Table-row group of a row: content latents first, style latents next (a speech style
    latent pairs with the image one), latents of unknown role last."""
    role = row_role(row)
    if role in ROLES:
        return (ROLES.index(role), "")
    return (2, row.latent)  # unknown latents pair up across modalities only by identical name


def _model_rank(models: list[str]) -> dict[str, int]:
    known = [m for m in MODEL_ORDER if m in models]
    others = [m for m in dict.fromkeys(models) if m not in MODEL_ORDER]
    return {m: i for i, m in enumerate(known + others)}


def rows_to_markdown(rows: list[PurityRow], paper: str | None = "TIDIGIT-MNIST") -> str:
    """Render purity results as a Markdown table in the layout of the paper's Table 1.

    Each table line pairs one model's speech and image latents of the same role (see
    :func:`row_role`): content latents (z / z^s) of all models come first, then style latents
    (z^a with z^i), models ordered as :data:`MODEL_ORDER` then others. Purities are printed
    in percent with 2 decimals; ``"-"`` marks a modality absent for that model (e.g. VAE-sp
    has no image encoder).

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
        group, name = _latent_group(row)
        cell = lines.setdefault((group, name, row.model), {})
        if row.modality in cell:  # e.g. both z and z^s for the same model and modality
            group, name = 2, row.latent
            cell = lines.setdefault((group, name, row.model), {})
        cell[row.modality] = row

    rank = _model_rank([r.model for r in rows])
    ordered = sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1], rank[kv[0][2]]))

    # speech and image always (Table 1), then other modalities in first-appearance order
    columns = list(MODALITIES) + list(dict.fromkeys(r.modality for r in rows
                                                    if r.modality not in MODALITIES))
    header = ["Model"]
    for modality in columns:
        header += [f"{modality.capitalize()} Lat.", f"{modality.capitalize()} Pur.(%)"]
    if paper is not None:
        header += [f"Paper Speech Pur.(%) [{paper}]", f"Paper Image Pur.(%) [{paper}]"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for (_, _, model), cell in ordered:
        fields = [model]
        for modality in columns:
            r = cell.get(modality)
            fields += [r.latent, f"{100.0 * r.purity:.2f}"] if r else ["-", "-"]
        if paper is not None:
            for modality in MODALITIES:
                r = cell.get(modality)
                value = reference.get((model, modality, r.latent)) if r else None
                fields.append(f"{value:.2f}" if value is not None else "-")
        out.append("| " + " | ".join(fields) + " |")
    return "\n".join(out) + "\n"


PROBES: tuple[tuple[str, str], ...] = (("label", "Label"), ("speaker", "Speaker"))
"""(key prefix in evaluation.json, column title) of the linear probes, in column order."""


def probes_to_markdown(result: Mapping[str, Any]) -> str:
    """The linear probes of an evaluation result as a Markdown table, "" when it has none.

    One line per latent key (``z^a``, ``image/z^i``, ...) found in any ``<what>_probe_accuracy``
    of ``result``; per probe (the class, the speaker) its test accuracy, its chance level (a
    constant guess of the most frequent test value) and their ratio, in percent; ``-`` where that
    probe was not run (e.g. no speaker probe for images, no chance level in old files).
    """
    accs = {what: dict(result.get(f"{what}_probe_accuracy") or {}) for what, _ in PROBES}
    keys = list(dict.fromkeys(k for a in accs.values() for k in a))
    if not keys:
        return ""
    header = ["Latent"]
    for _, title in PROBES:
        header += [f"{title} probe (%)", f"{title} chance (%)", f"{title} / chance"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for key in keys:
        fields = [key]
        for what, _ in PROBES:
            acc = accs[what].get(key)
            chance = (result.get(f"{what}_probe_chance") or {}).get(key)
            fields += [f"{100.0 * acc:.2f}" if acc is not None else "-",
                       f"{100.0 * chance:.2f}" if chance is not None else "-",
                       f"{acc / chance:.2f}" if acc is not None and chance else "-"]
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
    if isinstance(obj, PurityRow):
        return obj.to_dict()
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
    atomic_write(target, text + "\n")


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
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise EvaluationFileError(f"cannot read evaluation JSON {source}: {exc}") from exc
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


class StaleOutputError(EvaluationFileError):
    """An output of a run was computed from other weights than the run's model.safetensors."""


def _weights_sha256(run: Run | str) -> str:
    sha = run if isinstance(run, str) else run.weights_sha256
    if not sha:
        raise ValueError("the run's weights_sha256 is empty (load the run with load_run)")
    return sha


def write_run_output(path: str | os.PathLike[str], payload: Mapping[str, Any],
                     run: Run | str) -> None:
    """:func:`write_evaluation_json` of ``payload`` with ``"weights_sha256"`` of ``run`` (a
    :class:`~dispart.runs.Run` or the hash itself) at the top level."""
    write_evaluation_json(path, {**payload, "weights_sha256": _weights_sha256(run)})


def read_run_output(path: str | os.PathLike[str], run: Run | str,
                    again: str = "compute it again") -> dict[str, Any]:
    """Read an output of ``run`` and check it was computed from the run's current weights.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        EvaluationFileError: the file is corrupt (names it).
        StaleOutputError: it records other weights, or none (written by an older dispart).
    """
    data = read_evaluation_json(path)
    want, got = _weights_sha256(run), data.get("weights_sha256")
    if got != want:
        what = "records no weights_sha256" if got is None else (
            f"was computed from weights {str(got)[:16]}..., not the current {want[:16]}...")
        raise StaleOutputError(f"{path}: stale output: it {what} ({again})")
    return data


def fresh_run_output(path: str | os.PathLike[str], run: Run | str) -> dict[str, Any] | None:
    """The output of ``run`` at ``path``, or None when it is missing, stale or corrupt (the
    caller recomputes it); a corrupt file is reported in one warning line on stderr."""
    try:
        return read_run_output(path, run)
    except FileNotFoundError:
        return None
    except StaleOutputError:
        return None
    except EvaluationFileError as e:
        print(f"dispart: warning: {e}; computing it again", file=sys.stderr, flush=True)
        return None


def read_evaluation_of(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Evaluation results for ``dispart table``: ``source`` is a run folder (its evaluation.json,
    which must come from the folder's current model.safetensors) or an evaluation JSON file
    (read as it is: there is no run to compare it with)."""
    from dispart.runs import current_weights_sha256

    path = Path(source)
    if not path.is_dir():
        if not path.is_file():
            raise EvaluationFileError(f"{source}: no such run folder or evaluation JSON file")
        return read_evaluation_json(path)
    if not (path / "evaluation.json").is_file():
        raise EvaluationFileError(f"{source}: no evaluation.json (run `dispart evaluate {source}` "
                                  f"first)")
    return read_run_output(path / "evaluation.json", current_weights_sha256(path),
                           again=f"run `dispart evaluate {source}` again")
