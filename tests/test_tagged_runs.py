"""benchmarks/tagged_runs.py: a result file keeps one entry per tag across calls."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from tagged_runs import write_tagged_run  # noqa: E402


def test_a_tag_replaces_its_own_entry_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_tagged_run(out, {"tag": "a", "x": 1}, what="w", units="u")
    write_tagged_run(out, {"tag": "b", "x": 2}, what="w", units="u")
    write_tagged_run(out, {"tag": "a", "x": 3}, what="w2", units="u2")
    d = json.loads(out.read_text())
    assert d["runs"] == [{"tag": "b", "x": 2}, {"tag": "a", "x": 3}]
    assert (d["what"], d["units"]) == ("w2", "u2") and set(d["machine"]) == {"python", "torch", "processor"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # written atomically, no temporary left
