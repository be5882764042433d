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


def write_av_clip(path: Path, n_frames: int = 30, fps: int = 25, size: tuple[int, int] = (360, 288),
                  audio_seconds: float | None = None, audio: bool = True, rate: int = 16000) -> Path:
    """A tiny synthetic MPEG-1 clip made with PyAV: ``n_frames`` grey-striped frames of ``size``
    (width, height) at ``fps``, and unless ``audio=False`` a mono MP2 track of a 440 Hz tone lasting
    ``audio_seconds`` (default: as long as the video). Skips the test without PyAV."""
    av = pytest.importorskip("av", reason="writing test clips needs PyAV (pip install 'dispart[video]')")
    import numpy as np

    with av.open(str(path), "w", format="mpeg") as c:
        vs = c.add_stream("mpeg1video", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        aus = None
        if audio:
            aus = c.add_stream("mp2", rate=rate)
            aus.layout = "mono"
        for i in range(n_frames):
            img = np.full((size[1], size[0], 3), 40 + 3 * i, np.uint8)
            img[::7] = 200
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        if aus is not None:
            n = int(round((n_frames / fps if audio_seconds is None else audio_seconds) * rate))
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 32767).astype(np.int16)
            step = aus.codec_context.frame_size or 1152
            for s in range(0, n, step):
                af = av.AudioFrame.from_ndarray(wave[None, s : s + step], format="s16", layout="mono")
                af.sample_rate, af.pts = rate, s
                for p in aus.encode(af):
                    c.mux(p)
            for p in aus.encode(None):
                c.mux(p)
    return path
