"""Sprites (Li & Mandt 2018, section 4.1) rendered from the Liberated Pixel Cup sprite sheets.

Input: a folder of LPC layer sheets as in the DSAE authors' generator (YingzhenLi/Sprites):
``{body,bottomwear,topwear,hair,shoes}/{k}.png``, RGBA (or
palette) sheets of 832 x 1344 px = 13 columns x 21 rows of 64 x 64 cells. Row ``4 * g + d`` is
action group ``g`` (spellcast 0, thrust 1, walk 2, slash 3, shoot 4) seen from direction ``d``
(back 0, left 1, front 2, right 3); the frames of a row run left to right.

A character is the alpha composite, over opaque black, of body, bottomwear, topwear and hair
variants 0-5 and the fixed shoes ``shoes/1.png`` (the authors' choice): 6^4 = 1,296 characters,
index ``216 * body + 36 * bottom + 6 * top + hair``. Each character gives 9 videos: actions walk,
spellcast, slash x directions front, left, right (class ``3 * action + direction``, the authors'
``load_sprites.py`` order), 8 frames of 64 x 64 RGB each. Rows with fewer than 8 frames are
filled as the authors' ``random_character.py`` fills them (``FRAME_COLUMNS``): walk skips the
standing pose (column 0) and plays columns 8, 1, ..., 7; spellcast (7 frames) plays 0-5, 4, 6;
slash (6 frames) plays 0-5, 4, 0. The composite uses Pillow's integer ``alpha_composite``
arithmetic (closed form for an opaque destination, equal to Pillow on all 256^3 inputs), so the
frames are byte-identical to the authors' PNGs; it runs on numpy arrays of the needed cells only.

Split: a permutation of the 1,296 characters by ``np.random.RandomState(seed)``; the first 1,000
are train, the other 296 test. The default seed 423 is the one of the authors' ``frame_to_npy.py``,
so the default split is theirs. ``characters=n`` renders a smaller set with the same membership:
the first ``round(n * 1000 / 1296)`` training and the first remaining test characters.

Output folder: ``train.npz`` and ``test.npz`` (``frames`` uint8 (N, 8, 64, 64, 3); int64 (N,)
``character``, ``body``, ``bottom``, ``top``, ``hair``, ``action``, ``direction``, ``label``
(= 3 * action + direction); ``layer_files`` (N, 5) str, the sheets composited, bottom first) and
``manifest.json`` (settings, their SHA-256, counts, file sizes), written last: a folder is
complete when its manifest is. Rendering again with the same settings and sheet contents reuses
it. Sheets are read with Pillow (a dependency of matplotlib).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dispart.errors import DataError
from dispart.files import atomic_open, atomic_write_json

__all__ = [
    "ACTIONS", "ATTRIBUTES", "CELL", "DIRECTIONS", "FRAME_COLUMNS", "LAYER_DIRS", "N_CHARACTERS",
    "N_FRAMES", "N_TRAIN", "N_VARIANTS", "SEED", "SHOES", "SpriteSplit", "alpha_composite_opaque",
    "character_attributes", "load_rendered", "read_sheet", "render_sprites", "sheet_cells",
    "split_characters",
]

CELL = 64  # px, a cell of the sheet = one frame
SHEET_SIZE = (832, 1344)  # (width, height) in px: 13 x 21 cells
N_VARIANTS = 6  # variants 0-5 of each attribute layer
N_CHARACTERS = N_VARIANTS ** 4  # 1,296
N_TRAIN = 1000  # of 1,296 (the paper's split)
N_FRAMES = 8
SEED = 423  # the authors' frame_to_npy.py permutation seed
ATTRIBUTES = ("body", "bottom", "top", "hair")  # label names, in the order of LAYER_DIRS
LAYER_DIRS = ("body", "bottomwear", "topwear", "hair")  # composited in this order, then SHOES
SHOES = "shoes/1.png"
ACTIONS = ("walk", "spellcast", "slash")
DIRECTIONS = ("front", "left", "right")
_ACTION_GROUP = {"spellcast": 0, "walk": 2, "slash": 3}  # row = 4 * group + direction offset
_DIRECTION_OFFSET = {"back": 0, "left": 1, "front": 2, "right": 3}
FRAME_COLUMNS = {  # sheet columns of the 8 frames (random_character.py)
    "walk": (8, 1, 2, 3, 4, 5, 6, 7),
    "spellcast": (0, 1, 2, 3, 4, 5, 4, 6),
    "slash": (0, 1, 2, 3, 4, 5, 4, 0),
}
FORMAT = 1  # bump when the rendering changes
SPLITS = ("train", "test")
LABEL_KEYS = ("character", *ATTRIBUTES, "action", "direction", "label")


def character_attributes(index: int | np.ndarray) -> tuple[Any, Any, Any, Any]:
    """Character index (0..1295) -> (body, bottom, top, hair) variants, each in 0..5."""
    n = N_VARIANTS
    return index // n**3, index // n**2 % n, index // n % n, index % n


def split_characters(seed: int = SEED, characters: int = N_CHARACTERS) -> dict[str, np.ndarray]:
    """Character indices of "train" and "test": a RandomState(seed) permutation of all 1,296, the
    first 1,000 train; with ``characters < 1296`` the first ``round(characters * 1000 / 1296)``
    of those and the first of the rest (same membership as the full split)."""
    if not 2 <= characters <= N_CHARACTERS:
        raise DataError(f"characters must be in [2, {N_CHARACTERS}], got {characters}")
    perm = np.random.RandomState(seed).permutation(N_CHARACTERS)
    n_train = min(max(round(characters * N_TRAIN / N_CHARACTERS), 1), characters - 1)
    return {"train": perm[:N_TRAIN][:n_train], "test": perm[N_TRAIN:][:characters - n_train]}


def read_sheet(path: Path) -> np.ndarray:
    """One sheet as (1344, 832, 4) uint8 RGBA; a missing, unreadable or wrongly sized file is a
    DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            rgba = np.asarray(im.convert("RGBA"))
    except FileNotFoundError:
        raise DataError(f"{path}: sprite sheet is missing") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read sprite sheet ({e.__class__.__name__}: {e})") from None
    if rgba.shape[:2] != (SHEET_SIZE[1], SHEET_SIZE[0]):
        raise DataError(f"{path}: sprite sheet is {rgba.shape[1]} x {rgba.shape[0]} px, expected "
                        f"{SHEET_SIZE[0]} x {SHEET_SIZE[1]} (13 x 21 cells of {CELL} px)")
    return rgba


def sheet_cells(sheet: np.ndarray) -> np.ndarray:
    """(1344, 832, 4) sheet -> (9, 8, 64, 64, 4) cells: class 3 * action + direction, frame."""
    rows_n, cols_n = sheet.shape[0] // CELL, sheet.shape[1] // CELL
    grid = sheet.reshape(rows_n, CELL, cols_n, CELL, 4).transpose(0, 2, 1, 3, 4)
    rows = [4 * _ACTION_GROUP[a] + _DIRECTION_OFFSET[d] for a in ACTIONS for d in DIRECTIONS]
    cols = [FRAME_COLUMNS[a] for a in ACTIONS for _ in DIRECTIONS]
    return grid[np.asarray(rows)[:, None], np.asarray(cols)]


def alpha_composite_opaque(dst: np.ndarray, src_rgb: np.ndarray, src_a: np.ndarray) -> np.ndarray:
    """Pillow's ``Image.alpha_composite`` of ``src`` over an opaque ``dst``, exactly.

    dst: (..., 3) uint8 RGB (alpha 255); src_rgb: (..., 3) uint8; src_a: (..., 1) uint8.
    Returns (..., 3) uint8 (the result stays opaque). Pillow's integer formula with 7 extra bits
    reduces, for an opaque destination, to ``t = 128 (s a + d (255 - a)) + 16384``,
    ``out = (((t >> 8) + t) >> 8) >> 7``; equal to Pillow for every (s, a, d) in 0..255.
    """
    a = src_a.astype(np.uint32)
    t = (src_rgb.astype(np.uint32) * a + dst.astype(np.uint32) * (255 - a)) * 128 + 16384
    return ((((t >> 8) + t) >> 8) >> 7).astype(np.uint8)


@dataclass
class _Layer:
    """The needed cells of one sheet, kept only where alpha > 0 (compositing skips the rest)."""

    file: str
    index: np.ndarray  # (P,) flat pixel positions within (9 * 8 * 64 * 64)
    rgb: np.ndarray  # (P, 3) uint8
    alpha: np.ndarray  # (P, 1) uint8

    def over(self, dst: np.ndarray) -> np.ndarray:
        """Composite onto ``dst`` ((9 * 8 * 64 * 64, 3) uint8, modified in place and returned)."""
        dst[self.index] = alpha_composite_opaque(dst[self.index], self.rgb, self.alpha)
        return dst


def _layer(root: Path, file: str) -> _Layer:
    cells = sheet_cells(read_sheet(root / file)).reshape(-1, 4)
    index = np.flatnonzero(cells[:, 3])
    return _Layer(file, index, cells[index, :3], cells[index, 3:])


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise DataError(f"{path}: sprite sheet is missing") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read sprite sheet ({e.__class__.__name__}: {e})") from None


def _layer_files() -> list[str]:
    return [f"{d}/{k}.png" for d in LAYER_DIRS for k in range(N_VARIANTS)] + [SHOES]


def _settings(root: Path, seed: int, characters: int) -> dict[str, Any]:
    if not root.is_dir():
        raise DataError(f"{root}: sprite sheet folder not found (expected {', '.join(LAYER_DIRS)}, "
                        f"shoes sub-folders of LPC sheets)")
    return {"format": FORMAT, "seed": int(seed), "characters": int(characters),
            "actions": list(ACTIONS), "directions": list(DIRECTIONS), "frames": N_FRAMES,
            "frame_columns": {a: list(c) for a, c in FRAME_COLUMNS.items()},
            "sheets": {f: _sha256(root / f) for f in _layer_files()}}


def _settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _cached(out: Path, digest: str) -> dict[str, Any] | None:
    """The manifest in ``out`` when it records ``digest`` and its files are all there."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("settings_sha256") != digest:
        return None
    for split in SPLITS:
        f = manifest.get("files", {}).get(split, {})
        path = out / f"{split}.npz"
        if not path.is_file() or path.stat().st_size != f.get("bytes"):
            return None
    return manifest


def _render_split(chars: np.ndarray, layers: dict[str, _Layer], bases: dict[tuple[int, ...], np.ndarray]
                  ) -> dict[str, np.ndarray]:
    n_cls = len(ACTIONS) * len(DIRECTIONS)
    n = len(chars) * n_cls
    frames = np.empty((len(chars), n_cls * N_FRAMES * CELL * CELL, 3), dtype=np.uint8)
    attrs = character_attributes(chars)
    for i, (b, bo, t, h) in enumerate(zip(*attrs, strict=True)):
        key = (int(b), int(bo), int(t))
        if key not in bases:  # body, bottomwear, topwear over black: shared by the 6 hair variants
            dst = np.zeros((n_cls * N_FRAMES * CELL * CELL, 3), dtype=np.uint8)
            for d, v in zip(LAYER_DIRS[:3], key, strict=True):
                layers[f"{d}/{v}.png"].over(dst)
            bases[key] = dst
        frame = bases[key].copy()
        layers[f"hair/{int(h)}.png"].over(frame)
        frames[i] = layers[SHOES].over(frame)
    labels = np.arange(n_cls)
    out = {"frames": frames.reshape(n, N_FRAMES, CELL, CELL, 3),
           "character": np.repeat(chars, n_cls).astype(np.int64),
           **{a: np.repeat(v, n_cls).astype(np.int64) for a, v in zip(ATTRIBUTES, attrs, strict=True)},
           "action": np.tile(labels // len(DIRECTIONS), len(chars)).astype(np.int64),
           "direction": np.tile(labels % len(DIRECTIONS), len(chars)).astype(np.int64),
           "label": np.tile(labels, len(chars)).astype(np.int64)}
    out["layer_files"] = np.stack(
        [np.char.add(f"{d}/", np.char.add(out[a].astype(str), ".png")) for d, a in zip(LAYER_DIRS, ATTRIBUTES,
                                                                                         strict=True)]
        + [np.full(n, SHOES)], axis=1)
    return out


def render_sprites(sheets: str | Path, out: str | Path, seed: int = SEED, characters: int = N_CHARACTERS,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Render the Sprites videos from the LPC ``sheets`` folder into ``out`` (see the module doc).

    Returns the manifest, plus ``"rendered"`` (False when a folder with the same settings hash was
    reused) and ``"seconds"`` (wall time of this call). Bad input (a missing folder or sheet, an
    unreadable or wrongly sized PNG, bad ``characters``) is a DataError naming it.
    """
    t0 = time.perf_counter()
    root, out = Path(sheets).expanduser(), Path(out).expanduser()
    split = split_characters(seed, characters)
    settings = _settings(root, seed, characters)
    digest = _settings_hash(settings)
    manifest = _cached(out, digest)
    if manifest is not None:
        return {**manifest, "rendered": False, "seconds": time.perf_counter() - t0}
    layers = {f: _layer(root, f) for f in _layer_files()}
    bases: dict[tuple[int, ...], np.ndarray] = {}
    files: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for name in SPLITS:
        arrays = _render_split(split[name], layers, bases)
        path = out / f"{name}.npz"
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)
        files[name] = {"bytes": path.stat().st_size, "characters": int(len(split[name]))}
        counts[name] = int(len(arrays["label"]))
        if log:
            log(f"sprites: {name}: {counts[name]} videos of {len(split[name])} characters -> {path}")
    manifest = {"dataset": "sprites", "settings_sha256": digest, "settings": settings,
                "sequences": counts, "files": files, "frame_shape": [CELL, CELL, 3],
                "labels": {"action": list(ACTIONS), "direction": list(DIRECTIONS),
                           "label": [f"{a}-{d}" for a in ACTIONS for d in DIRECTIONS],
                           **{a: [f"{d}/{k}.png" for k in range(N_VARIANTS)]
                              for a, d in zip(ATTRIBUTES, LAYER_DIRS, strict=True)}},
                "source": str(root)}
    atomic_write_json(out / "manifest.json", manifest)
    return {**manifest, "rendered": True, "seconds": time.perf_counter() - t0}


@dataclass
class SpriteSplit:
    """One rendered split: ``frames`` (N, 8, 64, 64, 3) uint8 and int64 (N,) label arrays."""

    frames: np.ndarray
    labels: dict[str, np.ndarray]
    layer_files: np.ndarray  # (N, 5) str


def load_rendered(folder: str | Path) -> tuple[dict[str, Any], dict[str, SpriteSplit]]:
    """The manifest and both splits of a folder written by :func:`render_sprites`; a missing or
    malformed file is a DataError naming it."""
    folder = Path(folder).expanduser()
    mpath = folder / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{mpath}: no rendered Sprites here (run `dispart data sprites --out "
                        f"{folder} --sheets LPC_DIR`)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{mpath}: cannot read ({e.__class__.__name__}: {e})") from None
    splits = {}
    for name in SPLITS:
        path = folder / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise DataError(f"{path}: rendered Sprites split is missing") from None
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
        missing = [k for k in ("frames", "layer_files", *LABEL_KEYS) if k not in arrays]
        if missing:
            raise DataError(f"{path}: missing arrays {missing}")
        fr = arrays["frames"]
        if fr.dtype != np.uint8 or fr.ndim != 5 or fr.shape[2:] != (CELL, CELL, 3):
            raise DataError(f"{path}: frames must be uint8 (N, T, {CELL}, {CELL}, 3), got {fr.dtype} "
                            f"{fr.shape}")
        if any(len(arrays[k]) != len(fr) for k in LABEL_KEYS):
            raise DataError(f"{path}: label arrays and frames differ in length")
        splits[name] = SpriteSplit(fr, {k: arrays[k] for k in LABEL_KEYS}, arrays["layer_files"])
    return manifest, splits
