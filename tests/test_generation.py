"""Generation: grid layout (which source fed which latent), Griffin-Lim on real files, the CLI."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from browser import tiny_run

from dispart.batches.batch import Sequences
from dispart.config import load_config
from dispart.data.sample import sample_fsdd_dir
from dispart.errors import ConfigError, DispartError, RunDirError
from dispart.features.fbank import FbankConfig, fbank_from_file, log_mel
from dispart.features.normalize import FeatureNormalizer
from dispart.files import file_sha256
from dispart.generation.audio import (
    features_to_logmel,
    logmel_to_waveform,
    logmels_to_waveforms,
    waveforms_to_features,
)
from dispart.generation.cli import add_generate_parser
from dispart.generation.grids import (
    decode_grid,
    infer_latents,
    pick_by_label,
    prior_latents,
    render_grid_png,
)
from dispart.models import build_model
from dispart.training.run import model_hparams

PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = load_config(None, ["model.hidden=16", "model.semantic_dim=4", "model.style_dim=3"])
    return build_model(model_hparams(cfg)).eval()


def _speech(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(t), 80)).astype(np.float32) for t in rng.integers(6, 20, n)]


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28)).astype(np.float32)


class DecodeSpy:
    """Wraps model.decode, recording the latents and lengths of every call."""

    def __init__(self, model) -> None:
        self.inner, self.calls = model.decode, []

    def __call__(self, latents, modality, lengths=None):
        self.calls.append(({k: v.clone() for k, v in latents.items()}, modality, lengths))
        return self.inner(latents, modality, lengths)


@pytest.mark.parametrize("out", ["image", "audio"])
def test_grid_cells_take_z_s_from_their_column_and_style_from_their_row(model, monkeypatch, out):
    other = "audio" if out == "image" else "image"
    sem_items = _speech(3) if other == "audio" else list(_images(3))
    sty_items = list(_images(2)) if out == "image" else _speech(2, seed=5)
    sem = infer_latents(model, other, sem_items, "z_s", ids=["a", "b", "c"])
    sty = infer_latents(model, out, sty_items, f"z_{out}", ids=["R0", "R1"])
    spy = DecodeSpy(model)
    monkeypatch.setattr(model, "decode", spy)
    grid = decode_grid(model, sem, sty, out, name="g", default_length=7)
    assert grid.shape == (2, 3) and len(spy.calls) == 1
    latents, modality, lengths = spy.calls[0]
    assert modality == out
    for r in range(2):
        for c in range(3):
            i = r * 3 + c
            # the latents the decoder received for cell (r, c) are those of column c / row r
            np.testing.assert_allclose(latents["z_s"][i].numpy(), sem.z[c])
            np.testing.assert_allclose(latents[f"z_{out}"][i].numpy(), sty.z[r])
            assert grid.record[r][c] == {"z_s": "abc"[c], f"z_{out}": f"R{r}"}
    # ... and each latent is the unimodal posterior mean of that very source item
    x = Sequences.from_list([sem_items[1]]) if other == "audio" else \
        torch.as_tensor(sem_items[1])[None, None]
    with torch.no_grad():
        single = model.encode({other: x})["z_s"].mean[0].numpy()
    np.testing.assert_allclose(single, sem.z[1], atol=1e-5)
    if out == "audio":  # duration is style: every row has the length of its style utterance
        want = np.repeat([len(x) for x in sty_items], 3)
        assert lengths.tolist() == want.tolist()
        assert [c.shape[0] for c in grid.cells[1]] == [len(sty_items[1])] * 3
    else:
        assert lengths is None and grid.cells[0][0].shape == (28, 28)


def test_prior_grids_and_json_record(model, tmp_path):
    sem = infer_latents(model, "image", list(_images(4)), "z_s", tags=list("0123"))
    sty = prior_latents(2, 3, "z_audio", seed=3)
    grid = decode_grid(model, sem, sty, "audio", default_length=9)
    assert [c.shape for c in grid.cells[0]] == [(9, 80)] * 4  # no speech source: default length
    assert grid.record[1][2] == {"z_s": "image[2]", "z_audio": "prior[1]"}
    np.testing.assert_array_equal(prior_latents(2, 3, "z_audio", seed=3).z, sty.z)
    info = json.loads(json.dumps(grid.to_json()))
    assert info["style (rows)"]["sources"] == ["prior[0]", "prior[1]"]
    png = render_grid_png(grid, tmp_path / "g.png")
    assert png.read_bytes()[:8] == PNG


def test_decode_grid_refuses_a_style_latent_of_the_wrong_modality(model):
    sem = infer_latents(model, "image", list(_images(2)), "z_s")
    sty = infer_latents(model, "image", list(_images(2)), "z_image")
    with pytest.raises(ValueError, match="does not feed the audio decoder"):
        decode_grid(model, sem, sty, "audio")


def test_pick_by_label_gives_one_digit_per_column_in_order():
    labels = [str(d) for d in range(10)] * 5
    idx = pick_by_label(labels, 12, seed=0)
    assert [labels[i] for i in idx] == [str(d) for d in range(10)] + ["0", "1"]
    assert len(set(idx)) == 12


def test_griffin_lim_round_trip_on_real_files():
    cfg = FbankConfig()
    files = sorted(sample_fsdd_dir().glob("*.wav"))[::97][:4]
    feats = [fbank_from_file(p, cfg) for p in files]
    batched = logmels_to_waveforms(feats, cfg)
    for f, wb in zip(feats, batched, strict=True):
        for wave in (logmel_to_waveform(f, cfg), wb):
            again = log_mel(wave, cfg)
            assert again.shape == f.shape and np.abs(wave).max() <= 0.95 + 1e-6
            corr = np.corrcoef(again.ravel(), f.ravel())[0, 1]
            assert corr > 0.9, corr
            # per-band deviations from the band mean (the part that carries the digit) too
            d1, d2 = again - again.mean(0), f - f.mean(0)
            assert np.corrcoef(d1.ravel(), d2.ravel())[0, 1] > 0.8
    # a control that must fail the bound: a different utterance of similar length
    other = log_mel(batched[1], cfg)[: len(feats[0])]
    n = min(len(other), len(feats[0]))
    d1, d2 = other[:n] - other[:n].mean(0), feats[0][:n] - feats[0][:n].mean(0)
    assert np.corrcoef(d1.ravel(), d2.ravel())[0, 1] < 0.8


def test_normalisation_is_undone_exactly():
    cfg = FbankConfig()
    f = fbank_from_file(sorted(sample_fsdd_dir().glob("*.wav"))[0], cfg)
    norm = FeatureNormalizer().fit([f])
    np.testing.assert_allclose(features_to_logmel(norm.transform(f), norm), f, atol=1e-4)
    offset = np.full(80, 2.0, np.float32)
    np.testing.assert_allclose(features_to_logmel(norm.transform(f), norm, offset), f + 2, atol=1e-4)
    (back,) = waveforms_to_features([logmel_to_waveform(f, cfg)], norm, cfg)
    assert back.shape == f.shape


# --------------------------------------------------------------------------- CLI on a tiny run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.getbasetemp())


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dispart")
    add_generate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_generate_cli_writes_grids_wavs_and_records(run_dir, tmp_path):
    out = tmp_path / "gen"
    assert _cli(["generate", str(run_dir), "--out", str(out), "--rows", "2", "--cols", "10",
                 "--kind", "style", "--kind", "cross"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    names = [g["name"] for g in manifest["grids"]]
    assert names == ["style_image", "style_audio", "cross_audio_to_image", "cross_image_to_audio"]
    for g in manifest["grids"]:
        assert (out / g["png"]).read_bytes()[:8] == PNG and g["shape"] == [2, 10]
        rec = json.loads((out / g["json"]).read_text())
        assert rec["semantic (columns)"]["tags"] == [str(d) for d in range(10)]
    cross = json.loads((out / "grids" / "cross_image_to_audio.json").read_text())
    assert cross["semantic (columns)"]["modality"] == "image"
    assert cross["style (rows)"]["modality"] == "audio"
    assert cross["cells"][1][3]["z_s"] == cross["semantic (columns)"]["sources"][3]
    assert cross["cells"][1][3]["z_audio"] == cross["style (rows)"]["sources"][1]
    wavs = manifest["grids"][3]["audio"]
    assert len(wavs) == 20
    wave, sr = sf.read(out / wavs[0]["wav"])
    assert sr == 8000 and len(wave) > 400 and np.abs(wave).max() > 0
    assert (out / wavs[0]["spectrogram"]).read_bytes()[:8] == PNG
    assert {s["axis"] for s in manifest["grids"][3]["sources_audio"]} == {"style"}
    # the model the outputs came from, and nothing left half-written (every file is atomic)
    assert manifest["weights_sha256"] == file_sha256(run_dir / "model.safetensors")
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_generating_again_removes_the_manifest_first(run_dir, tmp_path, monkeypatch):
    """A crash while regenerating must not leave the old manifest over half-new files."""
    from dispart.generation import outputs

    out = tmp_path / "gen"
    assert _cli(["generate", str(run_dir), "--out", str(out), "--rows", "1", "--cols", "2",
                 "--kind", "style", "--no-audio"]) == 0
    assert (out / "manifest.json").is_file()

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(outputs, "write_grid_outputs", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _cli(["generate", str(run_dir), "--out", str(out), "--rows", "1", "--cols", "2",
              "--kind", "style", "--no-audio"])
    assert not (out / "manifest.json").exists()


def test_generate_cli_errors_name_the_run_folder(run_dir, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RunDirError, match="run folder not found"):
        _cli(["generate", str(missing)])
    with pytest.raises(ConfigError, match="--cols and --rows must be >= 1"):
        _cli(["generate", str(run_dir), "--rows", "0", "--out", str(tmp_path / "x")])
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("generated", "classifiers"))
    (broken / "model.safetensors").unlink()
    with pytest.raises(RunDirError, match="model.safetensors is missing"):
        _cli(["generate", str(broken)])
    old = tmp_path / "old"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("generated", "classifiers"))
    info = json.loads((old / "run.json").read_text())
    info["format"] = 999
    (old / "run.json").write_text(json.dumps(info))
    with pytest.raises(DispartError, match="run format 999"):
        _cli(["generate", str(old)])


def test_generate_style_on_a_jmvae_run_is_refused(tmp_path):
    from dispart.batches.pipeline import load_experiment_data
    from dispart.runs import save_run
    from dispart.training.run import data_summary

    cfg = load_config("tests/sample.yaml", ["model.name=jmvae_kl", "model.hidden=16"])
    data = load_experiment_data(cfg.data, progress=False)
    run = tmp_path / "jm"
    save_run(run, cfg, build_model(model_hparams(cfg)), data.normalizers["audio"], data.fbank,
             data_summary(cfg, data))
    with pytest.raises(RunDirError, match="needs a PVAE run"):
        _cli(["generate", str(run), "--kind", "style"])
    assert _cli(["generate", str(run), "--out", str(tmp_path / "g"), "--cols", "3", "--no-audio"]) == 0
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert [g["name"] for g in manifest["grids"]] == ["fig2_from_image", "fig2_from_audio"]
    assert manifest["grids"][0]["shape"] == [2, 3]
