"""One self-contained HTML page per run: Table 1, plots, grids, audio, quality, config, provenance.

Every image and sound is embedded as a ``data:`` URI, so the page can be mailed or archived
alone. The report computes nothing itself: it asks the library for each output of the run
folder, which reuses a fresh one and makes (and keeps) one that is missing, corrupt or stale,
then renders them:

- ``evaluation.json`` (Table 1, inertia curves): :func:`dispart.evaluation.reuse.ensure_evaluation`;
- ``generated/`` (grids, wavs; for sequence models such as DSAE the swap / fixed-f / fixed-z
  grids, GIFs, frame strips, wavs; for audio-visual models with shared dynamics (MDVAE) the
  z_av / z_v transfers between test sequences, GIFs, frame strips, Griffin-Lim wavs):
  :func:`dispart.generation.outputs.generate`;
- ``quality.json`` (coherence, content preservation, image style correlations; speech + image
  models only):
  :func:`dispart.generation.quality.ensure_quality`;
- ``embedding.json`` (t-SNE of test latents): :func:`dispart.evaluation.embedding.ensure_embedding`;
- ``report_assets/`` (the inertia and t-SNE figures drawn from those, stamped in assets.json);
- ``run.json``'s ``erasure`` record, for a run made by ``dispart erase``.

Which latents are content (shared) or style comes from the roles recorded in the outputs and
the model's latent declarations (:mod:`dispart.models.latents`), not from latent names.

A model whose encoder infers from all its modalities together (MDVAE: shared dynamics,
:func:`dispart.generation.transfer.shared_dynamics`) may be refused by the evaluation and the
t-SNE, which infer latents from one modality at a time: the model's ValueError is then shown in
place of Table 1 / the t-SNE plot (and named in one warning line); any other model's error
stops the report as before.

The run folder is not trusted:

- an output is reused only if it parses, has the expected structure and records the
  ``weights_sha256`` of the run's current ``model.safetensors``; otherwise it is computed again
  (a corrupt or stale file is named in one warning line on stderr);
- every value read from the run folder is HTML-escaped: the page is assembled with :func:`h`,
  which escapes whatever is not :class:`Safe` (HTML this module wrote itself);
- a file named by ``generated/manifest.json`` (and every plot) is embedded only if it resolves
  inside the run folder, is a regular file and has the expected suffix (.png / .wav); otherwise
  the report is refused with a :class:`~dispart.errors.RunDirError` naming the field and path
  (.png / .gif / .wav as the field says).

The page carries a tiny script that, once loaded, checks that every ``<img>`` decoded and every
``<audio>`` loaded its metadata, and writes the verdict into ``body[data-render-check]`` (used
by the browser test; harmless otherwise).
"""

from __future__ import annotations

import base64
import html
import json
import numbers
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from dispart.batches.pipeline import ExperimentData, load_experiment_data
from dispart.errors import DispartError, RunDirError
from dispart.evaluation.embedding import EMBEDDING_FILE, draw_embeddings, ensure_embedding
from dispart.evaluation.plots import plot_inertia
from dispart.evaluation.reuse import ensure_evaluation, reuse_output, warn
from dispart.evaluation.table import LEGACY_ROLES, LEGACY_SYMBOLS, PurityRow, row_role, rows_to_markdown
from dispart.files import atomic_write, atomic_write_json, file_sha256, read_json
from dispart.generation import SEQUENCE_KINDS
from dispart.generation.outputs import sequence_modality
from dispart.generation.quality import ensure_quality
from dispart.generation.transfer import shared_dynamics
from dispart.runs import Run, load_run, require_speech_and_images

__all__ = ["build_report", "data_uri", "markdown_table_to_html", "RENDER_CHECK_SCRIPT", "Safe", "esc",
           "h", "embeddable", "render_page"]

MIME = {".png": "image/png", ".gif": "image/gif", ".wav": "audio/wav", ".json": "application/json"}

RENDER_CHECK_SCRIPT = """
<script>
window.__reportErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  if (t && t.tagName === 'AUDIO') { t.__failed = true; }  // a.load() below resets a.error
  window.__reportErrors.push(t && t !== window && t.tagName ? 'failed to load ' + t.tagName
                            : 'script error: ' + e.message);
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var auds = Array.prototype.slice.call(document.querySelectorAll('audio'));
  var tries = 0;
  function finish() {
    var badImg = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
    var badAud = auds.filter(function (a) { return !!a.error || !!a.__failed; }).length;
    var pending = auds.filter(function (a) {
      return !a.error && !a.__failed && a.readyState < 1; }).length;
    if (pending && tries++ < 100) { setTimeout(finish, 50); return; }
    var errs = window.__reportErrors;
    var ok = !badImg && !badAud && !pending && !errs.length;
    var status = (ok ? 'ok' : 'FAIL') + ' images=' + imgs.length + ' audio=' + auds.length +
      ' bad_images=' + badImg + ' bad_audio=' + badAud + ' pending_audio=' + pending +
      ' errors=' + errs.length + (errs.length ? ' [' + errs.join('; ') + ']' : '');
    document.body.setAttribute('data-render-check', status);
    var el = document.getElementById('render-check');
    if (el) { el.textContent = 'render check: ' + status; }
  }
  auds.forEach(function (a) { a.load(); });
  finish();
});
</script>
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
td, th { border: 1px solid #ccc; padding: .25em .55em; text-align: center; }
th { background: #f2f2f2; }
img { max-width: 100%; }
figure { margin: .8em 0; } figcaption { font-size: .9em; color: #555; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots figure { flex: 0 1 48%; }
.scroll { overflow-x: auto; } .clips td, .clips th { vertical-align: top; font-size: .8em; }
.clips audio { width: 105px; height: 30px; }
.clips img { display: block; height: 60px; max-width: 105px; }
.anim td, .anim th { vertical-align: top; font-size: .8em; } .anim img { image-rendering: pixelated; }
.transfer td, .transfer th { vertical-align: middle; font-size: .8em; text-align: left; }
.transfer img { image-rendering: pixelated; display: block; }
.transfer img.spec { height: 90px; } .transfer audio { width: 150px; height: 30px; }
pre { background: #f7f7f7; padding: .7em; overflow-x: auto; font-size: .85em; }
.small { font-size: .85em; color: #666; }
"""

GRID_CAPTIONS = {  # {content}: the symbol of the model's content latent (z^s for PVAE)
    "style": "Within-modality style transfer (paper Figs. 4, 16-18): each column uses {content} "
             "inferred from the sample on top, each row the style latent inferred from the sample on "
             "the left.",
    "cross": "Cross-modal generation (paper Figs. 5, 19-22): {content} inferred from the other "
             "modality (top row), style from a reference of the output modality (left column).",
    "prior_style": "Fixed {content} (top row) with the style latent drawn from the prior N(0, I) "
                   "(rows).",
    "prior_semantic": "{content} drawn from the prior (columns) with fixed style latents (left "
                      "column).",
    "fig2": "JMVAE-kl (paper Fig. 2): z inferred from one modality by its unimodal encoder, "
            "decoded into speech and image.",
    "swap": "Swapping (DSAE section 2): each cell decodes {style} inferred from the sequence on the "
            "left with {content} inferred from the sequence on top (for speech: voice conversion).",
    "fix_f": "Fixed {style} (inferred from the sequence on the left) with {content} drawn from the "
             "learned prior p(z_t | z_<t) (one draw per column, shared by the rows).",
    "fix_z": "Fixed {content} (inferred from the sequence on top) with {style} drawn from the prior "
             "N(0, I) (one draw per row).",
    "transfer": "Swapping (MDVAE): the target sequence decoded with some of its dynamic latents taken "
                "from the source sequence ({content}: lip movements and phonetic content, shared by "
                "audio and video; the video's private latent: head and eye movements), its static "
                "{style} (identity) kept. Rows: the source, the target, the target reconstructed, "
                "then each transfer; the picture shows the video frames (columns: time steps) and, on "
                "the right, the audio spectrogram on the same time axis.",
}


MANIFEST = "generated/manifest.json"
ASSETS_STAMP = "assets.json"  # in report_assets/: what the plots were drawn from


# --------------------------------------------------------------------------- escaping


class Safe(str):
    """HTML this module wrote itself: :func:`esc` and :func:`h` insert it unchanged."""


def esc(value: object) -> Safe:
    """``value`` as HTML text (``& < > " '`` escaped), unless it is already :class:`Safe`."""
    return value if isinstance(value, Safe) else Safe(html.escape(str(value), quote=True))


def h(template: str, *values: object) -> Safe:
    """``template.format(*values)`` with every value passed through :func:`esc`.

    ``template`` is this module's own literal markup; a value (anything read from the run
    folder, a number, or a :class:`Safe` fragment built the same way) cannot add markup.
    """
    return Safe(template.format(*(esc(v) for v in values)))


def cat(parts: Iterable[object], sep: str = "") -> Safe:
    """Fragments joined by ``sep``, each escaped unless it is :class:`Safe`."""
    return Safe(sep.join(esc(p) for p in parts))


def _pct(x: object) -> Safe:
    """A fraction as a percentage, "-" for None; any other value escaped as it is."""
    if x is None:
        return Safe("-")
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Safe(f"{100 * float(x):.1f}%")
    return esc(x)


def _d(x: object) -> dict:
    """``x`` if it is a dict, else {} (a malformed field renders as absent)."""
    return x if isinstance(x, dict) else {}


def _modality(m: object) -> object:
    return "speech" if m == "audio" else m


def _order(v: object) -> tuple[bool, float, str]:
    """Sort key for row / column labels of any JSON scalar type (numbers first)."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return (not number, float(v) if number else 0.0, str(v))


def data_uri(source: str | Path | bytes, mime: str | None = None) -> str:
    """``data:`` URI of a file (MIME type from its suffix) or of raw bytes (``mime`` needed)."""
    if isinstance(source, bytes):
        payload, kind = source, mime or "application/octet-stream"
    else:
        path = Path(source)
        payload, kind = path.read_bytes(), mime or MIME.get(path.suffix.lower(),
                                                             "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(payload).decode('ascii')}"


def markdown_table_to_html(text: str) -> str:
    """A pipe Markdown table (as from :func:`rows_to_markdown`) as an HTML table."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2:
        return ""
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    head = cat(h("<th>{}</th>", c) for c in cells[0])
    body = cat(h("<tr>{}</tr>", cat(h("<td>{}</td>", c) for c in row)) for row in cells[2:])
    return h("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


# --------------------------------------------------------------------------- files of the run


def _path_problem(root: Path, path: Path, suffix: str) -> str:
    """Why the resolved ``path`` may not be embedded ("" if it may)."""
    if not path.is_relative_to(root):
        return "is outside the run folder"
    if not path.is_file():
        return "is not a regular file"
    if path.suffix.lower() != suffix:
        return f"is not a {suffix} file"
    return ""


def embeddable(root: Path, base: Path, rel: object, suffix: str, field: str) -> Path:
    """The resolved file ``base / rel`` if it lies inside ``root`` (the run folder, symlinks
    followed), is a regular file and ends in ``suffix``; else RunDirError naming ``field``."""
    why = "is not a relative path" if not isinstance(rel, str) or not rel else ""
    path = Path()
    if not why:
        try:
            path = (base / rel).resolve()
            why = _path_problem(root.resolve(), path, suffix)
        except (OSError, RuntimeError, ValueError) as e:  # symlink loop, NUL byte, ...
            why = f"cannot be resolved ({e})"
    if why:
        raise RunDirError(f"{field} = {rel!r} {why}; refusing to embed it in the report "
                          f"(`dispart report --regenerate` rebuilds the run's outputs)")
    return path


class _Files:
    """Embeds files of one run folder as ``data:`` URIs (see :func:`embeddable`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def img(self, base: Path, rel: object, alt: object, field: str, suffix: str = ".png",
            css: str = "") -> Safe:
        uri = data_uri(embeddable(self.root, base, rel, suffix, field))
        if css:
            return h('<img class="{}" src="{}" alt="{}">', css, uri, alt)
        return h('<img src="{}" alt="{}">', uri, alt)

    def audio(self, base: Path, rel: object, field: str) -> Safe:
        uri = data_uri(embeddable(self.root, base, rel, ".wav", field))
        return h('<audio controls preload="metadata" src="{}"></audio>', uri)


def _manifest_files(manifest: dict[str, Any]) -> Iterator[tuple[str, object, str]]:
    """(field, path relative to generated/, suffix) of every file the manifest names."""
    for i, g in enumerate(manifest.get("grids", [])):
        field = f"{MANIFEST}: grids[{i}]"
        yield f"{field}.png", g.get("png"), ".png"
        for k, a in enumerate(g.get("audio", [])):
            yield f"{field}.audio[{k}].wav", a.get("wav"), ".wav"
            if "spectrogram" in a:
                yield f"{field}.audio[{k}].spectrogram", a["spectrogram"], ".png"
        for k, s in enumerate(g.get("sources_audio", [])):
            yield f"{field}.sources_audio[{k}].wav", s.get("wav"), ".wav"
            if "spectrogram" in s:
                yield f"{field}.sources_audio[{k}].spectrogram", s["spectrogram"], ".png"
        for key in ("animations", "sources_animations"):
            for k, a in enumerate(g.get(key, [])):
                yield f"{field}.{key}[{k}].gif", a.get("gif"), ".gif"
                yield f"{field}.{key}[{k}].strip", a.get("strip"), ".png"


def _check_manifest_files(run_dir: Path, manifest: dict[str, Any]) -> None:
    """RunDirError for the first file of the manifest that may not be embedded (checked before
    any plot is drawn; :class:`_Files` checks again as it embeds)."""
    for field, rel, suffix in _manifest_files(manifest):
        embeddable(run_dir, run_dir / "generated", rel, suffix, field)


def _require_inside(run_dir: Path, name: str) -> None:
    """RunDirError if RUN_DIR/name (which the report writes into) resolves outside the run."""
    if not (run_dir / name).resolve().is_relative_to(run_dir.resolve()):
        raise RunDirError(f"{run_dir / name} resolves outside the run folder (a symlink?); "
                          f"refusing to write into it")


# --------------------------------------------------------------------------- outputs of the library


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, (str, int, float))


def _plain(v: object) -> object:
    """``v`` if it is a JSON scalar (usable as a key), else its text (a malformed field)."""
    return v if _scalar(v) else json.dumps(v, default=str)


def _check_manifest(m: dict[str, Any]) -> None:
    """Raise unless generated/manifest.json has the structure the page walks through (paths
    are checked where they are embedded)."""
    grids = m.get("grids", [])
    _require(isinstance(grids, list) and all(isinstance(g, dict) for g in grids),
             "grids is not a list of objects")
    for g in grids:
        for key, ids in (("audio", ("row", "col")), ("sources_audio", ("axis", "index")),
                         ("animations", ("row", "col")), ("sources_animations", ("axis", "index"))):
            items = g.get(key, [])
            _require(isinstance(items, list) and all(isinstance(a, dict) for a in items),
                     f"{key} of grid {g.get('name')!r} is not a list of objects")
            _require(all(_scalar(a.get(i)) for a in items for i in ids),
                     f"{'/'.join(ids)} of grid {g.get('name')!r} are not plain values")


def _digit_model(run: Run) -> bool:
    """Whether the run's model is a speech + image model (not a sequence model such as DSAE or
    an audio-visual one such as MDVAE): only those have digits to judge."""
    return sequence_modality(run.model) is None and shared_dynamics(run.model) is None


def _refused(run: Run, what: str, make, notes: dict[str, str]) -> Any:
    """``make()``, or None when a model with shared dynamics (joint inference only) refuses it
    with a ValueError: the reason goes into ``notes[what]`` and one warning line. Any other
    error, or any error of another model, propagates."""
    try:
        return make()
    except ValueError as e:
        if shared_dynamics(run.model) is None:
            raise
        notes[what] = " ".join(str(e).split())
        warn(f"{what} not computed for this {run.model.name} model: {notes[what]}")
        return None


def _ensure(run_dir: Path, run: Run, data: ExperimentData, rows: int, seed: int, regenerate: bool,
            quality_items: int, notes: dict[str, str]
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bool]:
    """evaluation.json, generated/manifest.json and quality.json, each reused when fresh and
    made by the library when missing, corrupt or stale (:mod:`dispart.evaluation.reuse`); the
    flag says evaluation.json was new. An evaluation the model refuses (:func:`_refused`) is {}
    with its reason in ``notes["evaluation"]``."""
    from dispart.generation.outputs import generate

    evaluation, new_evaluation = _refused(run, "evaluation", lambda: ensure_evaluation(
        run, data, regenerate), notes) or ({}, False)
    manifest = None if regenerate else reuse_output(run_dir / MANIFEST, run, read_json,
                                                    _check_manifest)
    if manifest is None:
        manifest = generate(run, data, run_dir / "generated", rows=rows, seed=seed)
    quality = {} if not _digit_model(run) else ensure_quality(
        run, data, seed=seed, max_items=quality_items, regenerate=regenerate)  # digits judged
    return evaluation, manifest, quality, new_evaluation


# --------------------------------------------------------------------------- plots


def _assets_key(run: Run, seed: int, tsne_points: int) -> dict[str, Any]:
    embedding = run.path / EMBEDDING_FILE
    return {"weights_sha256": run.weights_sha256, "seed": seed, "tsne_points": tsne_points,
            "embedding_sha256": file_sha256(embedding) if embedding.is_file() else None}


def _assets_fresh(folder: Path, key: dict[str, Any]) -> bool:
    """True if the plots in ``folder`` were drawn for ``key`` (a corrupt stamp is named)."""
    stamp = folder / ASSETS_STAMP
    if not stamp.is_file():
        return False
    try:
        return read_json(stamp) == key
    except DispartError as e:
        warn(f"{e}; drawing the plots again")
        return False


def _clear_pngs(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.glob("*.png"):
            p.unlink()


def _declared(key: str, latents: dict[str, Any]) -> Any:
    """The model's declaration that ``key`` (a name, symbol or "column/symbol") names, or None."""
    if key in latents:
        return latents[key]
    symbol = key.rsplit("/", 1)[-1]
    return next((v for v in latents.values() if symbol in (v.symbol, v.name)), None)


def _role(key: str, evaluation: dict[str, Any], latents: dict[str, Any]) -> str | None:
    """Role of the latent of a "column/symbol" key of evaluation.json: the role its row records,
    else the model's declaration, else (keys of outputs written before roles) the paper's
    symbols (:data:`~dispart.evaluation.table.LEGACY_ROLES`)."""
    rows = evaluation.get("rows")
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, dict) and f"{r.get('modality')}/{r.get('latent')}" == key and r.get("role"):
            return row_role(r)
    latent = _declared(key, latents)
    return latent.role if latent is not None else LEGACY_ROLES.get(key.rsplit("/", 1)[-1])


def _content_keys(keys: Iterable[object], evaluation: dict[str, Any], run: Run) -> list[str]:
    return [str(k) for k in keys if _role(str(k), evaluation, run.model.latents) == "content"]


def _symbol(name: str, latents: dict[str, Any]) -> str:
    """The symbol of a latent named in quality.json (name or symbol): the declaration's, else
    that of outputs written before declarations, else "_" read as "^"."""
    latent = _declared(name, latents)
    return latent.symbol if latent is not None else LEGACY_SYMBOLS.get(name, name.replace("_", "^", 1))


def _inertia_plot(run: Run, evaluation: dict[str, Any], folder: Path) -> list[tuple[Path, str]]:
    """Inertia curves of the content latents (Fig. 3), drawn if missing; [] without curves."""
    curves = _d(evaluation.get("inertia"))
    if not curves:
        return []
    shared = {k: curves[k] for k in _content_keys(curves, evaluation, run)} or curves
    est = {k: v for k, v in _d(evaluation.get("estimated_num_classes")).items() if k in shared}
    path = folder / "inertia.png"
    if not path.is_file():
        plot_inertia({k: {int(a): float(b) for a, b in v.items()} for k, v in shared.items()},
                     path, estimated=est)
    return [(path, "k-means inertia of the shared latent vs number of clusters (paper Fig. 3); "
                   "circles mark the automatic elbow estimate.")]


# --------------------------------------------------------------------------- page


def _content_symbol(latents: dict[str, Any]) -> str:
    """The symbol of the model's (first) content latent, for captions ("z^s" for PVAE)."""
    return next((v.symbol for v in latents.values() if v.role == "content"), "z")


def _style_symbol(latents: dict[str, Any]) -> str:
    """The symbol of the model's (first) style latent, for captions ("f" for DSAE)."""
    return next((v.symbol for v in latents.values() if v.role == "style"), "style")


def _summary_html(run: Run, evaluation: dict[str, Any], quality: dict[str, Any]) -> Safe:
    items: list[Safe] = []
    latents, content = run.model.latents, _content_symbol(run.model.latents)
    estimates = _d(evaluation.get("estimated_num_classes"))
    for key in _content_keys(estimates, evaluation, run):
        items.append(h("<li>Estimated number of classes from {} (inertia elbow): <b>{}</b></li>",
                       key, estimates[key]))
    for m, c in _d(quality.get("classifiers")).items():
        c = _d(c)
        items.append(h("<li>Judge classifier ({}) accuracy on real test data: <b>{}</b> (n={})</li>",
                       _modality(m), _pct(c.get("test_accuracy")), c.get("n_test")))
    for key, e in _d(quality.get("coherence")).items():
        e = _d(e)
        parts = [h("{} {}", k.replace("_", " "), _pct(v)) for k, v in e.items()
                 if k in ("reference_style", "prior_style", "shared_latent", "resynthesized")]
        items.append(h("<li>Cross-modal coherence {}: <b>{}</b> (n={})</li>",
                       str(key).replace("audio", "speech"), cat(parts, ", "), e.get("n")))
    for m, e in _d(quality.get("content_preservation")).items():
        e = _d(e)
        items.append(h("<li>Style transfer content preservation ({}): <b>{}</b> keep the {} "
                       "source's digit, {} take the style source's digit (n={})</li>",
                       _modality(m), _pct(e.get("semantic_digit")), content,
                       _pct(e.get("style_source_digit")), e.get("n")))
    rec = _d(quality.get("reconstruction"))
    if rec:
        items.append(h("<li>Reconstructions classified correctly: {}</li>",
                       cat((h("{} {}", _modality(m), _pct(v)) for m, v in rec.items()), ", ")))
    r = _d(quality.get("resynthesis_real_speech"))
    if r:
        items.append(h("<li>Real test speech through Griffin-Lim and back, classified correctly: "
                       "{} (n={})</li>", _pct(r.get("accuracy")), r.get("n")))
    probe = _d(quality.get("speaker_probe_accuracy")) or _d(evaluation.get("speaker_probe_accuracy"))
    for n, acc in probe.items():
        items.append(h("<li>Speaker identity from {} (linear probe): <b>{}</b> (chance {})</li>",
                       _symbol(str(n), latents), _pct(acc),
                       _pct(quality.get("speaker_chance"))))
    for key, e in _d(quality.get("image_style")).items():
        items.append(_image_style_item(str(key), _d(e)))
    if quality.get("chance"):
        items.append(h("<li class='small'>Digit chance level: {}</li>", _pct(quality["chance"])))
    erasure = _d(run.info.get("erasure"))
    if erasure:
        items.append(h("<li>Speakers erased from {} after training ({}, rank {}, fitted on {} "
                       "training utterances of {} speakers; from run {})</li>", content,
                       erasure.get("method"), erasure.get("rank"), erasure.get("utterances"),
                       len(erasure.get("speakers") or []), erasure.get("source_run")))
    return h("<ul>{}</ul>", cat(items))


def _corr(x: object) -> Safe:
    """A correlation with two decimals, or '-' when absent."""
    return esc(f"{x:.2f}") if isinstance(x, (int, float)) and not isinstance(x, bool) else esc("-")


def _image_style_item(key: str, e: dict[str, Any]) -> Safe:
    """quality.json's ``image_style[key]``: slant / ink correlations between the style source and
    the output (raw, within digit, and the ceiling of a digit-keeping transfer)."""
    what = ("within-image style transfer" if key == "within_image"
            else key.replace("_to_", " -> ").replace("audio", "speech") + " with reference style")
    parts = [h("{} {} (within digit {}, ceiling {})", name, _corr(e.get(f"{name}_corr")),
               _corr(e.get(f"{name}_corr_within_digit")), _corr(e.get(f"{name}_corr_ceiling")))
             for name in ("slant", "ink")]
    return h("<li>Image style carried, {}: correlation of {} between style source and output "
             "(n={})</li>", what, cat(parts, ", "), e.get("n"))


def _clips_html(entry: dict[str, Any], gen: Path, max_rows: int, files: _Files,
                field: str, content: str) -> Safe:
    """Table of audio players: header = semantic sources, left = style sources, body = clips.
    ``field`` names the grid in refusals (e.g. "generated/manifest.json: grids[3]")."""
    clips = {(a.get("row"), a.get("col")): (k, a) for k, a in enumerate(entry.get("audio", []))}
    if not clips:
        return Safe("")
    rows = sorted({r for r, _ in clips}, key=_order)[:max_rows]
    cols = sorted({c for _, c in clips}, key=_order)
    src = {(s.get("axis"), s.get("index")): (k, s)
           for k, s in enumerate(entry.get("sources_audio", []))}

    def source(axis: str, label: object, text: str) -> Safe:
        k, s = src.get((axis, label), (None, None))
        if s is None:
            return h("{} {}", "column" if axis == "semantic" else "row", label)
        player = files.audio(gen, s.get("wav"), f"{field}.sources_audio[{k}].wav")
        return h("{} {}<br>{}", text, s.get("tag"), player)

    def cell(r: object, c: object) -> Safe:
        k, a = clips.get((r, c), (None, None))
        if a is None:
            return Safe("")
        spec = a.get("spectrogram")
        img = files.img(gen, spec, h("spectrogram r{} c{}", r, c),
                        f"{field}.audio[{k}].spectrogram") if spec else Safe("")
        return cat([img, files.audio(gen, a.get("wav"), f"{field}.audio[{k}].wav")])

    head = cat([Safe("<th></th>"), *(h("<th>{}</th>", source("semantic", c, f"{content} from"))
                                     for c in cols)])
    body = cat(h("<tr><th>{}</th>{}</tr>", source("style", r, "style from"),
                 cat(h("<td>{}</td>", cell(r, c)) for c in cols)) for r in rows)
    return h('<div class="scroll"><table class="clips"><thead><tr>{}</tr></thead>'
             '<tbody>{}</tbody></table></div>', head, body)


def _caption(name: str, content: str, style: str = "style") -> str:
    for key in ("prior_style", "prior_semantic", "style", "cross", "fig2", "swap", "fix_f", "fix_z",
                "transfer"):
        if name.startswith(key):
            return GRID_CAPTIONS[key].format(content=content, style=style)
    return ""


def _animations_html(entry: dict[str, Any], gen: Path, files: _Files, field: str, content: str,
                     style: str) -> Safe:
    """Table of animated GIFs (sequence grids): header = sources of ``content`` (z_1:T), left =
    sources of ``style`` (f), body = generated sequences; every GIF above its frame strip."""
    cells = {(a.get("row"), a.get("col")): (k, a) for k, a in enumerate(entry.get("animations", []))}
    if not cells:
        return Safe("")
    rows = sorted({r for r, _ in cells}, key=_order)
    cols = sorted({c for _, c in cells}, key=_order)
    src = {(s.get("axis"), s.get("index")): (k, s)
           for k, s in enumerate(entry.get("sources_animations", []))}

    def show(a: dict[str, Any], f: str, alt: object) -> Safe:
        return cat([files.img(gen, a.get("gif"), alt, f"{f}.gif", ".gif"), Safe("<br>"),
                    files.img(gen, a.get("strip"), h("{} (frames)", alt), f"{f}.strip")])

    def source(axis: str, label: object, symbol: str) -> Safe:
        k, s = src.get((axis, label), (None, None))
        if s is None:
            return h("{} drawn from the prior", symbol)
        return h("{} from {}<br>{}", symbol, s.get("tag"),
                 show(s, f"{field}.sources_animations[{k}]", s.get("source")))

    def cell(r: object, c: object) -> Safe:
        k, a = cells.get((r, c), (None, None))
        return Safe("") if a is None else show(a, f"{field}.animations[{k}]", h("r{} c{}", r, c))

    head = cat([Safe("<th></th>"), *(h("<th>{}</th>", source("semantic", c, content)) for c in cols)])
    body = cat(h("<tr><th>{}</th>{}</tr>", source("style", r, style),
                 cat(h("<td>{}</td>", cell(r, c)) for c in cols)) for r in rows)
    return h('<div class="scroll"><table class="anim"><thead><tr>{}</tr></thead>'
             '<tbody>{}</tbody></table></div>', head, body)


def _transfer_html(entry: dict[str, Any], gen: Path, files: _Files, field: str,
                   latents: dict[str, Any]) -> Safe:
    """Table of one transfer pair (MDVAE): a line per row (source, target, reconstruction, each
    transfer) with which sequence fed each latent, every video as a GIF above its frame strip and
    every audio as a spectrogram above its player."""
    target, source = _d(entry.get("target")), _d(entry.get("source"))
    who = {_plain(target.get("source")): "target", _plain(source.get("source")): "source"}
    rows = [r for r in entry.get("rows", []) if isinstance(r, dict)] if isinstance(
        entry.get("rows"), list) else []
    anims = {(_plain(a.get("row")), _plain(a.get("modality"))): (k, a)
             for k, a in enumerate(entry.get("animations", []))}
    clips = {(_plain(a.get("row")), _plain(a.get("modality"))): (k, a)
             for k, a in enumerate(entry.get("audio", []))}
    video = list(dict.fromkeys(m for _, m in anims))
    sound = list(dict.fromkeys(m for _, m in clips))

    def fed(r: dict[str, Any]) -> Safe:
        sources = _d(r.get("sources"))
        if "data" in sources:
            return h("real data ({})", who.get(_plain(sources["data"]), sources["data"]))
        return cat((h("{} from the {}", _symbol(str(k), latents), who.get(_plain(v), v))
                    for k, v in sources.items()), Safe("<br>"))

    def gif(r: object, m: object) -> Safe:
        k, a = anims.get((r, m), (None, None))
        if a is None:
            return Safe("")
        f = f"{field}.animations[{k}]"
        return cat([files.img(gen, a.get("gif"), h("{} row {}", m, r), f"{f}.gif", ".gif"),
                    files.img(gen, a.get("strip"), h("{} row {} (frames)", m, r), f"{f}.strip")])

    def clip(r: object, m: object) -> Safe:
        k, a = clips.get((r, m), (None, None))
        if a is None:
            return Safe("")
        f = f"{field}.audio[{k}]"
        spec = a.get("spectrogram")
        img = (files.img(gen, spec, h("{} spectrogram row {}", m, r), f"{f}.spectrogram", css="spec")
               if spec else Safe(""))
        same = Safe("")
        if a.get("same_as_reconstruction") is True:
            same = h("<br><span class='small'>the same as the reconstruction: the {} decoder does not "
                     "read the transferred latents</span>", m)
        return cat([img, files.audio(gen, a.get("wav"), f"{f}.wav"), same])

    head = cat([Safe("<th>row</th><th>latents</th>"), *(h("<th>{}</th>", m) for m in video),
                *(h("<th>{} (Griffin-Lim)</th>", m) for m in sound)])
    body = cat(h("<tr><th>{}</th><td>{}</td>{}{}</tr>", r.get("label"), fed(r),
                 cat(h("<td>{}</td>", gif(_plain(r.get("row")), m)) for m in video),
                 cat(h("<td>{}</td>", clip(_plain(r.get("row")), m)) for m in sound)) for r in rows)
    return h('<p>Target {} ({}), source {} ({}).</p><div class="scroll"><table class="transfer">'
             '<thead><tr>{}</tr></thead><tbody>{}</tbody></table></div>', target.get("source"),
             target.get("tag"), source.get("source"), source.get("tag"), head, body)


def _grids_html(manifest: dict[str, Any], gen: Path, files: _Files, audio_rows: int,
                content: str, style: str = "style", latents: dict[str, Any] | None = None) -> Safe:
    latents = latents or {}
    parts: list[Safe] = []
    for i, g in enumerate(manifest.get("grids", [])):
        field = f"{MANIFEST}: grids[{i}]"
        name = g.get("name")
        sequence = g.get("kind") in SEQUENCE_KINDS
        parts.append(h("<h3>{}</h3><figure>{}<figcaption>{}</figcaption></figure>", name,
                       files.img(gen, g.get("png"), name, f"{field}.png"),
                       _caption(str(name), content, style)))
        if g.get("kind") == "transfer":
            parts.append(_transfer_html(g, gen, files, field, latents))
            continue
        if sequence:
            checks = _d(g.get("checks"))
            if "f_row_nearest" in checks:
                parts.append(h("<p>Swapped sequences encoded again: their {} is nearest (cosine) to "
                               "the {} of their own row in <b>{}</b> of {} cells (chance {}).</p>",
                               style, style, _pct(checks.get("f_row_nearest")), checks.get("n"),
                               _pct(checks.get("chance"))))
            parts.append(_animations_html(g, gen, files, field, content, style))
            audio_rows = max(audio_rows, len(g.get("audio", [])))  # every row: the conversions
        clips = _clips_html(g, gen, audio_rows, files, field, content)
        if clips:
            parts.append(h("<p class='small'>Listen (first {} row(s) of the grid):</p>{}",
                           audio_rows, clips))
    return cat(parts)


def _shown_as(manifest: dict[str, Any]) -> str:
    """How the generated sequences are shown (from the manifest's ``view``)."""
    if manifest.get("view") == "transfer":
        heard = [str(m) for m, v in _d(manifest.get("views")).items() if v in ("power", "logmel", "spectrum")]
        return (f"Videos are shown as animated GIFs ({manifest.get('frame_rate')} frames/s; the bar "
                f"under each frame marks the time step) and frame strips"
                + (f"; {', '.join(heard)} as spectrograms (time across, frequency up) made audible with "
                   f"Griffin-Lim ({manifest.get('griffin_lim_iters')} iterations)" if heard else "")
                + ".")
    if manifest.get("view") == "frames":
        return (f"Videos are shown as animated GIFs ({manifest.get('frame_rate')} frames/s; the bar "
                f"under each frame marks the time step) above their frame strips.")
    what = {"spectrum": "log-magnitude spectrograms (time across, frequency up)",
            "features": "feature heat maps (time across)"}.get(
        str(manifest.get("view")), "log-Mel spectrograms (time across, Mel band up)")
    return (f"Speech is shown as {what} and made audible with Griffin-Lim "
            f"({manifest.get('griffin_lim_iters')} iterations).")


def render_page(run: Run, evaluation: dict[str, Any], manifest: dict[str, Any],
                quality: dict[str, Any], plots: list[tuple[Path, str]], gen: Path,
                audio_rows: int = 1, notes: dict[str, str] | None = None) -> str:
    """The HTML text of the report. Every value is escaped (:func:`h`); every embedded file must
    lie inside the run folder (:func:`embeddable`, RunDirError otherwise). ``notes``: output ->
    why the model refused it ("evaluation", "t-SNE"), shown in its place."""
    notes = notes or {}
    files = _Files(run.path)
    rows = [PurityRow(**r) for r in evaluation.get("rows", [])]
    content = _content_symbol(run.model.latents)
    table = markdown_table_to_html(rows_to_markdown(rows)) if rows else "<p>no rows</p>"
    if "evaluation" in notes:
        table = h("<p>Not computed: {}</p>", notes["evaluation"])
    refused = cat(h("<p class='small'>{} not computed: {}</p>", k, v) for k, v in notes.items()
                  if k != "evaluation")
    prov = _d(run.info.get("provenance"))
    title = f"dispart report: {run.display_name} ({run.model.name}) - {run.path.name}"
    facts = {"provenance": prov, "data": run.info.get("data", {}), "model": run.info.get("model", {})}
    figures = cat(h("<figure>{}<figcaption>{}</figcaption></figure>",
                    files.img(p.parent, p.name, c, f"report_assets/{p.name}"), c) for p, c in plots)
    parts = [
        h("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{}</title>"
          "<style>{}</style>{}</head><body>", title, Safe(CSS), Safe(RENDER_CHECK_SCRIPT)),
        h("<h1>{}</h1>", title),
        h("<p class='small'>run folder {} &middot; trained {} &middot; dispart {} &middot; seed {} "
          "&middot; <span id='render-check'>render check: pending</span></p>", run.path,
          prov.get("date", "?"), prov.get("dispart", "?"), prov.get("seed", "?")),
        h("<h2>Summary</h2>{}", _summary_html(run, evaluation, quality)),
        h("<h2>Table 1: k-means purity of unimodal test latents</h2>{}", Safe(table)),
        Safe("<p class='small'>Weighted average purity of k-means (k = 10) clusters of latents "
             "inferred by each unimodal encoder on the test split; paper columns: Hsu &amp; Glass "
             "(2018).</p>"),
        h("<h2>Plots</h2>{}<div class='plots'>{}</div><h2>Generation</h2>", refused, figures),
        h("<p class='small'>Sources from the {} split, seed {}. {}</p>", manifest.get("split"),
          manifest.get("seed"), _shown_as(manifest)),
        _grids_html(manifest, gen, files, audio_rows, content, _style_symbol(run.model.latents),
                    run.model.latents),
        h("<h2>Configuration</h2><pre>{}</pre>",
          yaml.safe_dump(run.config.to_dict(), sort_keys=False)),
        h("<h2>Provenance</h2><pre>{}</pre>", json.dumps(facts, indent=1)),
        Safe("</body></html>"),
    ]
    return "\n".join(parts)


def build_report(run_dir: str | Path, out: str | Path | None = None, seed: int = 0, rows: int = 5,
                 tsne_points: int = 500, regenerate: bool = False, quality_items: int = 2000,
                 data: ExperimentData | None = None) -> Path:
    """Write the self-contained report of a run (default RUN_DIR/report.html); returns its path.

    Computes and stores in the run folder whatever is missing, corrupt or stale (see the module
    docstring); ``regenerate`` recomputes everything; ``rows``: style rows of the grids;
    ``tsne_points``: test items per modality in t-SNE plots; ``quality_items``: test items per
    modality judged. RunDirError if the run folder names a file outside itself.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if _digit_model(run):  # sequence models (DSAE, MDVAE): no digit quality to judge
        require_speech_and_images(run, "dispart report (or a sequence model such as DSAE or MDVAE)")
    for name in ("generated", "report_assets"):
        _require_inside(run_dir, name)
    if data is None:
        data = load_experiment_data(run.config.data, progress=False, normalizers=run.normalizers)
    notes: dict[str, str] = {}  # what the model refused to be evaluated with -> why
    evaluation, manifest, quality, new_evaluation = _ensure(run_dir, run, data, rows, seed,
                                                            regenerate, quality_items, notes)
    _check_manifest_files(run_dir, manifest)
    embedding = _refused(run, "t-SNE", lambda: ensure_embedding(
        run, data, points=tsne_points, seed=seed, regenerate=regenerate), notes)
    assets, key = run_dir / "report_assets", _assets_key(run, seed, tsne_points)
    fresh = _assets_fresh(assets, key)  # first: a corrupt stamp is named even when redrawing
    if regenerate or new_evaluation or not fresh:
        _clear_pngs(assets)
    assets.mkdir(parents=True, exist_ok=True)
    plots = _inertia_plot(run, evaluation, assets)
    if embedding is not None:
        plots += draw_embeddings(embedding, assets)
    atomic_write_json(assets / ASSETS_STAMP, key)
    page = render_page(run, evaluation, manifest, quality, plots, run_dir / "generated", notes=notes)
    target = Path(out) if out else run_dir / "report.html"
    atomic_write(target, page)
    return target
