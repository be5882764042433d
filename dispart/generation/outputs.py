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
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dispart.batches.pipeline import ExperimentData, load_experiment_data
from dispart.errors import ConfigError, RunDirError
from dispart.files import atomic_write_json, atomic_write_with
from dispart.generation import KINDS
from dispart.generation.audio import (
    features_to_logmel,
    logmels_to_waveforms,
    spectrogram_thumbnail,
    utterance_offset,
    write_wav,
)
from dispart.generation.grids import (
    Grid,
    LatentSet,
    content_latent,
    decode_grid,
    infer_latents,
    is_partitioned,
    pick_by_label,
    pick_styles,
    prior_latents,
    render_grid_png,
    shared_latent_rows,
    style_latent,
)
from dispart.runs import Run, load_run, require_speech_and_images

__all__ = ["KINDS", "build_grids", "write_grid_outputs", "generate", "generate_run"]

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
    which records the ``weights_sha256`` of the run's model (outputs of other weights are stale)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    grids = build_grids(run, data, kinds, cols, rows, seed, split)
    offset = utterance_offset(run) if audio else None
    entries = [write_grid_outputs(run, g, out, data, audio, n_iter, offset) for g in grids]
    manifest = {"run": str(run.path), "weights_sha256": run.weights_sha256,
                "model": run.display_name, "model_type": run.model.name,
                "split": split, "seed": seed, "cols": cols, "rows": rows, "griffin_lim_iters": n_iter,
                "normalize": run.config.data.normalize,
                "seconds": round(time.perf_counter() - t0, 2), "grids": entries}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def generate_run(run_dir: str | Path, out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`generate` for a run folder (output default RUN_DIR/generated)."""
    run = load_run(run_dir)
    require_speech_and_images(run, "dispart generate")
    data = load_experiment_data(run.config.data, progress=False, normalizer=run.normalizer)
    return generate(run, data, Path(out) if out else Path(run_dir) / "generated", **kwargs)
