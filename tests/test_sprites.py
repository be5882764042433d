"""Sprites rendered from LPC sheets (dispart.data.sprites), the "sprites" loader and `dispart data sprites`.

Frames are checked against an independent composite: Pillow's ``Image.alpha_composite`` of the
whole named sheets over black, then the cell cropped at the row and column the authors'
``random_character.py`` uses (written out below by hand). Synthetic sheets (random sparse pixels,
partial alpha) make every test run without the development data; the real LPC sheets in
../shared/data/sprites_lpc are used where present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dispart.batches.batch import Sequences
from dispart.batches.loaders import LOADERS
from dispart.batches.paired import ExamplePairs
from dispart.batches.sprites import FrameStack, load_sprites, load_sprites_corpus
from dispart.cli import main
from dispart.data.config import DataConfig
from dispart.data.sprites import (
    alpha_composite_opaque,
    character_attributes,
    load_rendered,
    render_sprites,
    split_characters,
)
from dispart.errors import ConfigError, DataError

LPC = Path(__file__).parents[1].parent / "shared" / "data" / "sprites_lpc"  # development data
FILES = [f"{d}/{k}.png" for d in ("body", "bottomwear", "topwear", "hair") for k in range(6)]
FILES.append("shoes/1.png")
# by hand from random_character.py: sheet row of (action, direction), sheet columns of frames 0..7
ROW = {("walk", "left"): 9, ("walk", "front"): 10, ("walk", "right"): 11,
       ("spellcast", "left"): 1, ("spellcast", "front"): 2, ("spellcast", "right"): 3,
       ("slash", "left"): 13, ("slash", "front"): 14, ("slash", "right"): 15}
COLS = {"walk": [8, 1, 2, 3, 4, 5, 6, 7], "spellcast": [0, 1, 2, 3, 4, 5, 4, 6],
        "slash": [0, 1, 2, 3, 4, 5, 4, 0]}
ACTIONS, DIRECTIONS = ["walk", "spellcast", "slash"], ["front", "left", "right"]


@pytest.fixture(scope="module")
def sheets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic LPC-layout sheets: ~3% random pixels per layer, alpha 255 or partial."""
    root = tmp_path_factory.mktemp("sheets")
    rng = np.random.default_rng(0)
    for f in FILES:
        a = np.zeros((1344, 832, 4), dtype=np.uint8)
        on = rng.random((1344, 832)) < 0.03
        a[on, :3] = rng.integers(0, 256, (int(on.sum()), 3))
        a[on, 3] = np.where(rng.random(int(on.sum())) < 0.5, 255, rng.integers(1, 255, int(on.sum())))
        (root / f).parent.mkdir(exist_ok=True)
        Image.fromarray(a, "RGBA").save(root / f, compress_level=1)
    return root


@pytest.fixture(scope="module")
def rendered(sheets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render_sprites(sheets, out, characters=12)
    return out


def reference_video(root: Path, layer_files: list[str], action: str, direction: str) -> np.ndarray:
    """(8, 64, 64, 3): Pillow composite of the whole sheets over black, cells cropped by hand."""
    img = Image.new("RGBA", (832, 1344), "black")
    for f in layer_files:
        with Image.open(root / f) as layer:
            img = Image.alpha_composite(img, layer.convert("RGBA"))
    sheet = np.asarray(img)
    r = ROW[(action, direction)]
    return np.stack([sheet[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64, :3] for c in COLS[action]])


def check_character(root: Path, split, row0: int, char: int) -> None:
    body, bottom, top, hair = character_attributes(char)
    files = [f"body/{body}.png", f"bottomwear/{bottom}.png", f"topwear/{top}.png", f"hair/{hair}.png",
             "shoes/1.png"]
    for k in range(9):
        i = row0 + k
        lab = {n: int(v[i]) for n, v in split.labels.items()}
        assert (lab["character"], lab["body"], lab["bottom"], lab["top"], lab["hair"]) == (char, body, bottom,
                                                                                           top, hair)
        assert list(split.layer_files[i]) == files
        assert lab["label"] == 3 * lab["action"] + lab["direction"]
        want = reference_video(root, files, ACTIONS[lab["action"]], DIRECTIONS[lab["direction"]])
        np.testing.assert_array_equal(split.frames[i], want)


# ----------------------------------------------------------------------------- pure functions

def test_split_is_the_authors_and_seeded() -> None:
    s = split_characters()
    assert (len(s["train"]), len(s["test"])) == (1000, 296)
    assert sorted(np.concatenate([s["train"], s["test"]]).tolist()) == list(range(1296))
    np.random.seed(423)  # frame_to_npy.py: np.random.seed(423); permutation(range(0, 6**4)); first 1000 train
    authors = np.random.permutation(range(0, 6**4))
    np.testing.assert_array_equal(s["train"], authors[:1000])
    np.testing.assert_array_equal(split_characters(423)["test"], s["test"])
    assert not np.array_equal(split_characters(1)["train"], s["train"])
    small = split_characters(characters=12)  # round(12 * 1000 / 1296) = 9 train, 3 test, same membership
    np.testing.assert_array_equal(small["train"], s["train"][:9])
    np.testing.assert_array_equal(small["test"], s["test"][:3])
    for bad in (1, 1297):
        with pytest.raises(DataError, match="characters must be in"):
            split_characters(characters=bad)


def test_character_index() -> None:
    assert character_attributes(2 * 216 + 3 * 36 + 4 * 6 + 5) == (2, 3, 4, 5)
    assert character_attributes(1295) == (5, 5, 5, 5)
    assert character_attributes(0) == (0, 0, 0, 0)


def test_composite_equals_pillow() -> None:
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (256, 512, 4), dtype=np.uint8)
    src[:, :64, 3] = 0
    src[:, 64:128, 3] = 255
    dst = rng.integers(0, 256, (256, 512, 4), dtype=np.uint8)
    dst[..., 3] = 255
    want = np.asarray(Image.alpha_composite(Image.fromarray(dst, "RGBA"), Image.fromarray(src, "RGBA")))
    got = alpha_composite_opaque(dst[..., :3], src[..., :3], src[..., 3:])
    np.testing.assert_array_equal(got, want[..., :3])
    assert (want[..., 3] == 255).all()
    # by hand: s=200, a=128, d=100: t = 128 * (200*128 + 100*127) + 16384 = 4916224 -> 150
    assert alpha_composite_opaque(np.array([[100]], np.uint8), np.array([[200]], np.uint8),
                                  np.array([[128]], np.uint8)).item() == 150


# ----------------------------------------------------------------------------- rendering

def test_rendered_frames_match_their_labels(sheets: Path, rendered: Path) -> None:
    manifest, splits = load_rendered(rendered)
    assert manifest["sequences"] == {"train": 81, "test": 27}
    tr, te = splits["train"], splits["test"]
    assert tr.frames.shape == (81, 8, 64, 64, 3) and tr.frames.dtype == np.uint8
    chars = split_characters(characters=12)
    np.testing.assert_array_equal(tr.labels["character"][::9], chars["train"])
    np.testing.assert_array_equal(te.labels["character"][::9], chars["test"])
    pairs = zip(tr.labels["action"][:9].tolist(), tr.labels["direction"][:9].tolist(), strict=True)
    assert sorted(pairs) == [(a, d) for a in range(3) for d in range(3)]
    check_character(sheets, tr, 0, int(chars["train"][0]))
    check_character(sheets, te, 18, int(chars["test"][2]))
    assert len({v.tobytes() for v in tr.frames[:, 0]}) == 81  # every video differs


def test_real_lpc_character(tmp_path: Path) -> None:
    if not LPC.is_dir():
        pytest.skip(f"LPC sprite sheets not available at {LPC} (development data only)")
    m = render_sprites(LPC, tmp_path, characters=4)
    _, splits = load_rendered(tmp_path)
    tr = splits["train"]
    assert m["sequences"] == {"train": 27, "test": 9}
    check_character(LPC, tr, 9, int(tr.labels["character"][9]))
    frame = tr.frames[9]
    assert frame.max() > 0 and (frame[:, 0, 0] == 0).all()  # a figure on a black background


def test_cache_hit_and_rerender(sheets: Path, tmp_path: Path) -> None:
    src = tmp_path / "sheets"
    shutil.copytree(sheets, src)
    out = tmp_path / "out"
    first = render_sprites(src, out, characters=3)
    assert first["rendered"] and (out / "manifest.json").is_file()
    stamp = (out / "train.npz").stat().st_mtime_ns
    again = render_sprites(src, out, characters=3)
    assert not again["rendered"] and (out / "train.npz").stat().st_mtime_ns == stamp
    assert again["settings_sha256"] == first["settings_sha256"]
    other_seed = render_sprites(src, out, seed=7, characters=3)
    assert other_seed["rendered"] and other_seed["settings_sha256"] != first["settings_sha256"]
    a = np.asarray(Image.open(src / "hair/0.png").convert("RGBA")).copy()
    a[0, 0] = (1, 2, 3, 255)
    Image.fromarray(a, "RGBA").save(src / "hair/0.png")
    changed = render_sprites(src, out, seed=7, characters=3)
    assert changed["rendered"] and changed["settings_sha256"] != other_seed["settings_sha256"]
    (out / "test.npz").write_bytes(b"")  # a damaged output is not a cache hit
    assert render_sprites(src, out, seed=7, characters=3)["rendered"]


def test_bad_input_names_the_file(sheets: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: sprite sheet folder not found"):
        render_sprites(tmp_path / "nowhere", tmp_path / "o")
    src = tmp_path / "sheets"
    shutil.copytree(sheets, src)
    (src / "topwear/2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"topwear/2\.png: cannot read sprite sheet"):
        render_sprites(src, tmp_path / "o", characters=3)
    Image.new("RGBA", (64, 64)).save(src / "topwear/2.png")
    with pytest.raises(DataError, match=r"topwear/2\.png: sprite sheet is 64 x 64 px"):
        render_sprites(src, tmp_path / "o", characters=3)
    (src / "topwear/2.png").unlink()
    with pytest.raises(DataError, match=r"topwear/2\.png: sprite sheet is missing"):
        render_sprites(src, tmp_path / "o", characters=3)
    assert not (tmp_path / "o" / "manifest.json").exists()
    with pytest.raises(DataError, match=r"manifest\.json: no rendered Sprites here"):
        load_rendered(tmp_path)


# ----------------------------------------------------------------------------- loader

def test_loader_gives_video_frames(sheets: Path, rendered: Path, tmp_path: Path) -> None:
    assert LOADERS["sprites"] is load_sprites_corpus
    corpus = load_sprites(rendered)
    spec = corpus.specs["video"]
    assert (spec.kind, spec.shape, spec.frame_rate) == ("frames", (3, 64, 64), 10.0)
    train, test = corpus.sets["video"]["train"], corpus.sets["video"]["test"]
    assert (len(train), len(test)) == (81, 27)
    _, splits = load_rendered(rendered)
    x = train.examples[4]
    assert x.shape == (8, 3, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x, splits["train"].frames[4].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    lab = splits["train"].labels
    act, dire = ACTIONS[int(lab["action"][4])], DIRECTIONS[int(lab["direction"][4])]
    assert train.labels[4] == f"{act}-{dire}"
    assert (train.meta["action"][4], train.meta["direction"][4]) == (act, dire)
    assert train.meta["hair"][4] == str(int(lab["hair"][4]))
    assert train.ids[4] == f"{int(lab['character'][4])}-{act}-{dire}"
    assert isinstance(train.examples[2:5], FrameStack) and len(train.examples[2:5]) == 3
    pairs = ExamplePairs({"video": train})
    batch = Sequences.from_list([pairs[i]["video"] for i in range(3)])
    assert tuple(batch.data.shape) == (3, 8, 3, 64, 64) and batch.lengths.tolist() == [8, 8, 8]
    with pytest.raises(ConfigError, match="data.images: the sprites loader needs a folder"):
        load_sprites_corpus(DataConfig(), progress=False)
    with pytest.raises(DataError, match="missing: Sprites folder not found"):
        load_sprites(tmp_path / "missing")


def test_loader_renders_a_sheet_folder_into_the_cache(sheets: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import dispart.batches.sprites as loader

    calls = []

    def small(root, out, **kw):  # all 1,296 characters take ~10 s: render 4, same wiring
        calls.append(Path(out))
        return render_sprites(root, out, characters=4)

    monkeypatch.setattr(loader, "render_sprites", small)
    cfg = DataConfig(images=str(sheets), cache_dir=str(tmp_path / "cache"), loader="sprites")
    corpus = load_sprites_corpus(cfg, progress=False)
    assert calls == [tmp_path / "cache" / "sprites"]
    assert (len(corpus.sets["video"]["train"]), len(corpus.sets["video"]["test"])) == (27, 9)


# ----------------------------------------------------------------------------- command line

def test_cli_renders_and_reuses(sheets: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["data", "sprites", "--sheets", str(sheets), "--out", str(tmp_path / "s"), "--characters", "4"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rendered"] and out["sequences"] == {"train": 27, "test": 9}
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["rendered"] is False
    assert main([*argv[:-1], "1"]) == 2
    assert capsys.readouterr().err.strip() == "dispart data: error: --characters must be in [2, 1296], got 1"
    assert main(["data", "sprites", "--sheets", str(tmp_path / "none"), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none: sprite sheet folder not found" in err[0]
