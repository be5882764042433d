"""A small GRID folder for tests: clips of ../shared/data/grid_s1 linked into a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

GRID = Path(__file__).resolve().parents[2] / "shared" / "data" / "grid_s1"


def grid_subset(folder: Path, n: int) -> Path:
    """``folder/grid_s1`` with the first ``n`` clips (videos symlinked, alignments copied); skips
    the test, saying why, when the GRID sample or PyAV is missing."""
    if not (GRID / "video").is_dir():
        pytest.skip(f"GRID sample not present at {GRID} (../shared/data/grid_s1 of the workplace)")
    pytest.importorskip("av", reason="decoding GRID clips needs PyAV (pip install 'dispart[video]')")
    root = folder / "grid_s1"
    (root / "video").mkdir(parents=True)
    (root / "align").mkdir()
    for p in sorted((GRID / "video").glob("*.mpg"))[:n]:
        (root / "video" / p.name).symlink_to(p)
        shutil.copy(GRID / "align" / (p.stem + ".align"), root / "align")
    return root
