"""Generation grids of the PVAE paper (Figs. 4, 5 and 16-22) as arrays plus their provenance.

A grid combines two sets of latents: the *semantic* set (the output modality's content latent,
e.g. PVAE's z^s, one per column, shown in the top row) and the *style* set (its style latent,
e.g. z^a or z^i, one per row, shown in the left column). Cell (r, c) is
``model.decode({semantic.latent: semantic.z[c], style.latent: style.z[r]}, out_modality)``.
Which latent is which comes from the model's declarations (role "content" / "style", see
:mod:`dispart.models.latents`), never from latent names. Each set is either inferred (posterior
mean of the unimodal encoder) from data items of some modality, or drawn from the prior
N(0, I). Every cell records which source fed which latent.

- within-modality style transfer: semantic and style inferred from the same modality;
- cross-modal generation: semantic from one modality, style from a reference of the output one;
- prior grids: fixed z^s with style from the prior, or z^s from the prior with fixed style.

For models with a single content latent and no style latent (JMVAE-kl),
:func:`shared_latent_rows` gives the paper's Fig. 2.

Sequence models with a static style latent f and a dynamic content latent z_1:T of one modality
(DSAE, Li & Mandt 2018, section 2; found by :func:`static_dynamic`) get :class:`SequenceGrid`:
cell (r, c) is ``model.decode({f: f[r], z: z[c]})`` with rows = sources of f and columns =
sources of z_1:T, each inferred (posterior mean) or drawn from the model's own prior:

- "swap": f of sequence A (row) with z_1:T of sequence B (column), both inferred;
- "fix_f": inferred f (rows), z_1:T drawn from the prior p(z_t | z_<t) (columns);
- "fix_z": f drawn from the prior p(f) (rows), inferred z_1:T (columns).

:func:`frame_strip` / :func:`frames_to_rgb` / :func:`write_gif` show video cells;
:func:`render_sequence_grid_png` draws a whole grid (frame strips or spectrogram tiles).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dispart.batches.batch import Sequences
from dispart.errors import RunDirError
from dispart.files import atomic_write_with
from dispart.generation import SEQUENCE_KINDS
from dispart.models.base import MultimodalModel

__all__ = [
    "LatentSet",
    "Grid",
    "partition",
    "content_latent",
    "style_latent",
    "is_partitioned",
    "infer_latents",
    "prior_latents",
    "decode_grid",
    "shared_latent_rows",
    "pick_by_label",
    "pick_styles",
    "render_grid_png",
    "SEQUENCE_KINDS",
    "SequenceLatents",
    "SequenceGrid",
    "static_dynamic",
    "infer_sequence_latents",
    "prior_sequence_latents",
    "decode_sequence_grid",
    "swap_reidentification",
    "frames_to_rgb",
    "frame_strip",
    "write_gif",
    "render_sequence_grid_png",
]

@dataclass
class LatentSet:
    """Latent vectors of one grid axis and where each came from.

    Attributes:
        latent: name of the latent they feed (a key of ``model.latents``).
        z: (N, D) float32 latent vectors.
        sources: N source ids, e.g. "audio:test[12]" or "prior[3]".
        modality: modality the latents were inferred from, or None for the prior.
        inputs: N source data items for display ((28, 28) images or (T, D) normalised speech
            features), or None for the prior.
        tags: N short captions (digit label, speaker, "prior").
    """

    latent: str
    z: np.ndarray
    sources: list[str]
    modality: str | None = None
    inputs: list[np.ndarray] | None = None
    tags: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def lengths(self) -> list[int] | None:
        """Frames of each speech source, or None if the sources are not speech."""
        if self.modality != "audio" or self.inputs is None:
            return None
        return [int(x.shape[0]) for x in self.inputs]


@dataclass
class Grid:
    """A decoded grid. ``cells[r][c]``: (28, 28) image in [0, 1]-ish or (T, D) normalised
    speech features; ``record[r][c]``: latent name -> source id that fed it."""

    name: str
    out_modality: str
    semantic: LatentSet
    style: LatentSet | None
    cells: list[list[np.ndarray]]
    record: list[list[dict[str, str]]]
    row_modalities: list[str] = field(default_factory=list)  # output modality per row

    def __post_init__(self) -> None:
        if not self.row_modalities:
            self.row_modalities = [self.out_modality] * len(self.cells)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.cells), len(self.cells[0]) if self.cells else 0

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON description: sources of every axis and the per-cell record."""
        def axis(s: LatentSet | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {"latent": s.latent, "modality": s.modality, "sources": s.sources, "tags": s.tags}
        return {"name": self.name, "out_modality": self.out_modality, "rows": self.shape[0],
                "cols": self.shape[1], "semantic (columns)": axis(self.semantic),
                "style (rows)": axis(self.style), "cells": self.record}


def partition(model: MultimodalModel, modality: str) -> tuple[str, str]:
    """Names of the (content, style) latents of ``modality``, from the model's declarations.

    RunDirError if the model has no such modality, or ``modality`` does not inform exactly one
    content and one style latent (no semantic/style partition: JMVAE-kl, VAE).
    """
    if modality not in model.modalities:
        raise RunDirError(f"the run's {model.name} model has no {modality!r} modality "
                          f"(it has {list(model.modalities)})")
    content, style = model.content_latents(modality), model.style_latents(modality)
    if len(content) != 1 or len(style) != 1:
        raise RunDirError(
            f"the run's {model.name} model has latents {list(model.latent_names(modality))} for "
            f"{modality}; style transfer needs one content latent and one style latent (a PVAE run)")
    return content[0].name, style[0].name


def content_latent(model: MultimodalModel, modality: str) -> str:
    """Name of the content latent of ``modality`` (PVAE: the shared z^s); see :func:`partition`."""
    return partition(model, modality)[0]


def style_latent(model: MultimodalModel, modality: str) -> str:
    """Name of the style latent of ``modality`` (PVAE: z^a for audio); see :func:`partition`."""
    return partition(model, modality)[1]


def is_partitioned(model: MultimodalModel, modalities: Sequence[str]) -> bool:
    """True when every modality of ``modalities`` has a content and a style latent
    (:func:`partition`) and they share one content latent (so it can cross modalities)."""
    try:
        contents = {partition(model, m)[0] for m in modalities}
    except RunDirError:
        return False
    return len(contents) == 1


def _as_batch(modality: str, items: Sequence[np.ndarray]) -> dict[str, Any]:
    if modality == "audio":
        return {"audio": Sequences.from_list([np.asarray(x, np.float32) for x in items])}
    x = torch.as_tensor(np.stack([np.asarray(i, np.float32) for i in items]))
    return {modality: x.unsqueeze(1) if x.dim() == 3 else x}


def _posterior_mean(model: MultimodalModel, modality: str, batch, latent: str) -> torch.Tensor:
    """Posterior mean of ``latent`` inferred from ``batch`` in eval mode (the training mode
    restored); RunDirError when ``modality`` does not inform ``latent``."""
    was_training = model.training
    model.eval()
    try:
        post = model.encode(batch)
    finally:
        model.train(was_training)
    if latent not in post:
        raise RunDirError(f"{model.name}: latent {latent!r} cannot be inferred from {modality} "
                          f"(available: {sorted(post)})")
    return post[latent].mean


@torch.no_grad()
def infer_latents(
    model: MultimodalModel, modality: str, items: Sequence[np.ndarray], latent: str,
    ids: Sequence[str] | None = None, tags: Sequence[str] | None = None,
) -> LatentSet:
    """Posterior means of ``latent`` from ``items`` of one modality (unimodal encoder).

    Args:
        items: (28, 28) images in [0, 1] or (T, D) normalised speech features.
        ids: source ids for the record (default "modality[i]").
        tags: captions (default empty).
    """
    if not items:
        raise ValueError("infer_latents needs at least one item")
    z = _posterior_mean(model, modality, _as_batch(modality, items), latent).cpu().numpy()
    z = z.astype(np.float32)
    return LatentSet(latent, z, list(ids) if ids else [f"{modality}[{i}]" for i in range(len(items))],
                     modality, [np.asarray(x) for x in items], list(tags) if tags else [""] * len(items))


def prior_latents(n: int, dim: int, latent: str, seed: int = 0) -> LatentSet:
    """``n`` draws from the prior N(0, I) of a ``dim``-dimensional latent (numpy seed)."""
    z = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return LatentSet(latent, z, [f"prior[{i}]" for i in range(n)], None, None, ["prior"] * n)


def _cell_lengths(semantic: LatentSet, style: LatentSet | None, rows: int, cols: int,
                  default_length: int) -> np.ndarray:
    """(rows, cols) frames of generated speech: duration is a speaking-style attribute (paper
    footnote 2), so the style reference's length wins, then the semantic source's, else the
    default."""
    if style is not None and style.lengths() is not None:
        return np.repeat(np.asarray(style.lengths())[:, None], cols, axis=1)
    if semantic.lengths() is not None:
        return np.repeat(np.asarray(semantic.lengths())[None, :], rows, axis=0)
    return np.full((rows, cols), int(default_length))


@torch.no_grad()
def decode_grid(
    model: MultimodalModel, semantic: LatentSet, style: LatentSet, out_modality: str,
    name: str = "grid", default_length: int = 50,
) -> Grid:
    """Decode every (style row r, semantic column c) combination; see the module docstring.

    ``default_length`` (frames) is used for generated speech when neither axis is speech.
    ``semantic.latent`` and ``style.latent`` must be the content and the style latent of
    ``out_modality`` (:func:`partition`). The model's training mode is restored afterwards.
    """
    content, style_name = partition(model, out_modality)
    if style.latent != style_name:
        raise ValueError(f"style latent {style.latent!r} does not feed the {out_modality} decoder "
                         f"(expects {style_name!r})")
    if semantic.latent != content:
        raise ValueError(f"content latent {semantic.latent!r} does not feed the {out_modality} "
                         f"decoder (expects {content!r})")
    rows, cols = len(style), len(semantic)
    z_c = torch.as_tensor(np.tile(semantic.z, (rows, 1)))  # cell r*cols + c <- column c
    z_m = torch.as_tensor(np.repeat(style.z, cols, axis=0))  # cell r*cols + c <- row r
    latents = {content: z_c, style.latent: z_m}
    was_training = model.training
    model.eval()
    try:
        if model.specs[out_modality].dynamic:
            lengths = _cell_lengths(semantic, style, rows, cols, default_length).reshape(-1)
            out = model.decode(latents, out_modality, torch.as_tensor(lengths, dtype=torch.int64))
            flat = [out[i, : int(n)].cpu().numpy() for i, n in enumerate(lengths)]
        else:
            out = model.decode(latents, out_modality)
            flat = list(out.reshape(rows * cols, *out.shape[-2:]).cpu().numpy())
    finally:
        model.train(was_training)
    cells = [flat[r * cols:(r + 1) * cols] for r in range(rows)]
    record = [[{content: semantic.sources[c], style.latent: style.sources[r]} for c in range(cols)]
              for r in range(rows)]
    return Grid(name, out_modality, semantic, style, cells, record)


@torch.no_grad()
def shared_latent_rows(
    model: MultimodalModel, src_modality: str, items: Sequence[np.ndarray],
    ids: Sequence[str] | None = None, tags: Sequence[str] | None = None,
) -> Grid:
    """JMVAE-kl demonstration (paper Fig. 2): z inferred from ``items`` of one modality by its
    unimodal encoder, decoded into every modality (one row per output modality, in
    ``model.modalities`` order). ``out_modality`` of the result is "mixed". The model's
    training mode is restored afterwards."""
    names = model.latent_names(src_modality)
    if len(names) != 1 or len(model.content_latents(src_modality)) != 1:
        raise RunDirError(f"the Fig. 2 demonstration needs a single shared content latent "
                          f"(JMVAE-kl); {model.name} has {list(names)}")
    src = infer_latents(model, src_modality, items, names[0], ids, tags)
    z = {names[0]: torch.as_tensor(src.z)}
    lengths = src.lengths() or [50] * len(src)
    cells, record = [], []
    was_training = model.training
    model.eval()
    try:
        for m in model.modalities:
            if model.specs[m].dynamic:  # (N, T, ...) frames, cut to each length
                out = model.decode(z, m, torch.as_tensor(lengths, dtype=torch.int64))
                cells.append([out[i, :n].cpu().numpy() for i, n in enumerate(lengths)])
            elif model.specs[m].kind == "image":  # (N, C, H, W) -> (H, W) tiles
                out = model.decode(z, m)
                cells.append(list(out.reshape(len(src), *out.shape[-2:]).cpu().numpy()))
            else:  # categorical / vector: one (C,) vector per item
                cells.append(list(model.decode(z, m).cpu().numpy()))
            record.append([{names[0]: s, "out": m} for s in src.sources])
    finally:
        model.train(was_training)
    return Grid(f"fig2_from_{src_modality}", "mixed", src, None, cells, record,
                list(model.modalities))


def pick_by_label(labels: Sequence[str], n: int, seed: int = 0,
                  classes: Sequence[str] | None = None) -> list[int]:
    """``n`` indices cycling through the classes in sorted order (one digit per column, as in
    the paper's figures), a seeded random example of each."""
    rng = np.random.default_rng(seed)
    labels = np.asarray([str(x) for x in labels])
    order = sorted(set(labels)) if classes is None else [str(c) for c in classes]
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in order}
    out: list[int] = []
    while len(out) < n and any(pools.values()):
        for c in order:
            if pools[c] and len(out) < n:
                out.append(int(pools[c].pop()))
    return out


def pick_styles(n: int, total: int, groups: Sequence[str] | None = None, seed: int = 1) -> list[int]:
    """``n`` seeded random indices in [0, total); with ``groups`` (e.g. speakers) they cycle
    through the groups so that consecutive rows differ in speaker."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [int(i) for i in rng.choice(total, size=min(n, total), replace=False)]
    g = np.asarray(list(groups))
    return pick_by_label(g, n, seed=seed, classes=[str(x) for x in rng.permutation(sorted(set(g)))])


# --------------------------------------------------------------------------- rendering


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to (h, w)."""
    ri = np.minimum((np.arange(h) * x.shape[0] / h).astype(int), x.shape[0] - 1)
    ci = np.minimum((np.arange(w) * x.shape[1] / w).astype(int), x.shape[1] - 1)
    return x[ri][:, ci]


def _tile(item: np.ndarray | None, kind: str, h: int, spec_range: tuple[float, float],
          to_logmel) -> np.ndarray:
    """RGB float tile (h, w, 3): images in grey, (C,) vectors as grey columns, speech (time across,
    Mel up) in magma."""
    import matplotlib

    if item is None:
        return np.full((h, h, 3), 0.5, np.float32)
    if np.ndim(item) == 1:  # a (C,) vector, e.g. class probabilities: one grey column per entry
        v = np.clip(np.asarray(item, np.float32), 0, 1)
        g = _resize(np.repeat(v[None, :], h, axis=0), h, h)
        return np.repeat(g[:, :, None], 3, axis=2)
    if kind == "image":
        g = np.clip(_resize(np.asarray(item, np.float32), h, h), 0, 1)
        return np.repeat(g[:, :, None], 3, axis=2)
    spec = to_logmel(np.asarray(item, np.float32)).T[::-1]  # (D, T), low bands at the bottom
    lo, hi = spec_range
    s = np.clip((_resize(spec, h, spec.shape[1]) - lo) / max(hi - lo, 1e-6), 0, 1)
    return matplotlib.colormaps["magma"](s)[:, :, :3].astype(np.float32)


def render_grid_png(
    grid: Grid, path: str | os.PathLike[str], to_logmel=None, title: str | None = None,
) -> Path:
    """Save a grid (atomically) in the paper's layout: top row = semantic sources, left column =
    style sources ("prior" tiles for prior draws), body = generated samples.

    ``to_logmel`` maps normalised (T, D) features to what is displayed (default identity;
    pass ``lambda f: features_to_logmel(f, normalizer)`` to show log-Mel power).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    to_logmel = to_logmel or (lambda f: f)
    rows, cols = grid.shape
    kinds_body = grid.row_modalities
    sem_kind = grid.semantic.modality or "prior"
    sty_kind = grid.style.modality if grid.style is not None and grid.style.modality else "prior"
    speech = [to_logmel(x) for r in range(rows) for x in grid.cells[r] if kinds_body[r] == "audio"]
    for s, k in ((grid.semantic, sem_kind), (grid.style, sty_kind)):
        if s is not None and k == "audio" and s.inputs is not None:
            speech += [to_logmel(x) for x in s.inputs]
    if speech:
        allv = np.concatenate([x.reshape(-1) for x in speech])
        spec_range = (float(np.percentile(allv, 2)), float(np.percentile(allv, 99.5)))
        h = int(speech[0].shape[1])
    else:
        spec_range, h = (0.0, 1.0), 28
    h = max(h, 28)
    header = [None] + [(x, sem_kind) for x in (grid.semantic.inputs or [None] * cols)]
    lines: list[list[Any]] = [header]
    for r in range(rows):
        left = None if grid.style is None else (
            (grid.style.inputs[r] if grid.style.inputs is not None else None), sty_kind)
        lines.append([left] + [(x, kinds_body[r]) for x in grid.cells[r]])
    tiles = [[None if t is None else _tile(t[0], t[1] if t[1] != "prior" else "image", h, spec_range,
                                           to_logmel) for t in line] for line in lines]
    for line in tiles:  # left column "prior" tiles when the style came from the prior
        if line is not tiles[0] and grid.style is not None and sty_kind == "prior":
            line[0] = np.full((h, h, 3), 0.5, np.float32)
    if sem_kind == "prior":
        tiles[0] = [None] + [np.full((h, h, 3), 0.5, np.float32) for _ in range(cols)]
    w = max(t.shape[1] for line in tiles for t in line if t is not None)
    gap, big = 2, 8
    width = (cols + 1) * (w + gap) + big
    height = (rows + 1) * (h + gap) + big
    canvas = np.ones((height, width, 3), np.float32)
    for i, line in enumerate(tiles):
        for j, t in enumerate(line):
            if t is None:
                continue
            y = i * (h + gap) + (big if i > 0 else 0)
            x = j * (w + gap) + (big if j > 0 else 0)
            canvas[y:y + t.shape[0], x:x + t.shape[1]] = t
    scale = 1.6 if h <= 28 else 1.0
    fig = Figure(figsize=(max(width * scale / 100 + 1.2, 3), height * scale / 100 + 0.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.02, 0.9, 0.88))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for j, tag in enumerate(grid.semantic.tags[:cols]):
        if tag:
            ax.text((j + 1) * (w + gap) + big + w / 2, -3, tag, ha="center", va="bottom", fontsize=7)
    if grid.style is not None:
        for i, tag in enumerate(grid.style.tags[:rows]):
            ax.text(-3, (i + 1) * (h + gap) + big + h / 2, tag, ha="right", va="center", fontsize=7)
    else:
        for i, k in enumerate(kinds_body):
            ax.text(-3, (i + 1) * (h + gap) + big + h / 2, f"-> {k}", ha="right", va="center",
                    fontsize=7)
    style_name = grid.style.latent if grid.style is not None else ""
    ax.set_title(title or f"{grid.name}: columns {grid.semantic.latent} from {sem_kind}"
                 + (f", rows {style_name} from {sty_kind}" if grid.style is not None else ""),
                 fontsize=9, pad=14)
    target = Path(path)
    atomic_write_with(target, lambda tmp: fig.savefig(tmp, format="png"))
    return target



# --------------------------------------------------------------------------- sequence models



def static_dynamic(model: MultimodalModel, modality: str) -> tuple[str, str] | None:
    """(static style latent f, dynamic content latent z_1:T) of ``modality`` from the model's
    declarations (DSAE), or None when ``modality`` does not inform exactly one of each and
    nothing else."""
    if modality not in model.modalities:
        return None
    mine = [model.latents[n] for n in model.latent_names(modality)]
    f = [v for v in mine if v.role == "style" and not v.dynamic]
    z = [v for v in mine if v.role == "content" and v.dynamic]
    if len(f) != 1 or len(z) != 1 or len(mine) != 2:
        return None
    return f[0].name, z[0].name


@dataclass
class SequenceLatents:
    """One axis of a :class:`SequenceGrid`: latents of one kind and where each came from.

    Attributes:
        latent: the latent they feed (a key of ``model.latents``).
        z: (N, D) static or (N, T, D) dynamic float32 values (zero past each length).
        lengths: (N,) frames of each source sequence (dynamic: the frames its z_1:T covers).
        sources: N ids, e.g. "speech:test[12]" or "prior[3]".
        tags: N captions (speaker, class, "prior").
        inputs: N source sequences (T_i, *frame) as fed to the encoder, or None for the prior.
    """

    latent: str
    z: np.ndarray
    lengths: list[int]
    sources: list[str]
    tags: list[str]
    inputs: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @property
    def inferred(self) -> bool:
        return self.inputs is not None


@dataclass
class SequenceGrid:
    """A decoded grid of a sequence model. ``cells[r][c]``: (T_c, *frame) decoder mean (T_c =
    ``cols.lengths[c]``); ``record[r][c]``: latent name -> source id that fed it."""

    name: str
    kind: str
    modality: str
    rows: SequenceLatents  # static f, one per row
    cols: SequenceLatents  # dynamic z_1:T, one per column
    cells: list[list[np.ndarray]]
    record: list[list[dict[str, str]]]
    checks: dict[str, Any] = field(default_factory=dict)  # e.g. :func:`swap_reidentification`

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.cells), len(self.cells[0]) if self.cells else 0

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON description: sources of both axes, the per-cell record and the checks."""
        def axis(s: SequenceLatents) -> dict[str, Any]:
            return {"latent": s.latent, "inferred": s.inferred, "sources": s.sources, "tags": s.tags,
                    "lengths": s.lengths}
        return {"name": self.name, "kind": self.kind, "out_modality": self.modality,
                "rows": self.shape[0], "cols": self.shape[1], "static (rows)": axis(self.rows),
                "dynamic (columns)": axis(self.cols), "cells": self.record, "checks": self.checks}


def _sequence_batch(modality: str, items: Sequence[np.ndarray]) -> dict[str, Sequences]:
    return {modality: Sequences.from_list([np.asarray(x, np.float32) for x in items])}


@torch.no_grad()
def infer_sequence_latents(
    model: MultimodalModel, modality: str, items: Sequence[np.ndarray], latent: str,
    ids: Sequence[str], tags: Sequence[str],
) -> SequenceLatents:
    """Posterior means of ``latent`` from sequences ``items`` ((T_i, *frame) each): (N, D) for a
    static latent, (N, T_max, D) for a dynamic one (zero past each length). Eval mode, the
    training mode restored."""
    if not items:
        raise ValueError("infer_sequence_latents needs at least one sequence")
    z = _posterior_mean(model, modality, _sequence_batch(modality, items), latent)
    lengths = [int(x.shape[0]) for x in items]
    if model.latents[latent].dynamic:
        z = z * (torch.arange(z.shape[1])[None, :] < torch.as_tensor(lengths)[:, None])[..., None]
    return SequenceLatents(latent, z.cpu().numpy().astype(np.float32), lengths, list(ids), list(tags),
                           [np.asarray(x) for x in items])


@torch.no_grad()
def prior_sequence_latents(model: MultimodalModel, latent: str, n: int, length: int, seed: int = 0
                           ) -> SequenceLatents:
    """``n`` draws of ``latent`` from the model's own prior (p(f) = N(0, I), or the learned
    p(z_t | z_<t) over ``length`` frames), seeded (``torch.manual_seed(seed)`` in a forked RNG,
    so the caller's random state is untouched)."""
    if n < 1 or length < 1:
        raise ValueError(f"prior_sequence_latents: n and length must be >= 1, got {n} and {length}")
    lengths = torch.full((n,), int(length), dtype=torch.int64)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = model.sample_prior(n, lengths)[latent]
    finally:
        model.train(was_training)
    return SequenceLatents(latent, z.cpu().numpy().astype(np.float32), [int(length)] * n,
                           [f"prior[{i}]" for i in range(n)], ["prior"] * n, None)


@torch.no_grad()
def decode_sequence_grid(model: MultimodalModel, modality: str, rows: SequenceLatents,
                         cols: SequenceLatents, name: str, kind: str, chunk: int = 256
                         ) -> SequenceGrid:
    """Cell (r, c) = ``model.decode({f: rows.z[r], z: cols.z[c]}, modality, cols.lengths[c])``;
    ``rows`` must feed the static style latent and ``cols`` the dynamic content latent
    (:func:`static_dynamic`). Decoded ``chunk`` cells at a time, eval mode (restored)."""
    pair = static_dynamic(model, modality)
    if pair is None:
        raise RunDirError(f"the run's {model.name} model has no static style latent and dynamic "
                          f"content latent for {modality!r} (latents {list(model.latent_names(modality))})")
    if (rows.latent, cols.latent) != pair:
        raise ValueError(f"rows must feed {pair[0]!r} and columns {pair[1]!r}, got "
                         f"{rows.latent!r} and {cols.latent!r}")
    n_r, n_c = len(rows), len(cols)
    f = torch.as_tensor(np.repeat(rows.z, n_c, axis=0))  # cell r*n_c + c <- row r
    z = torch.as_tensor(np.tile(cols.z, (n_r, 1, 1)))  # cell r*n_c + c <- column c
    lengths = torch.as_tensor(np.tile(np.asarray(cols.lengths), n_r), dtype=torch.int64)
    flat: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        for a in range(0, n_r * n_c, chunk):
            ln = lengths[a:a + chunk]
            out = model.decode({rows.latent: f[a:a + chunk], cols.latent: z[a:a + chunk, :int(ln.max())]},
                               modality, ln)
            flat += [out[i, :int(t)].cpu().numpy() for i, t in enumerate(ln)]
    finally:
        model.train(was_training)
    cells = [flat[r * n_c:(r + 1) * n_c] for r in range(n_r)]
    record = [[{rows.latent: rows.sources[r], cols.latent: cols.sources[c]} for c in range(n_c)]
              for r in range(n_r)]
    return SequenceGrid(name, kind, modality, rows, cols, cells, record)


def swap_reidentification(model: MultimodalModel, grid: SequenceGrid) -> dict[str, Any]:
    """Does a swapped sequence carry its row's f? Every generated cell is encoded again; the
    fraction of cells whose posterior mean of f is nearest (cosine) to the f of their own row
    among the rows' f ("f_row_nearest", chance 1 / rows; needs >= 2 rows of inferred f)."""
    if not grid.rows.inferred or len(grid.rows) < 2:
        return {}
    cells = [x for line in grid.cells for x in line]
    f_name = grid.rows.latent
    again = infer_sequence_latents(model, grid.modality, cells, f_name, [""] * len(cells),
                                   [""] * len(cells)).z
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nearest = np.argmax(unit(again) @ unit(grid.rows.z).T, axis=1)
    own = np.repeat(np.arange(len(grid.rows)), len(grid.cols))
    return {"f_row_nearest": float(np.mean(nearest == own)), "n": int(len(cells)),
            "chance": 1.0 / len(grid.rows)}


def frames_to_rgb(frames: np.ndarray) -> np.ndarray:
    """(T, C, H, W) frames in [0, 1] (C = 1 grey or 3 RGB; clipped) -> (T, H, W, 3) uint8."""
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (T, C, H, W) frames with C 1 or 3, got shape {x.shape}")
    x = np.clip(np.transpose(x, (0, 2, 3, 1)), 0.0, 1.0)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.round(x * 255).astype(np.uint8)


def frame_strip(frames: np.ndarray, gap: int = 1) -> np.ndarray:
    """(T, C, H, W) frames in [0, 1] -> one (H, T * (W + gap) - gap, 3) uint8 image, frames left to
    right, white gaps."""
    rgb = frames_to_rgb(frames)
    t, hh, ww, _ = rgb.shape
    strip = np.full((hh, t * (ww + gap) - gap, 3), 255, np.uint8)
    for i in range(t):
        strip[:, i * (ww + gap):i * (ww + gap) + ww] = rgb[i]
    return strip


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Save an (H, W, 3) uint8 image as PNG (Pillow, atomically)."""
    from PIL import Image

    target = Path(path)
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    atomic_write_with(target, lambda tmp: img.save(tmp, format="PNG"))
    return target


def write_gif(path: str | os.PathLike[str], frames: np.ndarray, fps: float = 10.0, scale: int = 1
              ) -> Path:
    """(T, C, H, W) frames in [0, 1] -> an animated GIF of T frames looping forever at ``fps``
    frames per second (Pillow, atomically), each pixel enlarged ``scale`` times.

    Under each frame a 3-pixel time bar fills to (t + 1) / T of the width: it shows where the
    loop is, and it keeps consecutive frames distinct (for T <= width), which Pillow would
    otherwise merge into one longer frame when they are identical.
    """
    from PIL import Image

    if fps <= 0 or scale < 1:
        raise ValueError(f"write_gif: fps must be > 0 and scale >= 1, got {fps} and {scale}")
    rgb = frames_to_rgb(frames)
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=1), scale, axis=2)
    t, _, ww, _ = rgb.shape
    bar = np.full((t, 3, ww, 3), 255, np.uint8)
    for i in range(t):
        bar[i, :, :max(1, int(round(ww * (i + 1) / t)))] = 90
    rgb = np.concatenate([rgb, bar], axis=1)
    images = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in rgb]
    ms = max(20, int(round(1000.0 / fps)))
    target = Path(path)
    atomic_write_with(target, lambda tmp: images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0))
    return target


def render_sequence_grid_png(grid: SequenceGrid, path: str | os.PathLike[str], tile, title: str = ""
                             ) -> Path:
    """Save a :class:`SequenceGrid` (atomically): top row = the z_1:T sources (grey for prior
    draws), left column = the f sources, body = generated sequences. ``tile`` maps a sequence
    (T, *frame) to an (h, w, 3) uint8 image (a frame strip, a spectrogram)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = grid.shape
    body = [[tile(x) for x in line] for line in grid.cells]
    h = max(t.shape[0] for line in body for t in line)
    w = max(t.shape[1] for line in body for t in line)
    left_w = w
    head = [tile(x) for x in grid.cols.inputs] if grid.cols.inputs is not None else None
    side = [tile(x) for x in grid.rows.inputs] if grid.rows.inputs is not None else None
    if side is not None:
        left_w = max(left_w, *(t.shape[1] for t in side))
    gap, big = 3, 10
    width = left_w + big + cols * (w + gap)
    height = h + big + rows * (h + gap)
    canvas = np.full((height, width, 3), 255, np.uint8)

    def put(t: np.ndarray | None, y: int, x: int, tw: int) -> None:
        if t is None:  # a prior draw: a grey tile
            canvas[y:y + h, x:x + tw] = 160
        else:
            canvas[y:y + t.shape[0], x:x + t.shape[1]] = t

    for c in range(cols):
        put(head[c] if head else None, 0, left_w + big + c * (w + gap), w)
    for r in range(rows):
        y = h + big + r * (h + gap)
        put(side[r] if side else None, y, 0, left_w)
        for c in range(cols):
            put(body[r][c], y, left_w + big + c * (w + gap), w)
    scale = 2.0 if h <= 40 else 1.0
    fig = Figure(figsize=(width * scale / 100 + 1.4, height * scale / 100 + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.02, 0.88, 0.86))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for c, tag in enumerate(grid.cols.tags[:cols]):
        ax.text(left_w + big + c * (w + gap) + w / 2, -3, tag, ha="center", va="bottom", fontsize=7)
    for r, tag in enumerate(grid.rows.tags[:rows]):
        ax.text(-3, h + big + r * (h + gap) + h / 2, tag, ha="right", va="center", fontsize=7)
    src = {True: "inferred", False: "prior"}
    ax.set_title(title or f"{grid.name}: rows {grid.rows.latent} ({src[grid.rows.inferred]}), "
                 f"columns {grid.cols.latent} ({src[grid.cols.inferred]})", fontsize=9, pad=14)
    target = Path(path)
    atomic_write_with(target, lambda tmp: fig.savefig(tmp, format="png"))
    return target
