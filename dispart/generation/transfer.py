"""Latent transfer between audio-visual sequences (MDVAE's swapping experiments) as arrays plus
their provenance.

A model with *shared dynamics* (:func:`shared_dynamics`, read from the latent declarations, never
from names or the model's class) has, over two or more dynamic modalities,

- one static latent informed by every modality (MDVAE's w: identity, global state);
- one dynamic content latent informed by every modality (z_av: lips and phonetic content);
- one dynamic latent private to each modality (z_a, z_v: the modality's own dynamics);

and nothing else. Its encoder infers from all modalities together (q(w | x_a, x_v)), so every
latent here is the posterior mean of a whole audio-visual sequence. A :class:`TransferPair`
takes a *target* and a *source* sequence of the test split and decodes the target with some of
its latents replaced by the source's (posterior means, each sequence encoded with its own w and
z_av, as :meth:`dispart.models.mdvae.MDVAE.transfer`); the static latent always stays the
target's. The rows of a pair are

    source (real), target (real), reconstruction (nothing transferred),
    transfer of the shared latent, of the shown modality's private latent, of both

where the *shown* modality is the first "frames" modality (the video: its private latent is
MDVAE's z_v, head and eye movements; the slides' three swaps) or, without one, the first
modality. Every decoded row records which sequence fed which latent (``record``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dispart.batches.batch import Sequences
from dispart.batches.pipeline import ExperimentData
from dispart.errors import RunDirError
from dispart.files import atomic_write_with
from dispart.generation.grids import pick_by_label
from dispart.models.base import MultimodalModel

__all__ = ["SharedDynamics", "shared_dynamics", "TransferPair", "transfer_rows", "row_label", "pick_pairs",
           "paired_rows", "decode_transfers", "build_transfers", "render_rows_png"]


@dataclass(frozen=True)
class SharedDynamics:
    """The latents of a model with shared dynamics (see the module docstring).

    Attributes:
        static: the static latent every modality informs (MDVAE's w).
        shared: the dynamic content latent every modality informs (z_av).
        private: modality -> its own dynamic latent (audio -> z_a, video -> z_v).
        shown: the modality whose private latent the transfers swap (the first "frames"
            modality, else the first one).
    """

    static: str
    shared: str
    private: dict[str, str]
    shown: str

    def to_json(self) -> dict[str, Any]:
        return {"static": self.static, "shared": self.shared, "private": dict(self.private),
                "shown": self.shown}


def shared_dynamics(model: MultimodalModel) -> SharedDynamics | None:
    """The :class:`SharedDynamics` of ``model`` from its declarations, or None: it needs two or
    more dynamic modalities, exactly one static latent informed by all of them (role "style"),
    one dynamic "content" latent informed by all of them, one dynamic latent private to each
    (role "style") and no other latent. MDVAE over audio and video has them; its unimodal
    counterparts A-DSAE / V-DSAE (one modality, w and z) do not, they are DSAE-like
    (:func:`dispart.generation.grids.static_dynamic`)."""
    mods = tuple(model.modalities)
    if len(mods) < 2 or not all(model.specs[m].dynamic for m in mods):
        return None
    every = set(mods)
    latents = list(model.latents.values())
    static = [v for v in latents if not v.dynamic and set(v.modalities) == every and v.role == "style"]
    shared = [v for v in latents if v.dynamic and set(v.modalities) == every and v.role == "content"]
    private = {m: [v for v in latents if v.dynamic and tuple(v.modalities) == (m,) and v.role == "style"]
               for m in mods}
    if (len(static) != 1 or len(shared) != 1 or any(len(p) != 1 for p in private.values())
            or len(latents) != 2 + len(mods)):
        return None
    frames = [m for m in mods if model.specs[m].kind == "frames"]
    return SharedDynamics(static[0].name, shared[0].name, {m: p[0].name for m, p in private.items()},
                          frames[0] if frames else mods[0])


def transfer_rows(sd: SharedDynamics) -> list[tuple[str, tuple[str, ...] | None]]:
    """(row name, latents taken from the source) of every row of a pair; None: real data.

    "source", "target", "reconstruction" (nothing transferred), then the shared latent, the
    shown modality's private latent, and both (named like the latents, joined by "+")."""
    private = sd.private[sd.shown]
    swaps = [(sd.shared,), (private,), (sd.shared, private)]
    return [("source", None), ("target", None), ("reconstruction", ()),
            *(("+".join(s), s) for s in swaps)]


@dataclass
class TransferPair:
    """One target and one source sequence and the rows decoded from them.

    Attributes:
        index: the pair's number.
        target, source: ids of the two sequences ("test:<example id>").
        target_tag, source_tag: captions (speaker, class).
        rows: row names (:func:`transfer_rows`).
        labels: per row a caption with the latents' symbols ("z^av_t from the source").
        transferred: per row the latents taken from the source (None for real data).
        record: per row latent -> the id of the sequence that fed it (decoded rows), or
            {"data": id} (real rows).
        cells: modality -> per row a (T, *frame) array: real data as fed to the encoder
            (normalised features, frames in [0, 1]; the source whole) or decoder means. T = the
            target's frames (cut to the source's length when the source is shorter).
        reads: modality -> the latents its decoder reads (a transfer of none of them leaves that
            modality as the reconstruction).
    """

    index: int
    target: str
    source: str
    target_tag: str
    source_tag: str
    rows: list[str]
    labels: list[str]
    transferred: list[tuple[str, ...] | None]
    record: list[dict[str, str]]
    cells: dict[str, list[np.ndarray]]
    reads: dict[str, tuple[str, ...]]

    @property
    def frames(self) -> int:
        return int(next(iter(self.cells.values()))[0].shape[0])

    def same_as_reconstruction(self, modality: str, row: int) -> bool:
        """Whether row ``row`` transfers only latents the decoder of ``modality`` does not read
        (e.g. z_v for the audio): that modality is then the reconstruction again."""
        moved = self.transferred[row]
        return bool(moved) and not any(k in self.reads[modality] for k in moved)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON description: the two sequences and, per row, which sequence fed which latent."""
        rows = [{"row": r, "name": name, "label": self.labels[r],
                 "transferred": None if t is None else list(t), "sources": self.record[r]}
                for r, (name, t) in enumerate(zip(self.rows, self.transferred, strict=True))]
        return {"name": f"transfer_{self.index}", "kind": "transfer", "frames": self.frames,
                "target": {"source": self.target, "tag": self.target_tag},
                "source": {"source": self.source, "tag": self.source_tag},
                "decoder_reads": {m: list(v) for m, v in self.reads.items()}, "rows": rows}


def row_label(model: MultimodalModel, name: str, moved: tuple[str, ...] | None) -> str:
    """Caption of a row: "source", "target", "target reconstructed" or "<symbols> from the source"."""
    if moved is None:
        return name
    if not moved:
        return "target reconstructed"
    return " + ".join(model.latents[k].symbol for k in moved) + " from the source"


def pick_pairs(labels: Sequence[str], n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` (target, source) index pairs of distinct sequences: 2n picks cycling through the
    classes (:func:`~dispart.generation.grids.pick_by_label`), paired consecutively, so target and
    source differ in class whenever there are two classes or more (fewer pairs when the set is
    small; none below two sequences)."""
    idx = pick_by_label(labels, 2 * n, seed=seed)
    return [(idx[2 * k], idx[2 * k + 1]) for k in range(len(idx) // 2)]


def paired_rows(data: ExperimentData, modalities: Sequence[str], split: str
                ) -> tuple[list[str], dict[str, list[int]]]:
    """Example ids of ``split`` present in every modality (order of the first) and, per modality,
    each one's position in that modality's set (the examples are joined by id, as training pairs
    them)."""
    sets = {m: data.split(m, split) for m in modalities}
    first = sets[modalities[0]]
    common = set(first.ids)
    for m in modalities[1:]:
        common &= set(sets[m].ids)
    ids = [e for e in first.ids if e in common]
    positions = {m: s.position() for m, s in sets.items()}
    return ids, {m: [positions[m][e] for e in ids] for m in modalities}


def _means(model: MultimodalModel, batch: dict[str, Sequences]) -> dict[str, torch.Tensor]:
    """Posterior means of every latent from ``batch`` (all modalities), eval mode, no gradients
    (the training mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {k: q.mean for k, q in model.encode(batch).items()}
    finally:
        model.train(was_training)


@torch.no_grad()
def decode_transfers(model: MultimodalModel, targets: dict[str, list[np.ndarray]],
                     sources: dict[str, list[np.ndarray]], sets: Sequence[tuple[str, ...]]
                     ) -> list[dict[str, list[np.ndarray]]]:
    """For every latent set of ``sets``: modality -> per pair the target decoded with those
    latents taken from the source (posterior means; a dynamic latent cut to the target's length;
    ``()``: the reconstruction). ``targets`` / ``sources``: modality -> per pair a (T, *frame)
    sequence; a source must be at least as long as its target. Decoded in eval mode (restored)."""
    mods = list(targets)
    lengths = torch.as_tensor([int(x.shape[0]) for x in targets[mods[0]]], dtype=torch.int64)
    src_len = [int(x.shape[0]) for x in sources[mods[0]]]
    if any(s < int(t) for s, t in zip(src_len, lengths, strict=True)):
        raise ValueError(f"decode_transfers: every source must be at least as long as its target "
                         f"(targets {lengths.tolist()}, sources {src_len})")
    z_t = _means(model, {m: Sequences.from_list(targets[m]) for m in mods})
    z_s = _means(model, {m: Sequences.from_list(sources[m]) for m in mods})
    t_max = int(lengths.max())
    mask = (torch.arange(t_max)[None, :] < lengths[:, None])[..., None]
    out = []
    was_training = model.training
    model.eval()
    try:
        for names in sets:
            z = dict(z_t)
            for k in names:
                z[k] = (z_s[k][:, :t_max] * mask.to(z_s[k].dtype)) if model.latents[k].dynamic else z_s[k]
            decoded = {m: model.decode(z, m, lengths) for m in mods}
            out.append({m: [x[i, :int(n)].cpu().numpy() for i, n in enumerate(lengths)]
                        for m, x in decoded.items()})
    finally:
        model.train(was_training)
    return out


def build_transfers(model: MultimodalModel, data: ExperimentData, n: int = 5, seed: int = 0,
                    split: str = "test") -> list[TransferPair]:
    """Up to ``n`` :class:`TransferPair` of ``split`` (see the module docstring). RunDirError when
    the model has no shared dynamics or the split has fewer than two audio-visual sequences."""
    sd = shared_dynamics(model)
    if sd is None:
        raise RunDirError(f"a {model.name} model over {list(model.modalities)} has no shared dynamics "
                          f"(a static latent and a dynamic content latent of every modality plus a "
                          f"private dynamic latent each, as MDVAE); latents {list(model.latents)}")
    mods = list(model.modalities)
    ids, pos = paired_rows(data, mods, split)
    first = data.split(mods[0], split)
    labels = [str(first.labels[i]) for i in pos[mods[0]]]
    speakers = first.speakers
    pairs = pick_pairs(labels, n, seed)
    if not pairs:
        raise RunDirError(f"the {split} split has {len(ids)} sequence(s) with every modality of "
                          f"{mods}; a transfer needs two")

    def item(m: str, k: int) -> np.ndarray:
        return np.asarray(data.split(m, split).examples[pos[m][k]], np.float32)

    def tag(k: int) -> str:
        who = speakers[pos[mods[0]][k]] if speakers else ""
        return f"{who}, {labels[k]}" if who else labels[k]

    targets = {m: [] for m in mods}
    sources = {m: [] for m in mods}
    for t, s in pairs:
        frames = min(int(item(mods[0], t).shape[0]), int(item(mods[0], s).shape[0]))
        for m in mods:
            targets[m].append(item(m, t)[:frames])
            sources[m].append(item(m, s))
    rows = transfer_rows(sd)
    decoded_sets = [t for _, t in rows if t is not None]
    decoded = dict(zip(decoded_sets, decode_transfers(model, targets, sources, decoded_sets), strict=True))
    out = []
    for i, (t, s) in enumerate(pairs):
        tid, sid = f"{split}:{ids[t]}", f"{split}:{ids[s]}"
        cells: dict[str, list[np.ndarray]] = {m: [] for m in mods}
        record: list[dict[str, str]] = []
        for name, moved in rows:
            if moved is None:  # real data: the source as a whole, the target as decoded
                real = sources if name == "source" else targets
                record.append({"data": sid if name == "source" else tid})
                for m in mods:
                    cells[m].append(real[m][i])
            else:
                record.append({k: sid if k in moved else tid for k in model.latents})
                for m in mods:
                    cells[m].append(decoded[moved][m][i])
        out.append(TransferPair(i, tid, sid, tag(t), tag(s), [r for r, _ in rows],
                                [row_label(model, r, m) for r, m in rows], [m for _, m in rows],
                                record, cells, {m: tuple(model.decoder_latents(m)) for m in mods}))
    return out


def render_rows_png(tiles: Sequence[np.ndarray], labels: Sequence[str], path: str | os.PathLike[str],
                    title: str = "") -> Path:
    """Save (atomically) ``tiles`` ((h_i, w_i, 3) uint8 images, e.g. frame strips) one under the
    other, each labelled on the left."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gap = 3
    width = max(t.shape[1] for t in tiles)
    height = sum(t.shape[0] for t in tiles) + gap * (len(tiles) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    centres, y = [], 0
    for t in tiles:
        canvas[y:y + t.shape[0], :t.shape[1]] = t
        centres.append(y + t.shape[0] / 2)
        y += t.shape[0] + gap
    scale = 1.5 if height < 600 else 1.0
    fig = Figure(figsize=(width * scale / 100, height * scale / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for c, text in zip(centres, labels, strict=True):
        ax.text(-4, c, text, ha="right", va="center", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    target = Path(path)  # the labels and title lie outside the axes: a tight box takes them in
    atomic_write_with(target, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight",
                                                      pad_inches=0.1))
    return target
