"""Controlled generation and swapping for sequence models (DSAE) through `generate` and `report`.

Two tiny DSAE runs trained in this module: ~40 steps on synthetic videos (a coloured square: the
colour is the static factor, the motion the dynamic one; registered as the loader
"test_squares") and ~40 steps on the embedded FSDD sample cut into 200 ms log-spectrum segments
(``speech_segments``, 8 kHz -> 100 bins). Checked: every swap / fix_f / fix_z cell is
``model.decode`` of the latents its record names (and equals DSAE's own ``swap`` helper), GIFs
have one frame per time step, the manifest lists every file written, wavs have the Griffin-Lim
length, and the report embeds GIFs and players and renders in headless Chromium.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import console_errors, ensure_chromium, run_chromium
from PIL import Image

from dispart.batches.batch import Sequences
from dispart.batches.corpus import Corpus, register_loader
from dispart.batches.modality import ModalitySpec
from dispart.batches.pipeline import load_experiment_data
from dispart.batches.sets import ModalitySet
from dispart.cli import main
from dispart.data.sample import sample_fsdd_dir
from dispart.errors import RunDirError
from dispart.features.spectrum import SpectrumConfig, log_spectrum
from dispart.generation.audio import spectra_to_waveforms
from dispart.generation.grids import frame_strip, static_dynamic, write_gif
from dispart.generation.outputs import build_sequence_grids, generate, sequence_modality
from dispart.models import build_model
from dispart.report.html import build_report
from dispart.runs import load_run

pytestmark = pytest.mark.usefixtures("single_thread")

T, SIZE = 6, 16
COLOURS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]
MOTIONS = {"right": (0, 2), "down": (2, 0), "diag": (2, 2)}
TINY = ["model.f_dim=4", "model.z_dim=3", "model.hidden=16", "model.prior_hidden=16",
        "train.max_steps=40", "train.progress_bar=false", "train.log_every_n_steps=1"]


def _squares(n: int, seed: int) -> ModalitySet:
    """``n`` videos (T, 3, 16, 16): a 4x4 square of one of 4 colours moving one of 3 ways."""
    rng = np.random.default_rng(seed)
    examples, labels, characters = [], [], []
    for _ in range(n):
        colour, motion = int(rng.integers(4)), str(rng.choice(list(MOTIONS)))
        y, x = (int(v) for v in rng.integers(0, 4, 2))
        video = np.zeros((T, 3, SIZE, SIZE), np.float32)
        for t in range(T):
            yy, xx = y + t * MOTIONS[motion][0], x + t * MOTIONS[motion][1]
            video[t, :, yy:yy + 4, xx:xx + 4] = np.asarray(COLOURS[colour], np.float32)[:, None, None]
        examples.append(video)
        labels.append(motion)
        characters.append(str(colour))
    return ModalitySet(examples, labels, meta={"character": characters})


@register_loader("test_squares")
def _load_squares(cfg, progress: bool = True) -> Corpus:
    spec = ModalitySpec("video", "frames", (3, SIZE, SIZE), frame_rate=5.0)
    return Corpus({"video": {"train": _squares(96, 0), "test": _squares(24, 1)}}, {"video": spec},
                  pairing="example")


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("dsae") / "squares"
    assert main(["train", "configs/dsae_sprites.yaml", "--out", str(run), "data.loader=test_squares",
                 "model.conv_width=8", "train.batch_size=16", "train.lr=0.003", *TINY]) == 0
    return run


@pytest.fixture(scope="module")
def video(video_run):
    run = load_run(video_run)
    data = load_experiment_data(run.config.data, progress=False)
    manifest = generate(run, data, video_run / "generated", cols=3, rows=2, seed=0)
    return run, data, manifest


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("dsae") / "speech"
    assert main(["train", "configs/dsae_speech.yaml", "--out", str(run), "data.audio=sample",
                 "data.split=speakers:george,lucas", "data.sample_rate=8000",
                 "train.batch_size=32", *TINY]) == 0
    return run


def _encode_means(model, modality: str, items: list[np.ndarray]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        post = model.encode({modality: Sequences.from_list(items)})
    return {k: v.mean for k, v in post.items()}


def test_sequence_models_are_found_from_their_declarations():
    pvae = build_model({"name": "pvae", "modalities": [
        {"name": "audio", "kind": "sequence", "shape": [80]},
        {"name": "image", "kind": "image", "shape": [1, 28, 28]}]})
    assert sequence_modality(pvae) is None and static_dynamic(pvae, "audio") is None
    spec = {"name": "speech", "kind": "sequence", "shape": [10]}
    dsae = build_model({"name": "dsae", "modalities": [spec], "f_dim": 2, "z_dim": 2, "hidden": 4,
                        "prior_hidden": 4})
    assert sequence_modality(dsae) == "speech" and static_dynamic(dsae, "speech") == ("f", "z")


@torch.no_grad()
def test_swap_cells_decode_the_row_f_and_the_column_z(video):
    run, data, _ = video
    model = run.model
    grids = {g.kind: g for g in build_sequence_grids(run, data, cols=3, rows=2, seed=0)}
    assert set(grids) == {"swap", "fix_f", "fix_z"}
    swap = grids["swap"]
    test = data.split("video", "test")
    pos = {f"video:test[{i}]": i for i in range(len(test.examples))}
    rows = [np.asarray(test.examples[pos[s]]) for s in swap.rows.sources]
    cols = [np.asarray(test.examples[pos[s]]) for s in swap.cols.sources]
    assert len({test.meta["character"][pos[s]] for s in swap.rows.sources}) == 2  # two colours
    f = _encode_means(model, "video", rows)["f"]
    z = _encode_means(model, "video", cols)["z"]
    for r in range(2):
        for c in range(3):
            assert swap.record[r][c] == {"f": swap.rows.sources[r], "z": swap.cols.sources[c]}
            want = model.decode({"f": f[r:r + 1], "z": z[c:c + 1]}, "video", torch.tensor([T]))[0]
            np.testing.assert_allclose(swap.cells[r][c], want.numpy(), atol=1e-5)
    # DSAE's own helper gives the same videos: f of row r, z_1:T of column c
    helper = model.swap(Sequences.from_list([rows[1]] * 3), Sequences.from_list(cols))
    for c in range(3):
        np.testing.assert_allclose(swap.cells[1][c], helper[c].numpy(), atol=1e-5)
    assert np.abs(swap.cells[0][0] - swap.cells[1][0]).max() > 1e-6  # rows differ only in f
    # fix_f: the same inferred f per row; z_1:T prior draws shared down each column
    fix_f = grids["fix_f"]
    np.testing.assert_allclose(fix_f.rows.z, swap.rows.z)
    assert fix_f.cols.sources == ["prior[0]", "prior[1]", "prior[2]"] and fix_f.cols.inputs is None
    zf = torch.as_tensor(fix_f.cols.z)
    want = model.decode({"f": f[1:2].expand(3, -1), "z": zf}, "video", torch.tensor([T] * 3))
    np.testing.assert_allclose(np.stack(fix_f.cells[1]), want.numpy(), atol=1e-5)
    # fix_z: f from the prior (seeded: the same draws again), z_1:T inferred from the columns
    fix_z = grids["fix_z"]
    again = {g.kind: g for g in build_sequence_grids(run, data, ["fix_z"], cols=3, rows=2, seed=0)}
    np.testing.assert_array_equal(again["fix_z"].rows.z, fix_z.rows.z)
    np.testing.assert_allclose(fix_z.cols.z, swap.cols.z)
    ff = torch.as_tensor(fix_z.rows.z)
    want = model.decode({"f": ff, "z": z[2:3].expand(2, -1, -1)}, "video", torch.tensor([T] * 2))
    np.testing.assert_allclose(np.stack([fix_z.cells[0][2], fix_z.cells[1][2]]), want.numpy(), atol=1e-5)


def test_gifs_have_one_frame_per_step_and_the_manifest_lists_every_file(video, video_run):
    _, _, manifest = video
    out = video_run / "generated"
    assert [g["name"] for g in manifest["grids"]] == ["swap_video", "fix_f_video", "fix_z_video"]
    assert manifest["view"] == "frames" and manifest["frame_rate"] == 5.0
    listed = {"manifest.json"}
    for g in manifest["grids"]:
        listed |= {g["png"], g["json"]}
        assert len(g["animations"]) == 6 and g["audio"] == []
        for a in [*g["animations"], *g["sources_animations"]]:
            listed |= {a["gif"], a["strip"]}
            gif = Image.open(out / a["gif"])
            assert gif.n_frames == a["frames"] == T and gif.info["duration"] == 200  # 5 frames/s
            assert gif.size == (2 * SIZE, 2 * SIZE + 3)  # scale 2 plus the 3-pixel time bar
            assert Image.open(out / a["strip"]).size == (T * (SIZE + 1) - 1, SIZE)
        n_src = {"swap": 2 + 3, "fix_f": 2, "fix_z": 3}[g["kind"]]
        assert len(g["sources_animations"]) == n_src
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == listed


def test_write_gif_keeps_identical_frames_and_strips_lay_frames_left_to_right(tmp_path):
    still = np.zeros((5, 1, 8, 8), np.float32)
    still[:, :, 2:4, 2:4] = 1.0  # every frame the same: Pillow would merge them without the bar
    gif = Image.open(write_gif(tmp_path / "a.gif", still, fps=4.0))
    assert gif.n_frames == 5 and gif.info["duration"] == 250
    gif.seek(2)
    frame = np.asarray(gif.convert("RGB"))
    assert frame[2, 2].tolist() == [255, 255, 255] and frame[0, 0].tolist() == [0, 0, 0]
    assert frame[8:, :5].max() == 90 and frame[8:, 5:].min() == 255  # bar: round(8 * 3 / 5) = 5 px
    x = np.zeros((3, 3, 2, 2), np.float32)
    x[1, 0] = 1.0  # the middle frame red
    strip = frame_strip(x)
    assert strip.shape == (2, 8, 3)
    assert strip[:, 3:5].tolist() == [[[255, 0, 0]] * 2] * 2 and strip[:, 2].tolist() == [[255] * 3] * 2


def test_report_embeds_every_gif_and_strip_and_renders(video, video_run, tmp_path):
    run, data, manifest = video
    page = build_report(video_run, data=data, rows=2, tsne_points=40)
    text = page.read_text()
    out = video_run / "generated"
    gifs = re.findall(r'<img[^>]*\ssrc="data:image/gif;base64,([^"]*)"', text)
    entries = [a for g in manifest["grids"] for a in [*g["animations"], *g["sources_animations"]]]
    assert len(gifs) == len(entries) == 3 * 6 + 5 + 2 + 3  # fix_f / fix_z reuse swap's sources
    assert {base64.b64decode(b) for b in gifs} == {(out / a["gif"]).read_bytes() for a in entries}
    for name in ("swap_video", "fix_f_video", "fix_z_video"):
        assert f"<h3>{name}</h3>" in text
    assert "Swapping (DSAE section 2)" in text and "z_t drawn from the prior" in text
    checks = manifest["grids"][0]["checks"]
    assert checks["n"] == 6 and checks["chance"] == 0.5 and 0 <= checks["f_row_nearest"] <= 1
    assert f"in <b>{100 * checks['f_row_nearest']:.1f}%</b> of 6 cells (chance 50.0%)" in text
    assert not re.search(r'(?:src|href)="(?:https?:|file:|/)', text)
    assert json.loads((out / "manifest.json").read_text())["weights_sha256"] == run.weights_sha256
    binary, reason = ensure_chromium()
    if binary is None:
        pytest.skip(reason)
    done = run_chromium(binary, page, "--dump-dom")
    status = re.search(r'data-render-check="([^"]*)"', done.stdout)
    assert status and status.group(1).startswith("ok "), status and status.group(1)
    assert f"images={text.count('<img')}" in status.group(1) and console_errors(done.stderr) == []


def test_pvae_kinds_are_refused_for_a_sequence_model(video):
    run, data, _ = video
    with pytest.raises(RunDirError, match=r"--kind style is a PVAE/JMVAE grid.*\('swap', 'fix_f', 'fix_z'\)"):
        build_sequence_grids(run, data, ["style"])


def test_spectra_to_waveforms_inverts_a_real_log_spectrum():
    import soundfile as sf

    cfg = SpectrumConfig(sample_rate=8000)
    wave, sr = sf.read(sample_fsdd_dir() / "3_jackson_0.wav", dtype="float32")
    assert sr == 8000
    spec = log_spectrum(wave, cfg)
    back = spectra_to_waveforms([spec, spec[:20]], cfg, n_iter=32)
    assert [len(w) for w in back] == [80 * (len(spec) - 1), 80 * 19]  # hop 80 samples at 8 kHz
    again = log_spectrum(back[0], cfg)[: len(spec)]
    loud = spec > np.percentile(spec, 50)  # Griffin-Lim's phase matters where there is energy
    assert np.corrcoef(spec[loud], again[loud])[0, 1] > 0.9


def test_speech_swap_writes_voice_conversions_the_report_plays(speech_run):
    run = load_run(speech_run)
    data = load_experiment_data(run.config.data, progress=False, normalizer=run.normalizer)
    manifest = generate(run, data, speech_run / "generated", kinds=["swap"], cols=3, rows=2, n_iter=8)
    (g,) = manifest["grids"]
    assert manifest["view"] == "spectrum" and g["name"] == "swap_speech" and g["animations"] == []
    assert len(g["audio"]) == 6 and len(g["sources_audio"]) == 5
    speakers = {s["tag"] for s in g["sources_audio"] if s["axis"] == "style"}
    assert speakers == {"george", "lucas"}  # f from two held-out speakers
    out = speech_run / "generated"
    import soundfile as sf

    for a in [*g["audio"], *g["sources_audio"]]:
        wave, sr = sf.read(out / a["wav"])
        assert sr == 8000 and len(wave) == 80 * 19 and np.abs(wave).max() > 1e-3  # 20 frames, heard
        assert (out / a["spectrogram"]).read_bytes().startswith(b"\x89PNG")
    page = build_report(speech_run, data=data, rows=2, tsne_points=40)
    text = page.read_text()
    players = re.findall(r'<audio[^>]*\ssrc="data:audio/wav;base64,([^"]*)"', text)
    wavs = {(out / a["wav"]).read_bytes() for a in [*g["audio"], *g["sources_audio"]]}
    assert len(players) == 11 and {base64.b64decode(b) for b in players} == wavs
    assert "log-magnitude spectrograms" in text and "voice conversion" in text
