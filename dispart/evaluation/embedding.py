"""2-D t-SNE embeddings of test latents (paper Figs. 11-15), kept in RUN_DIR/embedding.json.

Which embeddings a run gets follows from its model's latent declarations
(:mod:`dispart.models.latents`), not from latent names:

- each content latent inferred from each modality alone, coloured by digit (Figs. 11-12);
- a content latent shared by speech and image, pooled over both (Fig. 13: 'o' speech, 'x' image);
- each style latent, coloured by digit (Figs. 14-15: no digit clusters expected) and, for speech,
  by speaker.

:func:`ensure_embedding` reuses ``embedding.json`` when it was computed from the run's current
weights with the same seed and number of points, else computes and writes it (atomically, with
``weights_sha256``); :func:`draw_embeddings` draws each embedding from its stored coordinates.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dispart.evaluation.latents import clustered_modalities, modality_latents
from dispart.evaluation.plots import MARKER_CYCLE, MAX_LEGEND_LABELS
from dispart.evaluation.table import fresh_run_output, write_run_output
from dispart.files import atomic_write_with
from dispart.models.latents import of_modality

if TYPE_CHECKING:
    from dispart.batches.pipeline import ExperimentData
    from dispart.runs import Run

__all__ = ["EMBEDDING_FILE", "tsne_2d", "embed_test_latents", "ensure_embedding", "plot_embedding",
           "draw_embeddings"]

EMBEDDING_FILE = "embedding.json"
COLUMN = {"audio": "speech"}  # modality -> the name shown (Table 1 column)


def tsne_2d(latents: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) latents -> (N, 2) float64 t-SNE coordinates (scikit-learn, PCA initialisation,
    perplexity min(30, (N - 1) / 3) floored at 1, ``random_state=seed``); N >= 2."""
    from sklearn.manifold import TSNE

    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"latents must be an (N, D) array with N >= 2, got shape {x.shape}")
    perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca",
                random_state=seed).fit_transform(x)


def _entry(name: str, latent: Any, colour_by: str, z: np.ndarray, labels: np.ndarray, seed: int,
           title: str, caption: str, groups: np.ndarray | None = None) -> dict[str, Any]:
    return {"name": name, "latent": latent.name, "symbol": latent.symbol, "role": latent.role,
            "colour_by": colour_by, "title": title, "caption": caption,
            "xy": tsne_2d(z, seed), "labels": [str(v) for v in labels],
            "groups": None if groups is None else [str(g) for g in groups]}


def embed_test_latents(run: Run, data: ExperimentData, points: int = 500, seed: int = 0
                       ) -> dict[str, Any]:
    """t-SNE embeddings of the test latents of ``run`` (at most ``points`` random test items per
    modality, drawn with ``seed``); see the module docstring for which. Returns
    ``{"seed", "points", "embeddings": [{"name", "latent", "symbol", "role", "colour_by",
    "title", "caption", "xy": (n, 2), "labels": (n,), "groups": (n,) or None}, ...]}``."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    model = run.model
    rng = np.random.default_rng(seed)

    def sub(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, min(n, points), replace=False))

    # modality -> (latent name -> (n, D), digit labels, speakers or None)
    lat: dict[str, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]] = {}
    tests = {m: data.split(m, "test") for m in data.modalities}
    for m in clustered_modalities(model, tests):  # speech, image, then others
        test = tests[m]
        idx = sub(len(test))
        examples = ([test.examples[i] for i in idx] if isinstance(test.examples, list)
                    else np.asarray(test.examples)[idx])
        lat[m] = (modality_latents(model, m, examples), np.asarray(test.labels)[idx],
                  None if test.speakers is None else np.asarray(test.speakers)[idx])

    def declared(m: str, role: str) -> list[Any]:
        return [v for v in of_modality(model.latents, m) if v.role == role and v.name in lat[m][0]]

    out: list[dict[str, Any]] = []
    for m, (z, y, _) in lat.items():
        for v in declared(m, "content"):
            out.append(_entry(f"{COLUMN.get(m, m)}_{v.name}", v, "digit", z[v.name], y, seed,
                              f"{v.symbol} from {COLUMN.get(m, m)} (test), by digit",
                              f"t-SNE of {v.symbol} inferred from {COLUMN.get(m, m)} alone, "
                              f"coloured by digit (paper Figs. 11-12)."))
    if {"audio", "image"} <= set(lat):
        pooled = [v for v in declared("audio", "content") if v in declared("image", "content")]
        if pooled:
            v = pooled[0]
            (zs, ys, _), (zi, yi, _) = lat["audio"], lat["image"]
            out.append(_entry(
                f"pooled_{v.name}", v, "digit", np.concatenate([zs[v.name], zi[v.name]]),
                np.concatenate([ys, yi]), seed, f"{v.symbol} pooled over speech and image",
                "t-SNE of the shared latent pooled over both modalities (paper Fig. 13): 'o' "
                "speech, 'x' image.", groups=np.asarray(["speech"] * len(ys) + ["image"] * len(yi))))
    for m, (z, y, spk) in lat.items():
        col = COLUMN.get(m, m)
        for v in declared(m, "style"):
            out.append(_entry(f"{col}_{v.name}", v, "digit", z[v.name], y, seed,
                              f"{v.symbol} from {col}, by digit",
                              f"t-SNE of the style latent {v.symbol} coloured by digit (paper Figs. "
                              f"14-15): no digit clusters expected."))
            if spk is not None:
                out.append(_entry(f"{col}_{v.name}_speaker", v, "speaker", z[v.name], spk, seed,
                                  f"{v.symbol} from {col}, by speaker",
                                  f"The same {v.symbol} coloured by speaker."))
    return {"seed": seed, "points": points, "embeddings": out}


def _usable(payload: dict[str, Any], points: int, seed: int) -> bool:
    """True if a stored payload was made with these settings and has the fields drawn."""
    entries = payload.get("embeddings")
    if payload.get("seed") != seed or payload.get("points") != points or not isinstance(entries, list):
        return False
    keys = ("name", "title", "caption", "xy", "labels")
    return all(isinstance(e, dict) and all(k in e for k in keys) and _safe_name(e["name"])
               for e in entries)


def _safe_name(name: object) -> bool:
    """A name that can only form a file name inside the figures folder."""
    return isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_^-]+", name) is not None


def ensure_embedding(run: Run, data: ExperimentData, points: int = 500, seed: int = 0,
                     regenerate: bool = False) -> dict[str, Any]:
    """RUN_DIR/embedding.json if it is fresh (same weights, ``seed`` and ``points``), else
    :func:`embed_test_latents` written there atomically with ``weights_sha256``; returns it."""
    path = Path(run.path) / EMBEDDING_FILE
    stored = None if regenerate else fresh_run_output(path, run)
    if stored is not None and _usable(stored, points, seed):
        return stored
    payload = embed_test_latents(run, data, points, seed)
    write_run_output(path, payload, run)
    return fresh_run_output(path, run) or payload  # as read back: plain JSON values


def plot_embedding(xy: np.ndarray, labels: np.ndarray, path: str | os.PathLike[str], title: str,
                   groups: np.ndarray | None = None) -> None:
    """Scatter plot PNG (atomic) of 2-D points ``xy`` (N, 2) coloured by ``labels`` (N,) (tab10,
    or tab20 repeating above 10 labels; a legend up to MAX_LEGEND_LABELS labels), with one marker
    per group of ``groups`` (N,) if given (a group named like a marker, e.g. "o", gets it)."""
    xy = np.asarray(xy, dtype=np.float64)
    y = np.asarray(labels)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0:
        raise ValueError(f"xy must be a non-empty (N, 2) array, got shape {xy.shape}")
    if y.shape != (xy.shape[0],):
        raise ValueError(f"labels must have shape ({xy.shape[0]},), got {y.shape}")
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.shape != (xy.shape[0],):
        raise ValueError(f"groups must have shape ({xy.shape[0]},), got {g.shape}")
    classes = np.unique(y).tolist()
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colors = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    order = [""] if g is None else list(dict.fromkeys(g.tolist()))
    free = [m for m in MARKER_CYCLE if m not in order]
    markers = {k: "o" if g is None else (k if k in MARKER_CYCLE else (free.pop(0) if free else "o"))
               for k in order}
    fig = Figure(figsize=(6.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k, marker in markers.items():
        in_group = np.ones(len(y), bool) if g is None else g == k
        for c in classes:
            sel = np.flatnonzero(in_group & (y == c))
            if sel.size:
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, marker=marker, color=colors[c],
                           linewidths=0.8, alpha=0.8)
    handles = [Line2D([], [], linestyle="", marker="o", color=colors[c], label=str(c))
               for c in classes] if len(classes) <= MAX_LEGEND_LABELS else []
    legend = ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       title="label" if handles else f"{len(classes)} labels\n(colours repeat)")
    if g is not None:
        ax.add_artist(legend)
        ax.legend(handles=[Line2D([], [], linestyle="", marker=m, color="k", label=str(k))
                           for k, m in markers.items()],
                  title="group", fontsize="small", loc="lower left", bbox_to_anchor=(1.01, 0.0))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def draw_embeddings(payload: dict[str, Any], folder: str | os.PathLike[str]
                    ) -> list[tuple[Path, str]]:
    """Draw every embedding of ``payload`` (from :func:`ensure_embedding`) that ``folder`` lacks
    as ``tsne_<name>.png``; returns (png, caption) pairs in payload order."""
    folder = Path(folder)
    out: list[tuple[Path, str]] = []
    for e in payload.get("embeddings", []):
        if not _safe_name(e.get("name")):
            raise ValueError(f"embedding name {e.get('name')!r} is not a plain file name")
        path = folder / f"tsne_{e['name']}.png"
        if not path.is_file():
            plot_embedding(np.asarray(e["xy"]), np.asarray(e["labels"]), path, str(e["title"]),
                           None if e.get("groups") is None else np.asarray(e["groups"]))
        out.append((path, str(e["caption"])))
    return out
