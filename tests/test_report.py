"""`dispart report`: a self-contained HTML page that renders in headless Chromium."""

from __future__ import annotations

import argparse
import re

import matplotlib.image
import pytest
from browser import console_errors, ensure_chromium, run_chromium, tiny_run

from dispart.errors import RunDirError
from dispart.report.cli import add_report_parser
from dispart.report.html import RENDER_CHECK_SCRIPT, build_report

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
    assert text.count("<audio") >= 10
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
