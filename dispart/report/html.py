"""One self-contained HTML page per run: Table 1, plots, grids, audio, quality, config, provenance.

Every image and sound is embedded as a ``data:`` URI, so the page can be mailed or archived
alone. Whatever the run folder lacks is computed first and kept in the run folder:

- ``evaluation.json`` (Table 1, inertia curves) via :func:`dispart.evaluation.evaluate.evaluate_run`;
- ``generated/`` (grids, wavs) via :func:`dispart.generation.cli.generate`;
- ``quality.json`` (coherence, content preservation) via :mod:`dispart.evaluation.quality`;
- ``report_assets/`` (inertia and t-SNE plots; JMVAE-kl Fig. 2 rows).

The page carries a tiny script that, once loaded, checks that every ``<img>`` decoded and every
``<audio>`` loaded its metadata, and writes the verdict into ``body[data-render-check]`` (used
by the browser test; harmless otherwise).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dispart.data.pipeline import ExperimentData, load_experiment_data
from dispart.evaluation.evaluate import evaluate_run, latent_symbol
from dispart.evaluation.latents import image_latents, speech_latents
from dispart.evaluation.plots import plot_inertia, plot_tsne
from dispart.evaluation.table import PurityRow, read_evaluation_json, rows_to_markdown
from dispart.runs import Run, load_run, require_speech_and_images

__all__ = ["build_report", "data_uri", "markdown_table_to_html", "RENDER_CHECK_SCRIPT"]

MIME = {".png": "image/png", ".wav": "audio/wav", ".json": "application/json"}

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
pre { background: #f7f7f7; padding: .7em; overflow-x: auto; font-size: .85em; }
.small { font-size: .85em; color: #666; }
"""

GRID_CAPTIONS = {
    "style": "Within-modality style transfer (paper Figs. 4, 16-18): each column uses z^s inferred "
             "from the sample on top, each row the style latent inferred from the sample on the left.",
    "cross": "Cross-modal generation (paper Figs. 5, 19-22): z^s inferred from the other modality "
             "(top row), style from a reference of the output modality (left column).",
    "prior_style": "Fixed z^s (top row) with the style latent drawn from the prior N(0, I) (rows).",
    "prior_semantic": "z^s drawn from the prior (columns) with fixed style latents (left column).",
    "fig2": "JMVAE-kl (paper Fig. 2): z inferred from one modality by its unimodal encoder, "
            "decoded into speech and image.",
}


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
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in cells[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}%"


def _img(path: Path, alt: str) -> str:
    return f'<img src="{data_uri(path)}" alt="{html.escape(alt)}">'


def _audio(path: Path) -> str:
    return f'<audio controls preload="metadata" src="{data_uri(path)}"></audio>'


# --------------------------------------------------------------------------- assets


def _plots(run: Run, data: ExperimentData, evaluation: dict[str, Any], folder: Path,
           tsne_points: int, seed: int) -> list[tuple[Path, str]]:
    """Inertia (Fig. 3) and t-SNE plots (Figs. 11-15); returns (png, caption) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, str]] = []
    curves = evaluation.get("inertia") or {}
    if curves:
        shared = {k: v for k, v in curves.items() if k.endswith(("z^s", "/z"))} or curves
        est = {k: v for k, v in (evaluation.get("estimated_num_classes") or {}).items() if k in shared}
        path = folder / "inertia.png"
        if not path.is_file():
            plot_inertia({k: {int(a): float(b) for a, b in v.items()} for k, v in shared.items()},
                         path, estimated=est)
        out.append((path, "k-means inertia of the shared latent vs number of clusters (paper "
                          "Fig. 3); circles mark the automatic elbow estimate."))
    model = run.model
    rng = np.random.default_rng(seed)

    def sub(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, min(n, tsne_points), replace=False))

    lat: dict[str, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]] = {}
    if "audio" in model.modalities:
        idx = sub(len(data.speech_test))
        z = speech_latents(model, [data.speech_test.features[i] for i in idx])
        lat["speech"] = (z, np.asarray(data.speech_test.labels)[idx],
                         np.asarray(data.speech_test.speakers)[idx])
    if "image" in model.modalities:
        idx = sub(len(data.image_test))
        lat["image"] = (image_latents(model, data.image_test.images[idx]),
                        np.asarray(data.image_test.labels)[idx], None)

    def tsne(name: str, z: np.ndarray, labels: np.ndarray, title: str, caption: str,
             markers: np.ndarray | None = None) -> None:
        path = folder / f"tsne_{name}.png"
        if not path.is_file():
            plot_tsne(z, labels, path, title, markers=markers, seed=seed, max_points=tsne_points * 2)
        out.append((path, caption))

    shared_names = {m: [n for n in z if n in ("z_s", "z")] for m, (z, _, _) in lat.items()}
    for m, (z, y, _) in lat.items():
        for n in shared_names[m]:
            tsne(f"{m}_{n}", z[n], y, f"{latent_symbol(n)} from {m} (test), by digit",
                 f"t-SNE of {latent_symbol(n)} inferred from {m} alone, coloured by digit "
                 f"(paper Figs. 11-12).")
    if len(lat) == 2 and shared_names["speech"] and shared_names["image"]:
        n = shared_names["speech"][0]
        zs, ys, _ = lat["speech"]
        zi, yi, _ = lat["image"]
        tsne(f"pooled_{n}", np.concatenate([zs[n], zi[n]]), np.concatenate([ys, yi]),
             f"{latent_symbol(n)} pooled over speech and image",
             "t-SNE of the shared latent pooled over both modalities (paper Fig. 13): 'o' "
             "speech, 'x' image.", markers=np.asarray(["speech"] * len(ys) + ["image"] * len(yi)))
    for m, (z, y, spk) in lat.items():
        for n in z:
            if n in ("z_s", "z"):
                continue
            tsne(f"{m}_{n}", z[n], y, f"{latent_symbol(n)} from {m}, by digit",
                 f"t-SNE of the style latent {latent_symbol(n)} coloured by digit (paper Figs. "
                 f"14-15): no digit clusters expected.")
            if spk is not None:
                tsne(f"{m}_{n}_speaker", z[n], spk, f"{latent_symbol(n)} from {m}, by speaker",
                     f"The same {latent_symbol(n)} coloured by speaker.")
    return out


def _ensure(run_dir: Path, run: Run, data: ExperimentData, rows: int, seed: int,
            regenerate: bool, quality_items: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """evaluation.json, generated/manifest.json and quality.json, computing what is missing."""
    from dispart.evaluation.classifiers import run_classifiers
    from dispart.evaluation.quality import quality_from_data
    from dispart.evaluation.table import write_evaluation_json
    from dispart.generation.cli import generate

    ev_path = run_dir / "evaluation.json"
    evaluation = evaluate_run(run_dir, progress=False, data=data) if regenerate or not ev_path.is_file() \
        else read_evaluation_json(ev_path)
    man_path = run_dir / "generated" / "manifest.json"
    if regenerate or not man_path.is_file():
        manifest = generate(run, data, run_dir / "generated", rows=rows, seed=seed)
    else:
        manifest = json.loads(man_path.read_text())
    q_path = run_dir / "quality.json"
    if regenerate or not q_path.is_file():
        quality = quality_from_data(run, data, run_classifiers(run, data, seed=seed), seed=seed,
                                    max_items=quality_items)
        quality["provenance"] = run.info.get("provenance", {})
        write_evaluation_json(q_path, quality)
    else:
        quality = read_evaluation_json(q_path)
    return evaluation, manifest, quality


# --------------------------------------------------------------------------- page


def _summary_html(evaluation: dict[str, Any], quality: dict[str, Any]) -> str:
    items: list[str] = []
    for key, k in (evaluation.get("estimated_num_classes") or {}).items():
        if key.endswith(("z^s", "/z")):
            items.append(f"<li>Estimated number of classes from {html.escape(key)} (inertia "
                         f"elbow): <b>{int(k)}</b></li>")
    clf = quality.get("classifiers", {})
    for m, c in clf.items():
        items.append(f"<li>Judge classifier ({'speech' if m == 'audio' else m}) accuracy on real "
                     f"test data: <b>{_pct(c.get('test_accuracy'))}</b> (n={c.get('n_test')})</li>")
    for key, e in (quality.get("coherence") or {}).items():
        parts = [f"{k.replace('_', ' ')} {_pct(v)}" for k, v in e.items()
                 if k in ("reference_style", "prior_style", "shared_latent", "resynthesized")]
        items.append(f"<li>Cross-modal coherence {html.escape(key.replace('audio', 'speech'))}: "
                     f"<b>{', '.join(parts)}</b> (n={e.get('n')})</li>")
    for m, e in (quality.get("content_preservation") or {}).items():
        items.append(f"<li>Style transfer content preservation ({'speech' if m == 'audio' else m}): "
                     f"<b>{_pct(e['semantic_digit'])}</b> keep the z^s source's digit, "
                     f"{_pct(e['style_source_digit'])} take the style source's digit (n={e['n']})</li>")
    if quality.get("reconstruction"):
        rec = ", ".join(f"{'speech' if m == 'audio' else m} {_pct(v)}"
                        for m, v in quality["reconstruction"].items())
        items.append(f"<li>Reconstructions classified correctly: {rec}</li>")
    if quality.get("resynthesis_real_speech"):
        r = quality["resynthesis_real_speech"]
        items.append(f"<li>Real test speech through Griffin-Lim and back, classified correctly: "
                     f"{_pct(r['accuracy'])} (n={r['n']})</li>")
    probe = quality.get("speaker_probe_accuracy") or evaluation.get("speaker_probe_accuracy") or {}
    for n, acc in probe.items():
        items.append(f"<li>Speaker identity from {html.escape(latent_symbol(n))} (linear probe): "
                     f"<b>{_pct(acc)}</b> (chance {_pct(quality.get('speaker_chance'))})</li>")
    if quality.get("chance"):
        items.append(f"<li class='small'>Digit chance level: {_pct(quality['chance'])}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _clips_html(entry: dict[str, Any], gen: Path, max_rows: int) -> str:
    """Table of audio players: header = semantic sources, left = style sources, body = clips."""
    clips = {(a["row"], a["col"]): a for a in entry["audio"]}
    if not clips:
        return ""
    rows = sorted({r for r, _ in clips})[:max_rows]
    cols = sorted({c for _, c in clips})
    src = {(s["axis"], s["index"]): s for s in entry.get("sources_audio", [])}
    head = "<th></th>"
    for c in cols:
        s = src.get(("semantic", c))
        head += "<th>" + (f"z^s from {html.escape(s['tag'])}<br>{_audio(gen / s['wav'])}" if s
                          else f"column {c}") + "</th>"
    body = ""
    for r in rows:
        s = src.get(("style", r))
        body += "<tr><th>" + (f"style from {html.escape(s['tag'])}<br>{_audio(gen / s['wav'])}"
                              if s else f"row {r}") + "</th>"
        for c in cols:
            a = clips.get((r, c))
            cell = ""
            if a:
                if a.get("spectrogram"):
                    cell += _img(gen / a["spectrogram"], f"spectrogram r{r} c{c}")
                cell += _audio(gen / a["wav"])
            body += f"<td>{cell}</td>"
        body += "</tr>"
    return (f'<div class="scroll"><table class="clips"><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def _caption(name: str) -> str:
    for key in ("prior_style", "prior_semantic", "style", "cross", "fig2"):
        if name.startswith(key):
            return GRID_CAPTIONS[key]
    return ""


def render_page(run: Run, evaluation: dict[str, Any], manifest: dict[str, Any],
                quality: dict[str, Any], plots: list[tuple[Path, str]], gen: Path,
                audio_rows: int = 1) -> str:
    """The HTML text of the report."""
    rows = [PurityRow(**r) for r in evaluation.get("rows", [])]
    table = markdown_table_to_html(rows_to_markdown(rows)) if rows else "<p>no rows</p>"
    prov = run.info.get("provenance", {})
    title = f"dispart report: {run.display_name} ({run.model.name}) - {run.path.name}"
    esc = {k: html.escape(str(prov.get(k, "?"))) for k in ("date", "dispart", "seed")}
    facts = {"provenance": prov, "data": run.info.get("data", {}), "model": run.info.get("model", {})}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style>{RENDER_CHECK_SCRIPT}</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='small'>run folder {html.escape(str(run.path))} &middot; trained "
        f"{esc['date']} &middot; dispart {esc['dispart']} &middot; seed {esc['seed']} &middot; "
        f"<span id='render-check'>render check: pending</span></p>",
        "<h2>Summary</h2>", _summary_html(evaluation, quality),
        "<h2>Table 1: k-means purity of unimodal test latents</h2>", table,
        "<p class='small'>Weighted average purity of k-means (k = 10) clusters of latents inferred "
        "by each unimodal encoder on the test split; paper columns: Hsu &amp; Glass (2018).</p>",
        "<h2>Plots</h2><div class='plots'>",
        *[f"<figure>{_img(p, c)}<figcaption>{html.escape(c)}</figcaption></figure>" for p, c in plots],
        "</div><h2>Generation</h2>",
        f"<p class='small'>Sources from the {html.escape(str(manifest.get('split')))} split, seed "
        f"{manifest.get('seed')}. Speech is shown as log-Mel spectrograms (time across, Mel band up) "
        f"and made audible with Griffin-Lim ({manifest.get('griffin_lim_iters')} iterations).</p>",
    ]
    for g in manifest.get("grids", []):
        parts.append(f"<h3>{html.escape(g['name'])}</h3><figure>{_img(gen / g['png'], g['name'])}"
                     f"<figcaption>{html.escape(_caption(g['name']))}</figcaption></figure>")
        clips = _clips_html(g, gen, audio_rows)
        if clips:
            parts.append(f"<p class='small'>Listen (first {audio_rows} row(s) of the grid):</p>{clips}")
    parts += [
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(yaml.safe_dump(run.config.to_dict(), sort_keys=False))}</pre>",
        "<h2>Provenance</h2>",
        f"<pre>{html.escape(json.dumps(facts, indent=1))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def build_report(run_dir: str | Path, out: str | Path | None = None, seed: int = 0, rows: int = 5,
                 tsne_points: int = 500, regenerate: bool = False, quality_items: int = 2000,
                 data: ExperimentData | None = None) -> Path:
    """Write the self-contained report of a run (default RUN_DIR/report.html); returns its path.

    Computes and stores in the run folder whatever is missing (see the module docstring);
    ``regenerate`` recomputes everything; ``rows``: style rows of the grids; ``tsne_points``:
    test items per modality in t-SNE plots; ``quality_items``: test items per modality judged.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    require_speech_and_images(run, "dispart report")
    if data is None:
        data = load_experiment_data(run.config.data, progress=False, normalizer=run.normalizer)
    evaluation, manifest, quality = _ensure(run_dir, run, data, rows, seed, regenerate, quality_items)
    assets = run_dir / "report_assets"
    if regenerate and assets.is_dir():
        for p in assets.glob("*.png"):
            p.unlink()
    plots = _plots(run, data, evaluation, assets, tsne_points, seed)
    page = render_page(run, evaluation, manifest, quality, plots, run_dir / "generated")
    target = Path(out) if out else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
