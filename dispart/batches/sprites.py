"""The ``sprites`` corpus loader: rendered Sprites videos (:mod:`dispart.data.sprites`) -> "video".

``data.images`` names either a folder rendered by ``dispart data sprites`` (it holds
``manifest.json``) or the LPC sheet folder itself, which is then rendered (seed 423, all 1,296
characters) into ``CACHE/sprites`` and reused while the sheets and settings are unchanged.

The "video" modality has kind "frames", frames (3, 64, 64) in [0, 1], 8 per example, 10 frames
per second (the authors' GIF rate). The label of an example is its action-direction class
(``"walk-front"`` ... ``"slash-right"``: the paper's 9 "action" classes); ``meta`` holds per
example ``action`` and ``direction`` (names), ``body``, ``bottom``, ``top``, ``hair`` (variant
strings "0"-"5"), ``character`` (index string) and ``layer_files`` (the composited sheets).
Frames stay uint8 in memory (1.1 GB for both splits instead of 4.5 GB as float32) and are
converted one example at a time by :class:`FrameStack`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from dispart.batches.corpus import Corpus, cache_dir, register_loader
from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.data.config import DataConfig
from dispart.data.sprites import (
    ACTIONS,
    ATTRIBUTES,
    CELL,
    DIRECTIONS,
    LAYER_DIRS,
    SpriteSplit,
    load_rendered,
    render_sprites,
)
from dispart.errors import ConfigError, DataError

__all__ = ["FRAME_RATE", "FrameStack", "load_sprites", "load_sprites_corpus", "sprites_sets"]

FRAME_RATE = 10.0  # frames per second: random_character.py animates at 0.1 s per frame


class FrameStack(Sequence[np.ndarray]):
    """uint8 videos (N, T, H, W, C) seen as a sequence of float32 (T, C, H, W) arrays in [0, 1]."""

    def __init__(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 5:
            raise DataError(f"FrameStack: need uint8 (N, T, H, W, C) frames, got {frames.dtype} "
                            f"{frames.shape}")
        self.frames = frames

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> FrameStack: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | FrameStack:
        if isinstance(i, slice):
            return FrameStack(self.frames[i])
        return self.frames[int(i)].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, T, C, H, W), the shape of the float array this stands for."""
        n, t, h, w, c = self.frames.shape
        return (n, t, c, h, w)


def _modality_set(s: SpriteSplit) -> ModalitySet:
    lab = s.labels
    names = [f"{a}-{d}" for a in ACTIONS for d in DIRECTIONS]
    meta: dict[str, list] = {
        "action": [ACTIONS[int(a)] for a in lab["action"]],
        "direction": [DIRECTIONS[int(d)] for d in lab["direction"]],
        **{a: [str(int(v)) for v in lab[a]] for a in ATTRIBUTES},
        "character": [str(int(c)) for c in lab["character"]],
        "layer_files": [list(map(str, row)) for row in s.layer_files],
    }
    ids = [f"{int(c)}-{names[int(y)]}" for c, y in zip(lab["character"], lab["label"], strict=True)]
    return ModalitySet(FrameStack(s.frames), [names[int(y)] for y in lab["label"]], ids, meta=meta)


def sprites_sets(folder: str | Path) -> dict[str, ModalitySet]:
    """"train" and "test" ModalitySets of a rendered folder (see the module doc)."""
    _, splits = load_rendered(folder)
    return {name: _modality_set(s) for name, s in splits.items()}


def _is_sheet_folder(root: Path) -> bool:
    return all((root / d).is_dir() for d in LAYER_DIRS)


def load_sprites(root: str | Path, cache: str | Path | None = None, progress: bool = False) -> Corpus:
    """Corpus with the "video" modality from a rendered folder or an LPC sheet folder ``root``
    (rendered into ``cache``/sprites, default the feature cache)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: Sprites folder not found (a folder rendered by `dispart data sprites` "
                        f"or the LPC sheets with {', '.join(LAYER_DIRS)} sub-folders)")
    if not (root / "manifest.json").is_file() and _is_sheet_folder(root):
        if cache is None:
            raise ConfigError(f"{root}: LPC sheets need a cache folder to render into")
        out = Path(cache).expanduser() / "sprites"
        m = render_sprites(root, out, log=print if progress else None)
        if progress:
            print(f"sprites: {'rendered' if m['rendered'] else 'reused'} {out} in {m['seconds']:.1f} s")
        root = out
    sets = sprites_sets(root)
    return Corpus({"video": sets}, {"video": ModalitySpec("video", "frames", (3, CELL, CELL),
                                                          frame_rate=FRAME_RATE)},
                  pairing="example")


@register_loader("sprites")
def load_sprites_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """Sprites videos from the folder ``data.images`` (see :func:`load_sprites`)."""
    if cfg.images == "sample":
        raise ConfigError("data.images: the sprites loader needs a folder rendered by `dispart data sprites` "
                          "(or the LPC sheet folder); there is no embedded sample")
    return load_sprites(cfg.images, cache_dir(cfg), progress)
