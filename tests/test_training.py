"""End to end on real files: train (CLI) -> run folder -> evaluate -> resume; CLI errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dispart.batches.pipeline import load_experiment_data
from dispart.cli import main
from dispart.data.sample import sample_fsdd_dir
from dispart.evaluation.clustering import kmeans_purity
from dispart.evaluation.latents import image_latents, speech_latents
from dispart.evaluation.table import read_evaluation_json
from dispart.runs import load_run
from dispart.training.run import cpu_runs_bf16_lstm

FAST = ["model.hidden=32", "train.batch_size=64", "train.progress_bar=false",
        "train.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    run = root / "run"
    cache = root / "cache"
    code = main(["train", "tests/sample.yaml", "--out", str(run), "train.epochs=2",
                 f"data.cache_dir={cache}", *FAST])
    assert code == 0
    return run, cache


def test_run_folder_is_complete_and_loads_without_code_execution(trained):
    run, _ = trained
    for name in ("config.yaml", "run.json", "model.safetensors", "checkpoints/last.ckpt",
                 "checkpoints/epoch001.ckpt"):
        assert (run / name).is_file(), name
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    # Saved at the end of the last epoch (index 1 of 2): 300 utterances / 64 -> 5 steps an epoch.
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 10)
    assert ckpt["hyper_parameters"]["model_hparams"]["name"] == "pvae"
    weights = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("inference.unimodal.audio") for k in weights)  # issue 9: inference.*
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["n_speech_train"] == 300 and info["data"]["n_speech_test"] == 100
    assert info["data"]["speakers_train"] == info["data"]["speakers_test"]
    loaded = load_run(run)
    assert loaded.model.hidden == 32
    # The normaliser was fitted on the training split: its stats come back exactly.
    data = load_experiment_data(loaded.config.data, progress=False, normalizer=None)
    raw = np.concatenate([data.normalizers["audio"].inverse_transform(f) for f in
                          data.split("audio", "train").examples])  # the training split's log-Mel frames
    np.testing.assert_allclose(loaded.normalizer.mean, raw.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(loaded.normalizer.std, raw.std(axis=0), rtol=1e-3)
    assert not np.allclose(loaded.normalizer.mean, loaded.normalizer.mean.mean())
    metrics = (run / "logs" / "metrics.csv").read_text().splitlines()
    assert "train/loss" in metrics[0] and len(metrics) > 2


def test_evaluate_writes_table1_rows(trained, capsys):
    run, _ = trained
    assert main(["evaluate", str(run), "--no-curves"]) == 0
    result = read_evaluation_json(run / "evaluation.json")
    got = {(r["modality"], r["latent"]) for r in result["rows"]}
    assert got == {("speech", "z^s"), ("speech", "z^a"), ("image", "z^s"), ("image", "z^i")}
    # Every purity is the k-means purity of the model's own unimodal test latents (recomputed).
    loaded = load_run(run)
    data = load_experiment_data(loaded.config.data, progress=False, normalizer=loaded.normalizer)
    speech_test, image_test = data.split("audio", "test"), data.split("image", "test")
    sets = {"speech": (speech_latents(loaded.model, speech_test.examples), speech_test.labels),
            "image": (image_latents(loaded.model, image_test.examples), image_test.labels)}
    for r in result["rows"]:
        z, labels = sets[r["modality"]]
        name = {"z^s": "z_s", "z^a": "z_audio", "z^i": "z_image"}[r["latent"]]
        y = np.unique(np.asarray(labels), return_inverse=True)[1]
        assert r["purity"] == pytest.approx(kmeans_purity(z[name], y, n_clusters=10, seed=0))
    assert result["n_test"] == {"audio": 100, "image": 400}
    assert "| PVAE" in (run / "evaluation.md").read_text()
    assert "z^s" in capsys.readouterr().out


def test_evaluate_on_another_corpus_via_csv(trained, tmp_path):
    run, _ = trained
    wavs = sorted(sample_fsdd_dir().glob("*_george_0.wav"))
    csv = tmp_path / "unseen.csv"
    csv.write_text("label,speaker,path\n" + "".join(
        f"{w.name.split('_')[0]},george,{w}\n" for w in wavs))
    out = tmp_path / "ev"
    assert main(["evaluate", str(run), "--audio", str(csv), "--out", str(out), "--no-curves"]) == 0
    result = read_evaluation_json(out.with_suffix(".json"))
    assert result["n_test"] == {"audio": 10}
    assert {r["modality"] for r in result["rows"]} == {"speech"}


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    run, cache = trained
    before = load_file(str(run / "model.safetensors"))
    assert main(["train", str(run / "config.yaml"), "--out", str(run), "--resume",
                 "train.epochs=3", f"data.cache_dir={cache}", *FAST]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    summary = json.loads((run / "train_summary.json").read_text())
    assert (summary["epochs"], summary["global_step"]) == (3, 15)  # one more epoch, not three
    after = load_file(str(run / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Exactly the weights of 3 uninterrupted epochs (same seed): RNG and batch order resumed.
    ref = tmp_path / "uninterrupted"
    assert main(["train", "tests/sample.yaml", "--out", str(ref), "train.epochs=3",
                 f"data.cache_dir={cache}", *FAST]) == 0
    uninterrupted = load_file(str(ref / "model.safetensors"))
    assert uninterrupted.keys() == after.keys()
    assert all(torch.equal(uninterrupted[k], after[k]) for k in after)


def test_cli_errors_name_the_problem(trained, tmp_path, capsys):
    run, _ = trained
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "model.safetensors").unlink()
    assert main(["evaluate", str(broken)]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err
    assert main(["train", "tests/sample.yaml", "--out", str(tmp_path / "r"), "model.nope=1"]) == 2
    assert "model.nope" in capsys.readouterr().err
    assert main(["train", "tests/sample.yaml", "--out", str(tmp_path / "r"),
                 f"data.audio={tmp_path / 'missing'}"]) == 2
    assert capsys.readouterr().err == (
        f"dispart train: error: {tmp_path / 'missing'}: corpus source does not exist\n")
    assert main(["train", "tests/sample.yaml", "--out", str(run)]) == 2
    assert "already holds a finished run" in capsys.readouterr().err


def test_bad_wav_is_named_or_skipped_and_counted(tmp_path, capsys):
    audio = tmp_path / "audio"
    shutil.copytree(sample_fsdd_dir(), audio)
    (audio / "3_george_7.wav").write_bytes(b"not a wav at all")
    args = ["train", "tests/sample.yaml", "--out", str(tmp_path / "r"), f"data.audio={audio}",
            f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1", *FAST]
    assert main(args) == 2
    assert "3_george_7.wav" in capsys.readouterr().err
    assert main([*args, "data.on_error=skip"]) == 0
    assert "skipped 1 bad audio files" in capsys.readouterr().out
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert [Path(s["path"]).name for s in info["data"]["skipped_files"]] == ["3_george_7.wav"]
    assert info["data"]["n_speech_train"] == 299


def test_cosine_lr_schedule_decays_to_zero_over_the_runs_steps(trained, tmp_path):
    """train.lr_schedule=cosine: Adam's rate follows lr * (1 + cos(pi * step / steps)) / 2 per
    optimiser step (10 steps here), saved in the checkpoints; the default keeps lr constant."""
    _, cache = trained
    run = tmp_path / "cosine"
    assert main(["train", "tests/sample.yaml", "--out", str(run), "train.epochs=2", "train.lr=0.002",
                 "train.lr_schedule=cosine", f"data.cache_dir={cache}", *FAST]) == 0
    mid = torch.load(run / "checkpoints" / "epoch000.ckpt", weights_only=True)
    end = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    for ckpt, step in ((mid, 5), (end, 10)):
        (sched,) = ckpt["lr_schedulers"]
        assert sched["last_epoch"] == ckpt["global_step"] == step
        expected = 0.002 * (1 + np.cos(np.pi * step / 10)) / 2
        assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(expected, abs=1e-9)
    constant = torch.load(trained[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert not constant["lr_schedulers"]
    assert constant["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-3


def test_speaker_adversary_trains_end_to_end_with_the_datas_speakers(trained, tmp_path, capsys):
    """model.alpha_speaker on the sample: the run takes speaker_classes from the training speech
    (saved in run.json, so the run loads), logs the adversary's terms; a speaker_classes that
    disagrees with the data is a ConfigError naming both numbers."""
    _, cache = trained
    run = tmp_path / "spk"
    assert main(["train", "tests/sample.yaml", "--out", str(run), "train.max_steps=3",
                 "model.alpha_speaker=5", f"data.cache_dir={cache}", *FAST]) == 0
    data = load_experiment_data(load_run(run).config.data, progress=False)
    speakers = set(data.split("audio", "train").speakers)
    model = load_run(run).model
    assert model.speaker_classes == len(speakers) >= 2
    assert model.speaker_critic[-1].out_features == len(speakers)
    logged = (run / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/speaker_critic" in logged and "train/speaker_adv" in logged
    assert main(["train", "tests/sample.yaml", "--out", str(tmp_path / "bad"), "train.max_steps=1",
                 "model.alpha_speaker=5", f"model.speaker_classes={len(speakers) + 1}",
                 f"data.cache_dir={cache}", *FAST]) == 2
    assert f"model.speaker_classes={len(speakers) + 1}" in capsys.readouterr().err


def test_bf16_mixed_training_tracks_fp32_and_keeps_fp32_weights(trained, tmp_path, capsys):
    """train.precision=bf16-mixed (Lightning's CPU autocast): the same seed's first 5 logged losses
    are within 1 % of the fp32 run's but not equal to them (autocast is in effect), and the saved
    weights stay fp32. On a CPU whose oneDNN has no bf16 LSTM (e.g. AMD Zen 3): a config error
    before training that names train.precision, not a crash inside torch.nn.LSTM."""
    _, cache = trained
    if not cpu_runs_bf16_lstm():
        out = tmp_path / "bf16"
        assert main(["train", "tests/sample.yaml", "--out", str(out), "train.epochs=1",
                     "train.precision=bf16-mixed", f"data.cache_dir={cache}", *FAST]) == 2
        err = capsys.readouterr().err
        assert "train.precision=bf16-mixed" in err and "32-true" in err
        assert not (out / "model.safetensors").exists()
        return
    run, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    for out, precision in ((run, "32-true"), (bf16, "bf16-mixed")):
        assert main(["train", "tests/sample.yaml", "--out", str(out), "train.epochs=1",
                     f"train.precision={precision}", f"data.cache_dir={cache}", *FAST]) == 0

    def losses(folder: Path) -> np.ndarray:
        lines = (folder / "logs" / "metrics.csv").read_text().splitlines()
        col = lines[0].split(",").index("train/loss")
        return np.array([float(r.split(",")[col]) for r in lines[1:] if r.split(",")[col]][:5])

    fp32, mixed = losses(run), losses(bf16)
    assert len(mixed) == 5 and np.isfinite(mixed).all()
    np.testing.assert_allclose(mixed, fp32, rtol=0.01)
    assert not np.array_equal(mixed, fp32)
    weights = load_file(str(bf16 / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
