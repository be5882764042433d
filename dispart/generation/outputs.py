"""Generation outputs of a run: style-transfer, cross-modal and prior grids, wavs, spectrograms.

Everything lands in RUN_DIR/generated/ (or ``--out``), every file written atomically::

    manifest.json                 what was written, with the sources of every grid and the
                                  weights_sha256 of the model.safetensors it came from (written
                                  last; removed first when generating again, so a crash leaves
                                  no manifest describing half-written files)
    grids/NAME.png, NAME.json     grid image (top row semantic sources, left column style
                                  sources) and the per-cell record of which source fed which latent
    audio/NAME/r{R}_c{C}.wav      every generated utterance of speech grids (Griffin-Lim)
    audio/NAME/r{R}_c{C}.png      spectrograms of the first row
    audio/NAME/src_*.wav          the real utterances used as sources

Sequence models with a static style latent f and a dynamic content latent z_1:T (DSAE; read
from the declarations, :func:`~dispart.generation.grids.static_dynamic`) get the kinds "swap",
"fix_f" and "fix_z" (:data:`~dispart.generation.grids.SEQUENCE_KINDS`) instead; rows = sources of
f, columns = sources of z_1:T::

    grids/NAME.png, NAME.json     frame strips or spectrograms (top row z_1:T sources, left column
                                  f sources, grey = prior draw) and the per-cell record
    frames/NAME/r{R}_c{C}.gif     video modalities: every generated sequence as an animated GIF
    frames/NAME/r{R}_c{C}.png     ... and as a frame strip; src_{style,semantic}_{K}.gif/.png
                                  the real sequences that served as sources
    audio/NAME/r{R}_c{C}.wav      speech ("audio" log-Mel, or the "speech" log-spectrum segments
    audio/NAME/r{R}_c{C}.png      of data.loader=speech_segments): Griffin-Lim wavs and
                                  spectrograms of every cell; src_*.wav/.png the sources
                                  resynthesised the same way (they are segments, not whole files)

Audio-visual models with shared dynamics (MDVAE: static w, dynamic z_av shared by audio and video,
private dynamic z_a / z_v; read from the declarations,
:func:`~dispart.generation.transfer.shared_dynamics`) get the kind "transfer": ``--rows`` pairs of
test sequences, each target decoded with z_av, with z_v and with both taken from its source
(w stays the target's; :mod:`dispart.generation.transfer`), one manifest grid per pair::

    grids/transfer_{I}.png        frame strips of the video (rows: source, target, reconstruction,
                                  transfer z_av, z_v, both; columns: the frames), each row next to
                                  its audio spectrogram
    grids/transfer_{I}.json       the two sequences and, per row, which sequence fed which latent
    frames/transfer_{I}/{ROW}.gif every row as an animated GIF (and .png frame strip)
    audio/transfer_{I}/{ROW}.wav  every row heard: "audio" of data.loader=grid_clips (log power
    audio/transfer_{I}/{ROW}.png  spectrogram) through the normaliser's inverse and the loader's
                                  Griffin-Lim; its spectrogram
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dispart.batches.grid_clips import clip_audio_config
from dispart.batches.pipeline import ExperimentData, load_experiment_data, loader_names
from dispart.batches.segments import MODALITY as SEGMENTS_MODALITY
from dispart.batches.segments import spectrum_config
from dispart.errors import ConfigError, RunDirError
from dispart.files import atomic_write_json, atomic_write_with
from dispart.generation import GRID_KINDS, KINDS, SEQUENCE_KINDS, TRANSFER_KINDS
from dispart.generation.audio import (
    features_to_logmel,
    log_powers_to_waveforms,
    logmels_to_waveforms,
    spectra_to_waveforms,
    spectrogram_thumbnail,
    utterance_offset,
    write_wav,
)
from dispart.generation.grids import (
    Grid,
    LatentSet,
    SequenceGrid,
    content_latent,
    decode_grid,
    decode_sequence_grid,
    frame_strip,
    infer_latents,
    infer_sequence_latents,
    is_partitioned,
    pick_by_label,
    pick_styles,
    prior_latents,
    prior_sequence_latents,
    render_grid_png,
    render_sequence_grid_png,
    shared_latent_rows,
    static_dynamic,
    style_latent,
    swap_reidentification,
    write_gif,
    write_png,
)
from dispart.generation.transfer import (
    TransferPair,
    build_transfers,
    render_rows_png,
    shared_dynamics,
)
from dispart.runs import Run, load_run, require_speech_and_images

__all__ = ["KINDS", "build_grids", "write_grid_outputs", "generate", "generate_run", "SequenceView",
           "sequence_modality", "sequence_view", "build_sequence_grids", "write_sequence_outputs",
           "build_transfer_pairs", "write_transfer_outputs"]

class _Sources:
    """Test (or train) split items of both modalities with ids, tags and file paths."""

    def __init__(self, data: ExperimentData, split: str) -> None:
        sp, im = data.split("audio", split), data.split("image", split)
        self.split = split
        self.items = {"audio": sp.examples, "image": im.examples}
        self.labels = {"audio": list(sp.labels), "image": list(im.labels)}
        self.speakers = list(sp.speakers)
        self.paths = list(sp.paths)

    def semantic(self, modality: str, n: int, seed: int) -> list[int]:
        return pick_by_label(self.labels[modality], n, seed=seed)

    def style(self, modality: str, n: int, seed: int) -> list[int]:
        groups = self.speakers if modality == "audio" else None
        return pick_styles(n, len(self.labels[modality]), groups, seed=seed)

    def latents(self, run: Run, modality: str, idx: Sequence[int], latent: str,
                style_tags: bool = False) -> LatentSet:
        ids = [f"{modality}:{self.split}[{i}]" for i in idx]
        if modality == "audio":
            tags = [f"{self.speakers[i]}" if style_tags else self.labels["audio"][i] for i in idx]
        else:
            tags = ["" if style_tags else self.labels["image"][i] for i in idx]
        items = [self.items[modality][i] for i in idx]
        return infer_latents(run.model, modality, items, latent, ids, tags)


def _default_length(data: ExperimentData) -> int:
    return int(np.median(data.split("audio", "train").lengths()))


def build_grids(run: Run, data: ExperimentData, kinds: Sequence[str] = KINDS, cols: int = 10,
                rows: int = 5, seed: int = 0, split: str = "test") -> list[Grid]:
    """The requested grids for ``run`` (kinds the model cannot do are skipped only when
    ``kinds`` is the default; naming one explicitly raises RunDirError)."""
    if cols < 1 or rows < 1:
        raise ConfigError(f"--cols and --rows must be >= 1, got {cols} and {rows}")
    model = run.model
    src = _Sources(data, split)
    mods = [m for m in ("image", "audio") if m in model.modalities]
    partitioned = is_partitioned(model, mods)  # content + style latent per modality (PVAE)
    shared = all(len(model.latent_names(m)) == 1 and len(model.content_latents(m)) == 1
                 for m in mods) and len(mods) == 2
    explicit = tuple(kinds) != KINDS
    if explicit:
        for k in kinds:
            if k in SEQUENCE_KINDS:
                raise RunDirError(f"{run.path}: --kind {k} needs a model with a static style latent "
                                  f"and a dynamic content latent (DSAE); this run is a {model.name} "
                                  f"model")
            if k in TRANSFER_KINDS:
                raise RunDirError(f"{run.path}: --kind {k} needs an audio-visual model with shared "
                                  f"dynamics (MDVAE); this run is a {model.name} model")
            if k in ("style", "cross", "prior") and not partitioned:
                raise RunDirError(f"{run.path}: --kind {k} needs a PVAE run (a shared content "
                                  f"latent + a style latent per modality); this run is a "
                                  f"{model.name} model")
            if k == "cross" and len(mods) < 2:
                raise RunDirError(f"{run.path}: --kind cross needs both speech and images; the "
                                  f"model has {mods}")
            if k == "fig2" and not shared:
                raise RunDirError(f"{run.path}: --kind fig2 is the JMVAE-kl demonstration; this run "
                                  f"is a {model.name} model")
    if not partitioned and not shared:
        raise RunDirError(f"{run.path}: a {model.name} model over {mods} has nothing to generate "
                          f"across latents (needs PVAE or JMVAE-kl)")
    dlen = _default_length(data)
    grids: list[Grid] = []
    sem_idx = {m: src.semantic(m, cols, seed) for m in mods}
    sty_idx = {m: src.style(m, rows, seed + 1) for m in mods}
    if partitioned:
        sem = {m: src.latents(run, m, sem_idx[m], content_latent(model, m)) for m in mods}
        sty = {m: src.latents(run, m, sty_idx[m], style_latent(model, m), style_tags=True)
               for m in mods}
        if "style" in kinds:
            for m in mods:
                grids.append(decode_grid(model, sem[m], sty[m], m, f"style_{m}", dlen))
        if "cross" in kinds and len(mods) == 2:
            for a, b in (("audio", "image"), ("image", "audio")):
                grids.append(decode_grid(model, sem[a], sty[b], b, f"cross_{a}_to_{b}", dlen))
        if "prior" in kinds:
            for i, m in enumerate(mods):
                name = style_latent(model, m)
                dim = sty[m].z.shape[1]
                grids.append(decode_grid(model, sem[m], prior_latents(rows, dim, name, seed + 10 + i),
                                         m, f"prior_style_{m}", dlen))
                zs = prior_latents(cols, sem[m].z.shape[1], content_latent(model, m), seed + 20 + i)
                grids.append(decode_grid(model, zs, sty[m], m, f"prior_semantic_{m}", dlen))
    if shared and "fig2" in kinds:
        for m in mods:
            idx = sem_idx[m]
            grids.append(shared_latent_rows(
                model, m, [src.items[m][i] for i in idx], [f"{m}:{split}[{i}]" for i in idx],
                [src.labels[m][i] for i in idx]))
    return grids


def _speech_rows(grid: Grid) -> list[int]:
    return [r for r, m in enumerate(grid.row_modalities) if m == "audio"]


def write_grid_outputs(run: Run, grid: Grid, out: Path, data: ExperimentData | None = None,
                       audio: bool = True, n_iter: int = 32, offset: np.ndarray | None = None,
                       spectrogram_rows: int = 1) -> dict[str, Any]:
    """Write one grid's PNG + JSON record and (speech grids) wavs and spectrograms.

    Returns the manifest entry (paths relative to ``out``).
    """
    def to_logmel(f: np.ndarray) -> np.ndarray:
        return features_to_logmel(f, run.normalizer, offset)

    png = render_grid_png(grid, out / "grids" / f"{grid.name}.png", to_logmel)
    atomic_write_json(out / "grids" / f"{grid.name}.json", grid.to_json())
    entry: dict[str, Any] = {"name": grid.name, "png": str(png.relative_to(out)),
                             "json": f"grids/{grid.name}.json", "shape": list(grid.shape),
                             "out_modality": grid.out_modality, "audio": [], "sources_audio": []}
    rows = _speech_rows(grid)
    if not audio or not rows:
        return entry
    folder = out / "audio" / grid.name
    sr = run.fbank.sample_rate
    allv = np.concatenate([to_logmel(f).reshape(-1) for r in rows for f in grid.cells[r]])
    vrange = (float(np.percentile(allv, 2)), float(np.percentile(allv, 99.5)))
    for r in rows:
        logmels = [to_logmel(f) for f in grid.cells[r]]
        waves = logmels_to_waveforms(logmels, run.fbank, n_iter)
        for c, (logmel, wave) in enumerate(zip(logmels, waves, strict=True)):
            wav = write_wav(folder / f"r{r}_c{c}.wav", wave, sr)
            item = {"row": r, "col": c, "wav": str(wav.relative_to(out)), "sources": grid.record[r][c]}
            if r < spectrogram_rows or (grid.out_modality == "mixed" and r == rows[0]):
                spec = spectrogram_thumbnail(logmel, folder / f"r{r}_c{c}.png", *vrange)
                item["spectrogram"] = str(spec.relative_to(out))
            entry["audio"].append(item)
    # the real utterances that served as sources (copied as they are)
    if data is not None:
        for axis, s in (("semantic", grid.semantic), ("style", grid.style)):
            if s is None or s.modality != "audio":
                continue
            for k, sid in enumerate(s.sources):
                split, i = sid.split(":")[1].split("[")
                paths = data.split("audio", split).paths
                target = folder / f"src_{axis}_{k}.wav"
                source = paths[int(i.rstrip("]"))]
                atomic_write_with(target, lambda tmp, src=source: shutil.copyfile(src, tmp))
                entry["sources_audio"].append({"axis": axis, "index": k, "source": sid,
                                               "tag": s.tags[k], "wav": str(target.relative_to(out))})
    return entry


def generate(run: Run, data: ExperimentData, out: str | Path, kinds: Sequence[str] = KINDS,
             cols: int = 10, rows: int = 5, seed: int = 0, split: str = "test", audio: bool = True,
             n_iter: int = 32) -> dict[str, Any]:
    """Build the grids and write every output into ``out``; returns (and writes) the manifest,
    which records the ``weights_sha256`` of the run's model (outputs of other weights are stale).
    Sequence models (:func:`sequence_modality`) get the "swap" / "fix_f" / "fix_z" grids,
    audio-visual models with shared dynamics (MDVAE) ``rows`` "transfer" pairs
    (:func:`build_transfer_pairs`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    modality = sequence_modality(run.model)
    shared = shared_dynamics(run.model)
    extra: dict[str, Any] = {}
    if shared is not None:
        pairs = build_transfer_pairs(run, data, kinds, rows, seed, split)
        views = {m: sequence_view(run, data, m) for m in run.model.modalities}
        entries = [write_transfer_outputs(p, out, views, shared.shown, audio, n_iter) for p in pairs]
        extra = {"view": "transfer", "views": {m: v.kind for m, v in views.items()},
                 "frame_rate": views[shared.shown].fps, "latents": shared.to_json()}
    elif modality is not None:
        grids = build_sequence_grids(run, data, kinds, cols, rows, seed, split)
        view = sequence_view(run, data, modality)
        entries = [write_sequence_outputs(g, out, view, audio, n_iter) for g in grids]
        extra = {"sequence_modality": modality, "view": view.kind, "frame_rate": view.fps}
    else:
        grids = build_grids(run, data, kinds, cols, rows, seed, split)
        offset = utterance_offset(run) if audio else None
        entries = [write_grid_outputs(run, g, out, data, audio, n_iter, offset) for g in grids]
    manifest = {"run": str(run.path), "weights_sha256": run.weights_sha256,
                "model": run.display_name, "model_type": run.model.name,
                "split": split, "seed": seed, "cols": cols, "rows": rows, "griffin_lim_iters": n_iter,
                "normalize": run.config.data.normalize, **extra,
                "seconds": round(time.perf_counter() - t0, 2), "grids": entries}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def generate_run(run_dir: str | Path, out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`generate` for a run folder (output default RUN_DIR/generated)."""
    run = load_run(run_dir)
    if sequence_modality(run.model) is None and shared_dynamics(run.model) is None:
        require_speech_and_images(run, "dispart generate (or a sequence model such as DSAE or MDVAE)")
    data = load_experiment_data(run.config.data, progress=False, normalizers=run.normalizers)
    return generate(run, data, Path(out) if out else Path(run_dir) / "generated", **kwargs)


# --------------------------------------------------------------------------- sequence models


def sequence_modality(model) -> str | None:
    """The modality whose static style latent f and dynamic content latent z_1:T the model
    declares (DSAE's one modality), or None (not a sequence model: PVAE, JMVAE, ...)."""
    found = [m for m in model.modalities if static_dynamic(model, m) is not None]
    return found[0] if len(found) == 1 else None


@dataclass
class SequenceView:
    """How the sequences of one modality are shown and heard.

    Attributes:
        kind: "frames" (video), "logmel" (the "audio" log-Mel of the speech loaders), "spectrum"
            (the "speech" log-magnitude segments of ``speech_segments``), "power" (the "audio"
            log power spectrogram of ``grid_clips``) or "features" (anything else: a heat map
            of the features, nothing to hear).
        fps: frames per second (the modality's frame rate; 10 when it records none).
        display: (T, D) model features -> (T, D) values shown (log power / log magnitude).
        waves: displayed arrays, Griffin-Lim iterations -> waveforms; None: not audio.
        sample_rate: Hz of ``waves``.
    """

    kind: str
    fps: float
    display: Callable[[np.ndarray], np.ndarray]
    waves: Callable[[list[np.ndarray], int], list[np.ndarray]] | None = None
    sample_rate: int = 0


def sequence_view(run: Run, data: ExperimentData, modality: str) -> SequenceView:
    """The :class:`SequenceView` of ``modality``: inverse normalisation with the statistics the
    data was normalised with (the run's own when it stores them; refitting on the same training
    split gives the same), plus the training mean frame with ``data.normalize`` utterance / speaker."""
    spec = data.spec(modality)
    fps = float(spec.frame_rate or 10.0)
    if spec.kind == "frames":
        return SequenceView("frames", fps, lambda x: x)
    norm = data.normalizers.get(modality)
    if norm is None and modality == "audio":
        norm = run.normalizer
    centred = run.config.data.normalize != "global"
    loaders = loader_names(run.config.data)
    if modality == "audio" and norm is not None and "grid_clips" in loaders and spec.frame_rate:
        # log power aligned with video frames (not log-Mel, whatever its size)
        acfg = clip_audio_config(run.config.data, fps)
        if tuple(spec.shape) == (acfg.n_bins,):
            off = getattr(norm, "utterance_offset", None) if centred else None
            return SequenceView("power", fps, lambda x: features_to_logmel(x, norm, off),
                                lambda xs, n_iter: log_powers_to_waveforms(xs, acfg, n_iter),
                                acfg.sample_rate)
    if modality == "audio" and norm is not None and tuple(spec.shape) == (run.fbank.n_mels,):
        offset = utterance_offset(run)
        fb = run.fbank
        return SequenceView("logmel", fps, lambda x: features_to_logmel(x, norm, offset),
                            lambda xs, n_iter: logmels_to_waveforms(xs, fb, n_iter), fb.sample_rate)
    scfg = spectrum_config(run.config.data)
    if (modality == SEGMENTS_MODALITY and norm is not None and tuple(spec.shape) == (scfg.n_bins,)
            and "speech_segments" in loaders):
        off = getattr(norm, "utterance_offset", None) if centred else None
        return SequenceView("spectrum", fps, lambda x: features_to_logmel(x, norm, off),
                            lambda xs, n_iter: spectra_to_waveforms(xs, scfg, n_iter), scfg.sample_rate)
    if norm is not None:
        return SequenceView("features", fps, lambda x: features_to_logmel(x, norm, None))
    return SequenceView("features", fps, lambda x: np.asarray(x, np.float32))


class _SequenceSources:
    """The examples of one sequence modality and split: f sources cycle through the groups of
    the static factor (speakers, Sprites characters), z_1:T sources through the classes."""

    def __init__(self, data: ExperimentData, modality: str, split: str) -> None:
        s = data.split(modality, split)
        self.modality, self.split, self.set = modality, split, s
        groups = s.speakers or s.meta.get("character")
        self.groups = [str(g) for g in groups] if groups else None
        self.labels = [str(x) for x in s.labels]

    def ids(self, idx: Sequence[int]) -> list[str]:
        return [f"{self.modality}:{self.split}[{i}]" for i in idx]

    def items(self, idx: Sequence[int]) -> list[np.ndarray]:
        return [np.asarray(self.set.examples[i], np.float32) for i in idx]

    def static(self, run: Run, latent: str, n: int, seed: int):
        idx = pick_styles(n, len(self.labels), self.groups, seed=seed)
        tags = [self.groups[i] if self.groups else self.labels[i] for i in idx]
        return infer_sequence_latents(run.model, self.modality, self.items(idx), latent, self.ids(idx), tags)

    def dynamic(self, run: Run, latent: str, n: int, seed: int):
        idx = pick_by_label(self.labels, n, seed=seed)
        tags = [self.labels[i] for i in idx]
        return infer_sequence_latents(run.model, self.modality, self.items(idx), latent, self.ids(idx), tags)


def _median_length(data: ExperimentData, modality: str, limit: int = 500) -> int:
    s = data.split(modality, "train")
    return int(np.median([int(np.shape(s.examples[i])[0]) for i in range(min(limit, len(s.examples)))]))


def build_sequence_grids(run: Run, data: ExperimentData, kinds: Sequence[str] = KINDS, cols: int = 10,
                         rows: int = 5, seed: int = 0, split: str = "test") -> list[SequenceGrid]:
    """The "swap", "fix_f" and "fix_z" grids of a sequence model (rows = f, columns = z_1:T; see
    :mod:`dispart.generation.grids`); prior draws of z_1:T last the training split's median
    length. Naming a PVAE/JMVAE kind explicitly is a RunDirError; the default runs all three."""
    if cols < 1 or rows < 1:
        raise ConfigError(f"--cols and --rows must be >= 1, got {cols} and {rows}")
    model = run.model
    modality = sequence_modality(model)
    if modality is None:
        raise RunDirError(f"{run.path}: a {model.name} model has no static style latent and dynamic "
                          f"content latent of one modality (a DSAE run); use the grid kinds {GRID_KINDS}")
    wrong = [k for k in kinds if k not in SEQUENCE_KINDS] if tuple(kinds) != KINDS else []
    if wrong:
        what = "a PVAE/JMVAE grid" if wrong[0] in GRID_KINDS else "for audio-visual models (MDVAE)"
        raise RunDirError(f"{run.path}: --kind {wrong[0]} is {what}; a {model.name} model "
                          f"(static f + dynamic z_1:T over {modality!r}) has the kinds {SEQUENCE_KINDS}")
    f_name, z_name = static_dynamic(model, modality)  # type: ignore[misc]
    src = _SequenceSources(data, modality, split)
    want = [k for k in SEQUENCE_KINDS if k in kinds]
    f_src = src.static(run, f_name, rows, seed + 1) if {"swap", "fix_f"} & set(want) else None
    z_src = src.dynamic(run, z_name, cols, seed) if {"swap", "fix_z"} & set(want) else None
    grids: list[SequenceGrid] = []
    for k in want:
        if k == "swap":
            r, c = f_src, z_src
        elif k == "fix_f":
            r, c = f_src, prior_sequence_latents(model, z_name, cols, _median_length(data, modality),
                                                 seed + 20)
        else:
            r, c = prior_sequence_latents(model, f_name, rows, 1, seed + 10), z_src
        grids.append(decode_sequence_grid(model, modality, r, c, f"{k}_{modality}", k))  # type: ignore[arg-type]
        if k == "swap":
            grids[-1].checks = swap_reidentification(model, grids[-1])
    return grids


def _spectrogram_tile(logspec: np.ndarray, lo: float, hi: float, scale: int = 3) -> np.ndarray:
    """(T, D) log power -> (D, T * scale, 3) uint8 magma image, low bands at the bottom."""
    import matplotlib

    x = np.clip((np.asarray(logspec, np.float32).T[::-1] - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = matplotlib.colormaps["magma"](np.repeat(x, scale, axis=1))[:, :, :3]
    return np.round(rgb * 255).astype(np.uint8)


def write_sequence_outputs(grid: SequenceGrid, out: Path, view: SequenceView, audio: bool = True,
                           n_iter: int = 32, gif_scale: int = 2) -> dict[str, Any]:
    """Write one sequence grid: PNG + JSON record, then per cell and per real source a GIF and a
    frame strip (video) or a wav and a spectrogram (speech, ``audio``). Returns the manifest
    entry (paths relative to ``out``); source axes are "style" (rows, f) and "semantic"
    (columns, z_1:T), as in the PVAE grids."""
    name = grid.name
    entry: dict[str, Any] = {
        "name": name, "kind": grid.kind, "json": f"grids/{name}.json", "shape": list(grid.shape),
        "out_modality": grid.modality, "rows_latent": grid.rows.latent, "cols_latent": grid.cols.latent,
        "checks": grid.checks, "audio": [], "sources_audio": [], "animations": [], "sources_animations": []}
    sources = [("style", grid.rows), ("semantic", grid.cols)]
    if view.kind == "frames":
        tile = frame_strip
        folder = out / "frames" / name

        def animate(x: np.ndarray, stem: str) -> dict[str, Any]:
            gif = write_gif(folder / f"{stem}.gif", x, view.fps, gif_scale)
            strip = write_png(folder / f"{stem}.png", frame_strip(x))
            return {"gif": str(gif.relative_to(out)), "strip": str(strip.relative_to(out)),
                    "frames": int(x.shape[0])}

        for r, line in enumerate(grid.cells):
            for c, x in enumerate(line):
                entry["animations"].append({"row": r, "col": c, **animate(x, f"r{r}_c{c}"),
                                            "sources": grid.record[r][c]})
        for axis, s in sources:
            for k, x in enumerate(s.inputs or []):
                entry["sources_animations"].append({"axis": axis, "index": k, "source": s.sources[k],
                                                    "tag": s.tags[k], **animate(x, f"src_{axis}_{k}")})
    else:
        shown = {(r, c): view.display(x) for r, line in enumerate(grid.cells) for c, x in enumerate(line)}
        src_shown = {(axis, k): view.display(x) for axis, s in sources for k, x in enumerate(s.inputs or [])}
        allv = np.concatenate([x.reshape(-1) for x in [*shown.values(), *src_shown.values()]])
        lo, hi = float(np.percentile(allv, 2)), float(np.percentile(allv, 99.5))

        def tile(x: np.ndarray) -> np.ndarray:
            return _spectrogram_tile(view.display(x), lo, hi)

        if audio and view.waves is not None:
            folder = out / "audio" / name
            keys = list(shown) + list(src_shown)
            waves = view.waves([shown[k] for k in shown] + [src_shown[k] for k in src_shown], n_iter)
            for key, wave in zip(keys, waves, strict=True):
                arr = shown.get(key) if key in shown else src_shown[key]
                stem = f"r{key[0]}_c{key[1]}" if key in shown else f"src_{key[0]}_{key[1]}"
                wav = write_wav(folder / f"{stem}.wav", wave, view.sample_rate)
                spec = write_png(folder / f"{stem}.png", _spectrogram_tile(arr, lo, hi, scale=2))
                item = {"wav": str(wav.relative_to(out)), "spectrogram": str(spec.relative_to(out))}
                if key in shown:
                    r, c = key
                    entry["audio"].append({"row": r, "col": c, **item, "sources": grid.record[r][c]})
                else:
                    axis, k = key
                    s = grid.rows if axis == "style" else grid.cols
                    entry["sources_audio"].append({"axis": axis, "index": k, "source": s.sources[k],
                                                   "tag": s.tags[k], **item})
    png = render_sequence_grid_png(grid, out / "grids" / f"{name}.png", tile)
    entry["png"] = str(png.relative_to(out))
    atomic_write_json(out / "grids" / f"{name}.json", grid.to_json())
    return entry


# --------------------------------------------------------------------------- audio-visual transfer


def build_transfer_pairs(run: Run, data: ExperimentData, kinds: Sequence[str] = KINDS, n: int = 5,
                         seed: int = 0, split: str = "test") -> list[TransferPair]:
    """The "transfer" pairs of an audio-visual model with shared dynamics (MDVAE; see
    :mod:`dispart.generation.transfer`): ``n`` (target, source) pairs of ``split``. Naming any
    other kind explicitly is a RunDirError; the default runs "transfer"."""
    if n < 1:
        raise ConfigError(f"--rows (transfer pairs) must be >= 1, got {n}")
    model = run.model
    wrong = [k for k in kinds if k not in TRANSFER_KINDS] if tuple(kinds) != KINDS else []
    if wrong:
        raise RunDirError(f"{run.path}: --kind {wrong[0]} is not for a {model.name} model over "
                          f"{list(model.modalities)} (shared dynamics: static w, dynamic z_av, a private "
                          f"dynamic latent per modality); it has the kinds {TRANSFER_KINDS}")
    if not set(TRANSFER_KINDS) & set(kinds):
        return []
    return build_transfers(model, data, n, seed, split)


def _animation(x: np.ndarray, folder: Path, stem: str, out: Path, fps: float, scale: int) -> dict[str, Any]:
    """A GIF and a frame strip of the video ``x`` (T, C, H, W); their paths relative to ``out``."""
    gif = write_gif(folder / f"{stem}.gif", x, fps, scale)
    strip = write_png(folder / f"{stem}.png", frame_strip(x))
    return {"gif": str(gif.relative_to(out)), "strip": str(strip.relative_to(out)), "frames": int(x.shape[0])}


def _fit(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W, 3) image to (h, w, 3)."""
    ri = np.minimum((np.arange(h) * rgb.shape[0] / h).astype(int), rgb.shape[0] - 1)
    ci = np.minimum((np.arange(w) * rgb.shape[1] / w).astype(int), rgb.shape[1] - 1)
    return rgb[ri][:, ci]


def write_transfer_outputs(pair: TransferPair, out: Path, views: dict[str, SequenceView], shown: str,
                           audio: bool = True, n_iter: int = 32, gif_scale: int = 2) -> dict[str, Any]:
    """Write one transfer pair: the PNG of its rows (``shown`` as frame strips or spectrograms,
    every other modality's spectrogram beside it, resized to the same height and time axis), the
    JSON record, a GIF and frame strip per row of every video modality, a wav and spectrogram per
    row of every audio modality (``audio``). Returns the manifest entry (paths relative to
    ``out``); every file entry carries "row" (and "col" 0), the row's "name" and "label", its
    "modality", "sources" (latent -> sequence id, or "data" -> id for real data) and
    "same_as_reconstruction" (the row transfers only latents this modality's decoder ignores)."""
    name = f"transfer_{pair.index}"
    rows = range(len(pair.rows))
    entry: dict[str, Any] = {
        "name": name, "kind": "transfer", "json": f"grids/{name}.json",
        "shape": [len(pair.rows), pair.frames], "out_modality": shown,
        "target": {"source": pair.target, "tag": pair.target_tag},
        "source": {"source": pair.source, "tag": pair.source_tag},
        "rows": pair.to_json()["rows"], "checks": {}, "audio": [], "sources_audio": [], "animations": [],
        "sources_animations": []}

    def stem(m: str, r: int) -> str:  # e.g. video_r5_z_av-z_v
        return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{m}_r{r}_{pair.rows[r]}")

    def item(m: str, r: int) -> dict[str, Any]:
        return {"row": r, "col": 0, "name": pair.rows[r], "label": pair.labels[r], "modality": m,
                "sources": pair.record[r],
                "same_as_reconstruction": pair.same_as_reconstruction(m, r)}

    tiles: dict[str, list[np.ndarray]] = {}
    for m, view in views.items():
        cells = pair.cells[m]
        if view.kind == "frames":
            tiles[m] = [frame_strip(x) for x in cells]
            folder = out / "frames" / name
            for r in rows:
                entry["animations"].append({**item(m, r), **_animation(
                    cells[r], folder, stem(m, r), out, view.fps, gif_scale)})
            continue
        shown_x = [view.display(x) for x in cells]
        allv = np.concatenate([x.reshape(-1) for x in shown_x])
        lo, hi = float(np.percentile(allv, 2)), float(np.percentile(allv, 99.5))
        scale = max(2, int(round(60 / max(1, pair.frames))))
        specs = [_spectrogram_tile(x, lo, hi, scale=scale) for x in shown_x]
        tiles[m] = specs
        if not (audio and view.waves is not None):
            continue
        folder = out / "audio" / name
        waves = view.waves(shown_x, n_iter)
        for r in rows:
            wav = write_wav(folder / f"{stem(m, r)}.wav", waves[r], view.sample_rate)
            spec = write_png(folder / f"{stem(m, r)}.png", specs[r])
            entry["audio"].append({**item(m, r), "wav": str(wav.relative_to(out)),
                                   "spectrogram": str(spec.relative_to(out))})
    main = tiles[shown]
    combined = []
    for r in rows:
        h, w = main[r].shape[:2]
        parts = [main[r]]
        for m, t in tiles.items():
            if m != shown:
                parts += [np.full((h, 6, 3), 255, np.uint8), _fit(t[r], h, w)]
        combined.append(np.concatenate(parts, axis=1))
    others = [f"{m} {'features' if views[m].kind == 'features' else 'spectrogram'}"
              for m in tiles if m != shown]
    title = (f"{name}: target {pair.target} ({pair.target_tag}), source {pair.source} ({pair.source_tag})"
             + (f"; right: {', '.join(others)}" if others else ""))
    png = render_rows_png(combined, pair.labels, out / "grids" / f"{name}.png", title)
    entry["png"] = str(png.relative_to(out))
    atomic_write_json(out / "grids" / f"{name}.json", pair.to_json())
    return entry
