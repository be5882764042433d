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
          "provenance date"]


@pytest.fixture(scope="module")
def injected(report, data, tmp_path_factory):
    """A report of a run folder whose outputs (still matching its weights) carry payloads."""
    run = _copy(report, tmp_path_factory.mktemp("injected"))
    _edit(run / "quality.json", _inject_quality)
    _edit(run / "generated" / "manifest.json", _inject_manifest)
    _edit(run / "evaluation.json", _inject_evaluation)
    _edit(run / "run.json", lambda info: info["provenance"].update(date=payload("provenance date")))
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
