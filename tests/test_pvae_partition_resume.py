"""benchmarks/pvae_partition.py --resume-from: which run is continued, and the refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from pvae_partition import copy_for_resume  # noqa: E402


def _results(tmp_path: Path, run: Path) -> Path:
    out = tmp_path / "partition.json"
    entry = {"tag": "e100", "run": str(run), "command": "python benchmarks/pvae_partition.py --tag e100",
             "epochs": 100, "wall_seconds": {"train": 1969.4}}
    out.write_text(json.dumps({"runs": [entry]}))
    return out


def test_the_source_run_is_copied_and_its_record_kept(tmp_path: Path) -> None:
    source = tmp_path / "e100"
    (source / "checkpoints").mkdir(parents=True)
    (source / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    out = _results(tmp_path, source)
    got = copy_for_resume(out, "e100", tmp_path / "e150")
    assert got == {"tag": "e100", "run": str(source), "epochs": 100, "train_seconds": 1969.4,
                   "command": "python benchmarks/pvae_partition.py --tag e100"}
    assert (tmp_path / "e150" / "checkpoints" / "last.ckpt").read_bytes() == b"ckpt"
    assert (source / "checkpoints" / "last.ckpt").is_file()  # the source is left as it was


def test_refusals_name_the_tag_or_folder(tmp_path: Path) -> None:
    source = tmp_path / "e100"
    out = _results(tmp_path, source)
    with pytest.raises(SystemExit, match="no entry with tag 'nope' .* to resume from"):
        copy_for_resume(out, "nope", tmp_path / "new")
    with pytest.raises(SystemExit, match="has no checkpoints folder"):
        copy_for_resume(out, "e100", tmp_path / "new")
    (source / "checkpoints").mkdir(parents=True)
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit, match="taken exists; name a new folder"):
        copy_for_resume(out, "e100", tmp_path / "taken")
