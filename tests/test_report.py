"""`dispart report`: a self-contained HTML page that renders in headless Chromium, and that
treats its run folder as untrusted (escaped values, contained paths, stale outputs recomputed)."""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import shutil
from pathlib import Path

import browser
import matplotlib.image
import numpy as np
import pytest
from browser import console_errors, ensure_chromium, run_chromium, tiny_run
from safetensors.torch import load_file, save_file

from dispart.batches.pipeline import load_experiment_data
from dispart.cli import main
from dispart.errors import RunDirError
from dispart.files import file_sha256
from dispart.report.cli import add_report_parser
from dispart.report.html import RENDER_CHECK_SCRIPT, build_report
from dispart.runs import load_run

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tiny_run(tmp_path_factory.getbasetemp())
    return build_report(run, rows=2, tsne_points=80, quality_items=60)


@pytest.fixture(scope="module")
def chromium():
    binary, reason = ensure_chromium()
    if binary is None:
        pytest.skip(reason)
    return binary


def _status(dom: str) -> str:
    m = re.search(r'data-render-check="([^"]*)"', dom)
    return m.group(1) if m else "missing"


def test_report_is_self_contained_and_complete(report):
    text = report.read_text()
    run = report.parent
    for name in ("evaluation.json", "quality.json", "generated/manifest.json", "report_assets/inertia.png"):
        assert (run / name).is_file(), name  # computed because they were missing
    assert "Table 1" in text and "Paper Speech Pur.(%)" in text and "z^s" in text
    assert "Estimated number of classes" in text and "Cross-modal coherence" in text
    assert "Speaker identity from z^a" in text
    quality = json.loads((run / "quality.json").read_text())
    within = quality["image_style"]["within_image"]  # the tiny run's image style correlations
    assert re.search(r"Image style carried, within-image style transfer: correlation of slant "
                     rf"{within['slant_corr']:.2f} \(within digit [-0-9.]+, ceiling [-0-9.]+\), "
                     rf"ink {within['ink_corr']:.2f} ", text)
    assert "Speakers erased" not in text  # not an erased run
    assert "Provenance" in text and "&quot;seed&quot;: 0" in text and "train:" in text
    srcs = re.findall(r'<(?:img|audio)[^>]*\ssrc="([^"]*)"', text)
    assert len(srcs) > 20 and all(s.startswith(("data:image/png;base64,", "data:audio/wav;base64,"))
                                  for s in srcs)
    # every player holds the bytes of one of the generated wavs the manifest lists, no others
    manifest = json.loads((run / "generated" / "manifest.json").read_text())
    wavs = {(run / "generated" / e["wav"]).read_bytes() for g in manifest["grids"]
            for key in ("audio", "sources_audio") for e in g.get(key, [])}
    players = re.findall(r'<audio[^>]*\ssrc="data:audio/wav;base64,([^"]*)"', text)
    assert len(players) == text.count("<audio") >= 10
    assert all(base64.b64decode(b) in wavs for b in players)
    assert not re.search(r'(?:src|href)="(?:https?:|file:|/)', text)


def test_report_renders_in_headless_chromium(report, chromium, tmp_path):
    done = run_chromium(chromium, report, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    status = _status(done.stdout)
    assert status.startswith("ok "), status
    n_img = int(re.search(r"images=(\d+)", status).group(1))
    n_audio = int(re.search(r"audio=(\d+)", status).group(1))
    assert n_img == report.read_text().count("<img") and n_audio == report.read_text().count("<audio")
    assert console_errors(done.stderr) == []
    shot = tmp_path / "shot.png"
    done = run_chromium(chromium, report, f"--screenshot={shot}", "--window-size=1200,1600")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not blank
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.01  # some dark ink (text, plots)


def test_render_check_catches_broken_images_audio_and_script_errors(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        f"<!DOCTYPE html><html><head>{RENDER_CHECK_SCRIPT}</head><body><p>x</p>"
        '<img src="data:image/png;base64,AAAA"><audio src="data:audio/wav;base64,AAAA"></audio>'
        "<script>undefinedFunction();</script></body></html>")
    done = run_chromium(chromium, page, "--dump-dom")
    status = _status(done.stdout)
    assert status.startswith("FAIL"), status
    assert "bad_images=1" in status and "bad_audio=1" in status
    assert console_errors(done.stderr), "the uncaught error should be logged"


def test_report_cli_errors_for_a_missing_run_folder(tmp_path):
    parser = argparse.ArgumentParser(prog="dispart")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(tmp_path / "missing")])
    with pytest.raises(RunDirError, match="run folder not found"):
        args.func(args)
    (tmp_path / "empty").mkdir()
    args = parser.parse_args(["report", str(tmp_path / "empty")])
    with pytest.raises(RunDirError, match="run.json is missing"):
        args.func(args)


# --------------------------------------------------------------------------- untrusted run folders

KW = {"rows": 2, "tsne_points": 80, "quality_items": 60}  # as the `report` fixture: outputs reused


def payload(field: str) -> str:
    """Markup that would run script if a field were pasted into the page unescaped."""
    return (f'"><img src=x onerror="document.body.dataset.pwned=\'{field}\'">'
            f"<script>document.title='pwned {field}'</script>")


@pytest.fixture(scope="module")
def data(report):
    run = load_run(report.parent)
    return load_experiment_data(run.config.data, progress=False, normalizer=run.normalizer)


def _copy(report, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(report.parent, run, symlinks=True, ignore=shutil.ignore_patterns("report.html"))
    return run


def _edit(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def _inject_quality(q: dict) -> None:
    q["classifiers"][payload("classifier key")] = {"test_accuracy": 0.5, "n_test": payload("n_test")}
    q["coherence"][payload("coherence key")] = {"n": payload("coherence n"),
                                                "reference_style": payload("coherence value")}
    q["content_preservation"][payload("modality key")] = {
        "semantic_digit": 0.5, "style_source_digit": payload("digit value"), "n": payload("cp n")}
    q["reconstruction"][payload("reconstruction key")] = 0.5
    q["resynthesis_real_speech"] = {"accuracy": payload("resynth value"), "n": payload("resynth n")}
    q["speaker_probe_accuracy"][payload("probe key")] = 0.5
    q["speaker_chance"] = payload("speaker chance")
    q["chance"] = payload("chance")
    q["image_style"][payload("image style key")] = {"slant_corr": 0.5, "n": payload("image style n")}


def _inject_manifest(m: dict) -> None:
    m.update(seed=payload("seed"), griffin_lim_iters=payload("griffin_lim_iters"),
             split=payload("split"))
    grids = {g["name"]: g for g in m["grids"]}
    grids["style_image"]["name"] = payload("grid name")
    grids["style_audio"]["sources_audio"][0]["tag"] = payload("tag")
    for a in grids["cross_image_to_audio"]["audio"]:  # no semantic speech sources: "column c"
        a["col"] = payload("column label") if a["col"] == 3 else a["col"]
    prior = grids["prior_style_audio"]  # style from the prior: "row r"
    prior["audio"] = [{**a, "row": payload("row label")} for a in prior["audio"] if a["row"] == 0]


def _inject_evaluation(ev: dict) -> None:
    ev["estimated_num_classes"][payload("estimate key") + "/z"] = payload("estimate value")
    ev["rows"][0]["model"] = payload("table model")


FIELDS = ["classifier key", "n_test", "coherence key", "coherence n", "coherence value",
          "modality key", "digit value", "cp n", "reconstruction key", "resynth value", "resynth n",
          "probe key", "speaker chance", "chance", "seed", "griffin_lim_iters", "split", "grid name",
          "tag", "column label", "row label", "estimate key", "estimate value", "table model",
          "provenance date", "image style key", "image style n", "erasure method", "erasure source"]


@pytest.fixture(scope="module")
def injected(report, data, tmp_path_factory):
    """A report of a run folder whose outputs (still matching its weights) carry payloads."""
    run = _copy(report, tmp_path_factory.mktemp("injected"))
    _edit(run / "quality.json", _inject_quality)
    _edit(run / "generated" / "manifest.json", _inject_manifest)
    _edit(run / "evaluation.json", _inject_evaluation)
    _edit(run / "run.json", lambda info: info["provenance"].update(date=payload("provenance date")))
    _edit(run / "run.json", lambda info: info.update(erasure={
        "method": payload("erasure method"), "rank": 4, "utterances": 10, "speakers": ["a", "b"],
        "source_run": payload("erasure source")}))
    return build_report(run, data=data, **KW)


@pytest.mark.parametrize("field", FIELDS)
def test_report_escapes_every_value_read_from_the_run_folder(injected, field):
    text = injected.read_text()
    assert payload(field) not in text
    assert html.escape(payload(field)) in text  # the value is shown, as text


def test_no_payload_markup_anywhere_in_the_injected_report(injected):
    text = injected.read_text()
    assert "<img src=x" not in text and "<script>document.title" not in text


def test_injected_report_renders_without_running_any_payload(injected, chromium):
    done = run_chromium(chromium, injected, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert _status(dom).startswith("ok "), _status(dom)  # an injected <img src=x> would fail
    assert not re.search(r"<body[^>]*data-pwned", dom)  # no onerror handler ran
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title.startswith("dispart report") and "pwned" not in title  # no <script> ran
    assert console_errors(done.stderr) == []


SECRET = b"RIFF-not-a-wav: secret outside the run folder"


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "hostname", "suffix", "folder"])
def test_report_refuses_manifest_paths_outside_the_run_folder(report, data, tmp_path, case):
    run = _copy(report, tmp_path)
    (tmp_path / "secret.wav").write_bytes(SECRET)
    if case == "symlink":
        (run / "generated" / "audio" / "link.wav").symlink_to(tmp_path / "secret.wav")
    bad = {"dotdot": "../../secret.wav", "absolute": str(tmp_path / "secret.wav"),
           "symlink": "audio/link.wav", "hostname": "../../etc/hostname",
           "suffix": "../config.yaml", "folder": "audio"}[case]
    why = {"suffix": "is not a .wav file", "folder": "is not a regular file"}.get(
        case, "is outside the run folder")
    _edit(run / "generated" / "manifest.json",
          lambda m: m["grids"][1]["audio"][0].update(wav=bad))
    with pytest.raises(RunDirError) as err:
        build_report(run, data=data, **KW)
    assert f"generated/manifest.json: grids[1].audio[0].wav = {bad!r} {why}" in str(err.value)
    assert not (run / "report.html").exists()


def test_report_cli_refusal_is_one_line(report, tmp_path, capsys):
    run = _copy(report, tmp_path)
    _edit(run / "generated" / "manifest.json",
          lambda m: m["grids"][0].update(png="../../../../../../../../etc/hostname"))
    assert main(["report", str(run), "--rows", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grids[0].png" in err and "etc/hostname" in err, err
    assert not (run / "report.html").exists()


def test_report_refuses_a_plot_symlinked_outside_the_run_folder(report, data, tmp_path):
    run = _copy(report, tmp_path)
    (tmp_path / "outside.png").write_bytes((run / "report_assets" / "inertia.png").read_bytes())
    (run / "report_assets" / "inertia.png").unlink()
    (run / "report_assets" / "inertia.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(RunDirError, match=r"report_assets/inertia.png = 'inertia.png' is outside"):
        build_report(run, data=data, **KW)


def _outputs(run: Path) -> dict[str, dict]:
    return {name: json.loads((run / name).read_text())
            for name in ("evaluation.json", "quality.json", "generated/manifest.json",
                         "report_assets/assets.json")}


def test_outputs_of_other_weights_are_computed_again(report, data, tmp_path, capsys):
    run = _copy(report, tmp_path)
    for name in ("evaluation.json", "quality.json", "generated/manifest.json"):
        _edit(run / name, lambda obj: obj.update(planted="old output"))
    old = _outputs(run)
    weights = load_file(run / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.05  # e.g. training went on with --resume
    save_file(weights, run / "model.safetensors")  # (run.json records the new file's hash)
    sha = file_sha256(run / "model.safetensors")
    _edit(run / "run.json", lambda info: info.get("files", {}).update({"model.safetensors": sha}))
    assert load_run(run).weights_sha256 == sha
    assert sha != old["evaluation.json"]["weights_sha256"]
    build_report(run, data=data, **KW)
    new = _outputs(run)
    assert {v["weights_sha256"] for v in new.values()} == {sha}
    assert not any("planted" in v for v in new.values())  # recomputed, not patched
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3 and all(" is stale (" in w for w in warnings), warnings
    build_report(run, data=data, **KW)  # now fresh: reused, no warning
    assert capsys.readouterr().err == "" and _outputs(run) == new


def test_plots_of_other_weights_are_drawn_again(report, data, tmp_path):
    run = _copy(report, tmp_path)
    assets = run / "report_assets"
    planted = (assets / "inertia.png").read_bytes()
    (assets / "tsne_image_z_s.png").write_bytes(planted)
    _edit(assets / "assets.json", lambda key: key.update(weights_sha256="0" * 64))
    build_report(run, data=data, **KW)  # evaluation.json is fresh: only the stamp says stale
    assert (assets / "tsne_image_z_s.png").read_bytes() != planted
    assert _outputs(run)["report_assets/assets.json"]["weights_sha256"] == load_run(run).weights_sha256


def test_corrupt_or_unstamped_outputs_are_computed_again(report, data, tmp_path, capsys):
    run = _copy(report, tmp_path)
    sha = load_run(run).weights_sha256
    (run / "quality.json").write_text('{"classifiers": ')  # truncated
    (run / "generated" / "manifest.json").write_text(json.dumps({"grids": 5, "weights_sha256": sha}))
    _edit(run / "evaluation.json", lambda ev: ev.pop("weights_sha256"))  # an older dispart's
    (run / "report_assets" / "assets.json").write_text("\x00\x01")
    build_report(run, data=data, **KW)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 4, warnings
    for name, why in (("quality.json", "is malformed (EvaluationFileError"),
                      ("manifest.json", "is malformed (ValueError: grids is not a list"),
                      ("evaluation.json", "is stale (it records no weights_sha256)"),
                      ("assets.json", "drawing the plots again")):
        assert any(name in w and why in w for w in warnings), (name, warnings)
    assert {v["weights_sha256"] for v in _outputs(run).values()} == {sha}
    assert "Cross-modal coherence" in (run / "report.html").read_text()


def test_browser_tests_skip_only_naming_a_failed_install(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    log = tmp_path / "chromium-install.log"
    log.write_text("W: Failed to fetch http://deb.debian.org\nE: Unable to locate package chromium\n")
    binary, reason = browser.ensure_chromium(log)
    assert binary is None and "could not install it" in reason
    assert "E: Unable to locate package chromium" in reason


# --------------------------------------------------------------------------- library outputs, rendered


def test_embedding_is_a_run_output_made_from_the_latent_declarations(report, data):
    run = load_run(report.parent)
    emb = json.loads((report.parent / "embedding.json").read_text())
    assert emb["weights_sha256"] == run.weights_sha256 and (emb["seed"], emb["points"]) == (0, 80)
    got = {e["name"]: e for e in emb["embeddings"]}
    # PVAE declares z_s (content, audio+image), z_audio and z_image (style): Figs. 11-15
    assert list(got) == ["speech_z_s", "image_z_s", "pooled_z_s", "speech_z_audio",
                         "speech_z_audio_speaker", "image_z_image"]
    for e in got.values():
        declared = run.model.latents[e["latent"]]
        assert (e["role"], e["symbol"]) == (declared.role, declared.symbol)
        assert len(e["xy"]) == len(e["labels"]) == (160 if e["name"] == "pooled_z_s" else 80)
        assert all(len(p) == 2 for p in e["xy"])
    digits = set(data.split("audio", "test").labels) | set(data.split("image", "test").labels)
    assert set(got["speech_z_s"]["labels"]) <= digits and len(set(got["image_z_s"]["labels"])) > 5
    assert set(got["speech_z_audio_speaker"]["labels"]) <= set(data.split("audio", "test").speakers)
    assert got["pooled_z_s"]["groups"] == ["speech"] * 80 + ["image"] * 80
    text = report.read_text()
    for e in got.values():
        assert html.escape(e["caption"]) in text


def test_report_renders_the_stored_embedding_without_computing_it(report, data, tmp_path,
                                                                  monkeypatch):
    import dispart.evaluation.embedding as embedding

    run = _copy(report, tmp_path)
    _edit(run / "embedding.json",
          lambda e: e["embeddings"][1].update(caption="caption <kept> from embedding.json"))
    before = (run / "report_assets" / "tsne_image_z_s.png").read_bytes()

    def no_tsne(*args, **kwargs):
        raise AssertionError("t-SNE computed although embedding.json is fresh")

    monkeypatch.setattr(embedding, "tsne_2d", no_tsne)
    build_report(run, data=data, **KW)
    assert "caption &lt;kept&gt; from embedding.json" in (run / "report.html").read_text()
    # embedding.json changed, so the figures were drawn again, from the stored coordinates
    stamp = json.loads((run / "report_assets" / "assets.json").read_text())
    assert stamp["embedding_sha256"] == file_sha256(run / "embedding.json")
    assert (run / "report_assets" / "tsne_image_z_s.png").is_file()
    assert (run / "report_assets" / "tsne_image_z_s.png").read_bytes() == before  # same points


@pytest.mark.parametrize("change", ["points", "unsafe name", "weights"])
def test_embedding_of_other_settings_or_weights_is_computed_again(report, data, tmp_path, change):
    run = _copy(report, tmp_path)
    edit = {"points": lambda e: e.update(points=7),
            "unsafe name": lambda e: e["embeddings"][0].update(name="../../escaped"),
            "weights": lambda e: e.update(weights_sha256="0" * 64)}[change]
    _edit(run / "embedding.json", edit)
    build_report(run, data=data, **KW)
    emb = json.loads((run / "embedding.json").read_text())
    assert emb["points"] == 80 and emb["weights_sha256"] == load_run(run).weights_sha256
    assert emb["embeddings"][0]["name"] == "speech_z_s"
    assert not (tmp_path / "escaped.png").exists() and not (run.parent / "tsne_escaped.png").exists()


def test_tsne_keeps_far_apart_groups_apart_and_plot_checks_shapes(tmp_path):
    from dispart.evaluation.embedding import plot_embedding, tsne_2d

    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (30, 8))
    b = rng.normal(0.0, 1.0, (30, 8)) + 50.0  # another group, far away in every dimension
    xy = tsne_2d(np.concatenate([a, b]), seed=0)
    assert xy.shape == (60, 2)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    group = np.repeat([0, 1], 30)
    assert (group[d.argmin(axis=1)] == group).all()  # every nearest neighbour is in its own group
    with pytest.raises(ValueError, match="N >= 2"):
        tsne_2d(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_embedding(np.zeros((4, 3)), np.zeros(4), tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="labels"):
        plot_embedding(np.zeros((4, 2)), np.zeros(3), tmp_path / "x.png", "t")
    plot_embedding(xy, group, tmp_path / "x.png", "t", groups=np.asarray(["o"] * 30 + ["x"] * 30))
    assert matplotlib.image.imread(tmp_path / "x.png").shape[2] in (3, 4)


def test_latent_roles_come_from_rows_then_declarations_then_legacy_symbols():
    from types import SimpleNamespace

    from dispart.models.latents import Latent, declare
    from dispart.report.html import _content_keys, _symbol

    latents = declare(Latent("z_s", 4, ("audio", "image"), "content", symbol="z^s"),
                      Latent("z_audio", 4, ("audio",), "style", symbol="z^a"),
                      Latent("w", 4, ("audio",), "content", symbol="w^av"))
    run = SimpleNamespace(model=SimpleNamespace(latents=latents))
    ev = {"rows": [{"model": "M", "modality": "image", "latent": "z^i", "purity": 0.5,
                    "role": "content"}]}  # a recorded role wins over the paper's symbol
    keys = ["speech/z^s", "speech/z^a", "speech/w^av", "image/z^i", "image/z", "image/q"]
    assert _content_keys(keys, ev, run) == ["speech/z^s", "speech/w^av", "image/z^i", "image/z"]
    assert [_symbol(n, latents) for n in ("z_audio", "w", "z_image", "z_x", "z^a")] == \
        ["z^a", "w^av", "z^i", "z^x", "z^a"]
