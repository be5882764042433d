"""The ``ball`` corpus loader: bouncing-ball videos (DSAE section 4.3) as a "video" modality.

``data.loader=ball`` generates (once, then from the cache folder ``data.cache_dir``/ball) the
paper's 5,000 sequences of T = 30 binary 32x32 frames, 1,000 of them test
(:mod:`dispart.data.ball`), and returns them as a "frames" modality of frame shape (1, 32, 32)
with a Bernoulli likelihood. Every sequence is labelled "ball" (there are no classes); ids are
``ball0000`` ... in generation order.
"""

from __future__ import annotations

from pathlib import Path

from dispart.batches.corpus import Corpus, cache_dir, register_loader
from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.data.ball import BallConfig, BallData, ensure_ball_dataset
from dispart.data.config import DataConfig

__all__ = ["BALL_MODALITY", "ball_corpus", "load_ball_corpus"]

BALL_MODALITY = "video"


def ball_corpus(data: BallData, source: str | Path | None = None) -> Corpus:
    """A generated dataset -> Corpus {"video": {"train", "test"}}; examples are (T, 1, H, W) uint8
    0/1 arrays (views into ``data.frames``; batching makes them float32)."""
    cfg = data.config
    sets: dict[str, ModalitySet] = {}
    for split in ("train", "test"):
        rows = range(cfg.n)[data.split(split)]
        sets[split] = ModalitySet([data.frames[i][:, None] for i in rows], ["ball"] * len(rows),
                                  [f"ball{i:04d}" for i in rows],
                                  paths=None if source is None else [str(source)] * len(rows))
    spec = ModalitySpec(BALL_MODALITY, "frames", (1, cfg.size, cfg.size), likelihood="bernoulli")
    return Corpus({BALL_MODALITY: sets}, {BALL_MODALITY: spec}, pairing="example")


@register_loader("ball")
def load_ball_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """The paper's bouncing-ball set (:class:`~dispart.data.ball.BallConfig` defaults), cached."""
    folder = cache_dir(cfg) / "ball"
    if progress:
        print(f"ball: loading or generating the bouncing-ball set in {folder}")
    data, path = ensure_ball_dataset(folder, BallConfig())
    return ball_corpus(data, path)
