"""MDVAE's swapping experiments through `dispart generate` and `dispart report` (issue 11).

One tiny two-stage MDVAE run trained in this module (test_mdvae's config and sizes) on a synthetic
audio-visual corpus filed, for this module only, as the ``grid_clips`` loader: 6-frame clips of
3 x 16 x 16 "video" (test_mdvae's coloured frames) and "audio" that is what grid_clips gives, the
standardised log power spectrogram (:func:`dispart.batches.grid_clips.log_power_spectrogram`, here
at 8 kHz: 257 bins, hop 320 = one frame at 25 fps) of a tone whose pitch is the class. Checked:
the model is found from its declarations (A-DSAE / V-DSAE stay on the DSAE path), every row of a
pair is ``model.transfer`` of the sequences its record names (the PNG strips and the wavs, whose
inversion is the normaliser's inverse and grid_clips' Griffin-Lim, not log-Mel), the manifest
lists every file written, and the report embeds every GIF, strip and wav, escaped.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from browser import console_errors, ensure_chromium, run_chromium
from PIL import Image
from test_mdvae import SIZES, _clips, _train

from dispart.batches.batch import Sequences
from dispart.batches.corpus import LOADERS, Corpus
from dispart.batches.grid_clips import ClipAudioConfig, log_power_spectrogram, log_power_to_waveform
from dispart.batches.modality import ModalitySpec
from dispart.batches.pipeline import load_experiment_data
from dispart.batches.sets import ModalitySet
from dispart.cli import main
from dispart.errors import RunDirError
from dispart.generation.audio import PEAK, log_powers_to_waveforms
from dispart.generation.grids import frame_strip, static_dynamic
from dispart.generation.outputs import build_transfer_pairs, sequence_modality, sequence_view
from dispart.generation.transfer import build_transfers, shared_dynamics
from dispart.models import build_model
from dispart.nn.encoders import diag_gaussian
from dispart.report.html import build_report, render_page
from dispart.runs import load_run

pytestmark = pytest.mark.usefixtures("single_thread")

RATE, FPS = 8000, 25.0
ACFG = ClipAudioConfig(sample_rate=RATE, fps=FPS)  # hop 320, n_fft 512: 257 bins
T = 6
ITERS = 8


def _tone(c: int, rng: np.random.Generator) -> np.ndarray:
    """(T, 257) log power of a tone of class ``c`` (pitch) with a random loudness envelope."""
    n = T * ACFG.hop_length
    t = np.arange(n) / RATE
    envelope = np.interp(t, np.linspace(0, t[-1], 4), rng.uniform(0.2, 1.0, 4))
    wave = envelope * np.sin(2 * np.pi * (150 + 200 * c) * t) + 0.01 * rng.standard_normal(n)
    return log_power_spectrogram(wave.astype(np.float32), ACFG)[:T]


def _av(n: int, seed: int) -> tuple[ModalitySet, ModalitySet]:
    _, video = _clips(n, seed)  # test_mdvae's frames: channel c brighter for class c
    rng = np.random.default_rng(seed + 10)
    audio = [_tone(int(c), rng) for c in video.labels]
    speakers = [f"s{i % 2}" for i in range(n)]
    return (ModalitySet(audio, video.labels, ids=video.ids, speakers=speakers),
            ModalitySet(video.examples, video.labels, ids=video.ids, speakers=speakers))


def _fake_grid_clips(cfg, progress: bool = True) -> Corpus:
    (a_tr, v_tr), (a_te, v_te) = _av(40, 0), _av(12, 1)
    specs = {"audio": ModalitySpec("audio", "sequence", (ACFG.n_bins,), frame_rate=FPS),
             "video": ModalitySpec("video", "frames", (3, 16, 16), "bernoulli", frame_rate=FPS)}
    return Corpus({"audio": {"train": a_tr, "test": a_te}, "video": {"train": v_tr, "test": v_te}}, specs,
                  pairing="example", normalize=("audio",))


@pytest.fixture(scope="module")
def grid_clips():
    """The synthetic corpus filed as "grid_clips" while this module runs (restored after)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(LOADERS, "grid_clips", _fake_grid_clips)
        yield


@pytest.fixture(scope="module")
def mdvae_run(tmp_path_factory, grid_clips) -> Path:
    run = tmp_path_factory.mktemp("mdvae_gen") / "run"
    _train(run, "data.loader=grid_clips", "data.audio=synthetic", f"data.sample_rate={RATE}",
           "eval.n_clusters=3", "eval.k_max=5")
    return run


@pytest.fixture(scope="module")
def generated(mdvae_run):
    assert main(["generate", str(mdvae_run), "--rows", "2", "--griffin-lim-iters", str(ITERS)]) == 0
    run = load_run(mdvae_run)
    data = load_experiment_data(run.config.data, progress=False, normalizers=run.normalizers)
    manifest = json.loads((mdvae_run / "generated" / "manifest.json").read_text())
    return run, data, manifest


def _example(data, sid: str) -> dict[str, Sequences]:
    """The batch of one "test:<id>" sequence, both modalities."""
    split, eid = sid.split(":", 1)
    out = {}
    for m in ("audio", "video"):
        s = data.split(m, split)
        out[m] = Sequences.from_list([np.asarray(s.examples[s.ids.index(eid)], np.float32)])
    return out


def test_the_transfer_path_is_chosen_from_the_declarations():
    a = {"name": "audio", "kind": "sequence", "shape": [5]}
    v = {"name": "video", "kind": "frames", "shape": [3, 16, 16], "likelihood": "bernoulli"}
    mdvae = build_model({"name": "mdvae", "modalities": [a, v], **SIZES})
    sd = shared_dynamics(mdvae)
    assert sd is not None and (sd.static, sd.shared, sd.private, sd.shown) == (
        "w", "z_av", {"audio": "z_a", "video": "z_v"}, "video")
    assert sequence_modality(mdvae) is None
    for spec in (a, v):  # A-DSAE / V-DSAE: the same class over one modality stays on the DSAE path
        one = build_model({"name": "mdvae", "modalities": [spec], **SIZES})
        assert shared_dynamics(one) is None
        assert sequence_modality(one) == spec["name"] and static_dynamic(one, spec["name"]) == ("w", "z")
    dsae = build_model({"name": "dsae", "modalities": [{**a, "name": "speech"}], "f_dim": 2, "z_dim": 2,
                        "hidden": 4, "prior_hidden": 4})
    pvae = build_model({"name": "pvae", "modalities": [
        {"name": "audio", "kind": "sequence", "shape": [80]},
        {"name": "image", "kind": "image", "shape": [1, 28, 28]}]})
    assert shared_dynamics(dsae) is None and shared_dynamics(pvae) is None


def test_power_spectrograms_are_inverted_by_grid_clips_griffin_lim(generated):
    run, data, _ = generated
    view = sequence_view(run, data, "audio")
    assert view.kind == "power" and view.sample_rate == RATE and view.fps == FPS
    x = data.split("audio", "test").examples[0]
    raw = run.normalizers["audio"].inverse_transform(x)
    np.testing.assert_allclose(view.display(x), raw, rtol=1e-5, atol=1e-5)  # log power, not log-Mel
    rng = np.random.default_rng(3)
    longer = np.concatenate([_tone(1, rng), _tone(1, rng)])  # 12 frames
    (wave,) = log_powers_to_waveforms([longer], ACFG, n_iter=32)
    assert len(wave) == 11 * ACFG.hop_length and np.abs(wave).max() <= PEAK + 1e-6
    again = log_power_spectrogram(wave, ACFG)[:12]
    loud = longer > np.percentile(longer, 50)
    assert np.corrcoef(longer[loud], again[loud])[0, 1] > 0.9


def test_generate_writes_the_strips_gifs_and_wavs_its_manifest_names(generated, mdvae_run):
    run, _, manifest = generated
    out = mdvae_run / "generated"
    assert manifest["view"] == "transfer" and manifest["views"] == {"audio": "power", "video": "frames"}
    assert manifest["latents"] == {"static": "w", "shared": "z_av",
                                   "private": {"audio": "z_a", "video": "z_v"}, "shown": "video"}
    assert manifest["weights_sha256"] == run.weights_sha256 and manifest["frame_rate"] == FPS
    assert [g["name"] for g in manifest["grids"]] == ["transfer_0", "transfer_1"]
    names = ["source", "target", "reconstruction", "z_av", "z_v", "z_av+z_v"]
    listed = {"manifest.json"}
    for g in manifest["grids"]:
        assert g["kind"] == "transfer" and g["shape"] == [6, T]
        assert [r["name"] for r in g["rows"]] == names
        assert g["target"]["source"] != g["source"]["source"]
        listed |= {g["png"], g["json"]}
        assert json.loads((out / g["json"]).read_text())["rows"] == g["rows"]
        assert Image.open(out / g["png"]).size[0] > T * 17  # the strips plus labels
        assert [a["name"] for a in g["animations"]] == names and {a["modality"] for a in g["animations"]} == {
            "video"}
        assert [a["name"] for a in g["audio"]] == names and {a["modality"] for a in g["audio"]} == {"audio"}
        for a in g["animations"]:
            listed |= {a["gif"], a["strip"]}
            gif = Image.open(out / a["gif"])
            assert gif.n_frames == a["frames"] == T and gif.info["duration"] == 40  # 25 frames/s
            assert Image.open(out / a["strip"]).size == (T * 17 - 1, 16)
        for a in g["audio"]:
            listed |= {a["wav"], a["spectrogram"]}
            wave, sr = sf.read(out / a["wav"])
            assert sr == RATE and len(wave) == (T - 1) * ACFG.hop_length and np.abs(wave).max() > 1e-3
        same = [a["name"] for a in g["audio"] if a["same_as_reconstruction"]]
        assert same == ["z_v"]  # the audio decoder reads w, z_av, z_a: swapping z_v leaves it as it was
        assert not any(a["same_as_reconstruction"] for a in g["animations"])
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == listed


def _strip(out: Path, entry: dict, name: str) -> np.ndarray:
    a = next(a for a in entry["animations"] if a["name"] == name)
    return np.asarray(Image.open(out / a["strip"]).convert("RGB")).astype(int)


def _wav(out: Path, entry: dict, name: str) -> np.ndarray:
    a = next(a for a in entry["audio"] if a["name"] == name)
    return sf.read(out / a["wav"], dtype="float32")[0]


def test_each_row_is_model_transfer_of_the_sequences_its_record_names(generated, mdvae_run):
    run, data, manifest = generated
    model, out = run.model, mdvae_run / "generated"
    norm = run.normalizers["audio"]
    for g in manifest["grids"]:
        tid, sid = g["target"]["source"], g["source"]["source"]
        rows = {r["name"]: r for r in g["rows"]}
        assert rows["source"]["sources"] == {"data": sid} and rows["target"]["sources"] == {"data": tid}
        for name, moved in [("reconstruction", ()), ("z_av", ("z_av",)), ("z_v", ("z_v",)),
                            ("z_av+z_v", ("z_av", "z_v"))]:
            record = rows[name]["sources"]
            assert record == {k: sid if k in moved else tid for k in ("w", "z_av", "z_a", "z_v")}
            want = model.transfer(_example(data, tid), _example(data, sid), moved)
            assert np.abs(_strip(out, g, name) - frame_strip(want["video"][0].numpy())).max() <= 1
            log_power = norm.inverse_transform(want["audio"][0].numpy())
            wave = log_power_to_waveform(log_power, ACFG, n_iter=ITERS)
            peak = np.abs(wave).max()
            wave = wave * (PEAK / peak) if peak > PEAK else wave
            np.testing.assert_allclose(_wav(out, g, name), wave, atol=2 / 32768)
        # the real sequences, as stored
        video = _example(data, sid)["video"].data[0].numpy()
        assert np.abs(_strip(out, g, "source") - frame_strip(video)).max() == 0
    with pytest.raises(RunDirError, match="--kind swap is not for a mdvae model"):
        build_transfer_pairs(run, data, ["swap"])


def test_transfers_take_the_latents_of_the_recorded_source_and_no_other(generated, monkeypatch):
    """The tiny run (one epoch, 8-code VQ-VAEs) infers nearly the same latents from every sequence
    and decodes every row to the same frames, so its outputs cannot tell sources apart. Here its
    encoder is replaced by one whose posterior means are fixed random projections of the audio's
    VQ encodings (so every sequence has latents of its own) and its decoders stop before the quantiser
    (``decode`` = ``decode_params``, the mean encodings); ``model.transfer`` uses both as well."""
    run, data, manifest = generated
    model = run.model
    gen = torch.Generator().manual_seed(0)
    dim = model.vq["audio"].encoding_dim
    proj = {k: torch.randn(dim, v.size, generator=gen) for k, v in model.latents.items()}

    def encode(batch):  # raw frames (generation) or the VQ encodings (model.transfer)
        x = model.observed("audio", batch["audio"])
        mask = (torch.arange(x.data.shape[1])[None, :] < x.lengths[:, None])[..., None].float()
        frames = 10 * x.data * mask
        mean = {k: frames @ proj[k] if v.dynamic else (frames.sum(1) / x.lengths[:, None]) @ proj[k]
                for k, v in model.latents.items()}
        return {k: diag_gaussian(m, torch.zeros_like(m)) for k, m in mean.items()}

    monkeypatch.setattr(model, "encode", encode)
    monkeypatch.setattr(model, "decode", model.decode_params)
    pairs = build_transfers(model, data, n=2, seed=0)  # generate's picks
    assert [p.to_json()["rows"] for p in pairs] == [g["rows"] for g in manifest["grids"]]
    for p in pairs:
        target, source = _example(data, p.target), _example(data, p.source)
        other = next(_example(data, q.target) for q in pairs if q.target != p.target)
        for r, moved in enumerate(p.transferred):
            if moved is None:
                continue
            want = model.transfer(target, source, moved)
            for m in ("audio", "video"):
                np.testing.assert_allclose(p.cells[m][r], want[m][0].numpy(), rtol=1e-5, atol=1e-5)
            if moved:  # another source's latents give another sequence
                wrong = model.transfer(target, other, moved)["video"][0].numpy()
                assert np.abs(p.cells["video"][r] - wrong).max() > 1e-2
                assert np.abs(p.cells["video"][r] - p.cells["video"][2]).max() > 1e-2  # not the target's
        z_v_row = p.rows.index("z_v")
        np.testing.assert_allclose(p.cells["audio"][z_v_row], p.cells["audio"][2], rtol=1e-6, atol=1e-6)


def test_the_report_plays_and_shows_every_transfer_escaped(generated, mdvae_run):
    run, data, manifest = generated
    page = build_report(mdvae_run, data=data, rows=2, tsne_points=12)
    text = page.read_text()
    out = mdvae_run / "generated"
    assert json.loads((out / "manifest.json").read_text()) == manifest  # reused, not made again
    gifs = re.findall(r'<img[^>]*\ssrc="data:image/gif;base64,([^"]*)"', text)
    players = re.findall(r'<audio[^>]*\ssrc="data:audio/wav;base64,([^"]*)"', text)
    pngs = {base64.b64decode(b) for b in re.findall(r'<img[^>]*\ssrc="data:image/png;base64,([^"]*)"', text)}
    anims = [a for g in manifest["grids"] for a in g["animations"]]
    clips = [a for g in manifest["grids"] for a in g["audio"]]
    assert len(gifs) == len(anims) == 12 and len(players) == len(clips) == 12
    assert {base64.b64decode(b) for b in gifs} == {(out / a["gif"]).read_bytes() for a in anims}
    assert {base64.b64decode(b) for b in players} == {(out / a["wav"]).read_bytes() for a in clips}
    wanted = [g["png"] for g in manifest["grids"]] + [a["strip"] for a in anims]
    wanted += [a["spectrogram"] for a in clips]
    assert {(out / p).read_bytes() for p in wanted} <= pngs
    for g in manifest["grids"]:
        assert f"<h3>{g['name']}</h3>" in text and g["target"]["source"] in text
    assert "Swapping (MDVAE)" in text and "z^av_t from the source" in text
    assert "the same as the reconstruction: the audio decoder" in text
    # Table 1 needs latents from one modality at a time, which MDVAE refuses: said, not hidden
    assert "Not computed: mdvae: the batch lacks" in text or "<table><thead>" in text
    assert not re.search(r'(?:src|href)="(?:https?:|file:|/)', text)
    # values from the run folder are escaped
    hostile = json.loads(json.dumps(manifest))
    hostile["grids"][0]["target"]["tag"] = "<script>alert(1)</script>"
    hostile["grids"][0]["rows"][3]["label"] = "<b>x</b>"
    hostile["grids"][0]["rows"][2]["sources"] = {"w": ["a list"], "<i>": "<u>"}
    hostile["grids"][0]["rows"][4]["row"] = {"not": "a row"}
    hostile["grids"][0]["animations"][0]["modality"] = ["not", "a name"]
    html = render_page(run, {}, hostile, {}, [], out)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "&lt;i&gt; from the &lt;u&gt;" in html
    assert "<i>" not in html and "<u>" not in html
    binary, reason = ensure_chromium()
    if binary is None:
        pytest.skip(reason)
    done = run_chromium(binary, page, "--dump-dom")
    status = re.search(r'data-render-check="([^"]*)"', done.stdout)
    assert status and status.group(1).startswith("ok "), status and status.group(1)
    assert f"images={text.count('<img')}" in status.group(1) and f"audio={len(players)}" in status.group(1)
    assert console_errors(done.stderr) == []
