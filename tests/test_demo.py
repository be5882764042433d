"""`make demo`'s job (dispart.demo.run_demo) end to end on the embedded sample, shortened to one epoch."""

from __future__ import annotations

import json

import pytest

from dispart.demo import run_demo
from dispart.errors import ConfigError
from dispart.evaluation.table import read_evaluation_json


@pytest.mark.slow
def test_the_demo_trains_evaluates_and_writes_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    # the demo's job on the small sample (the demo's own larger sample is checked in test_corpus)
    result = run_demo(out, overrides=["train.epochs=1", "model.hidden=16", "train.progress_bar=false",
                                      "data.audio=sample", "data.images=sample",
                                      f"data.cache_dir={tmp_path / 'cache'}"])
    printed = capsys.readouterr().out
    assert "[dispart demo] report:" in printed
    assert "estimated number of digit classes from speech/z^s" in printed
    assert result["rows"] == read_evaluation_json(out / "evaluation.json")["rows"]
    assert {(r["modality"], r["latent"], r["role"]) for r in result["rows"]} == {
        ("speech", "z^s", "content"), ("speech", "z^a", "style"),
        ("image", "z^s", "content"), ("image", "z^i", "style")}
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<audio" in html
    manifest = json.loads((out / "generated" / "manifest.json").read_text())
    assert manifest["weights_sha256"] == result["weights_sha256"]
    with pytest.raises(ConfigError, match="is not empty"):
        run_demo(out)
