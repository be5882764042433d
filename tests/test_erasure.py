"""Linear erasure of the speaker from PVAE's z^s (`dispart erase`): the eraser against a hand
computation, the head edit against the map it stands for, and a real run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dispart.batches.pipeline import load_experiment_data
from dispart.cli import main
from dispart.errors import RunDirError
from dispart.evaluation.clustering import linear_probe_accuracy
from dispart.evaluation.latents import modality_latents
from dispart.models.erasure import fit_group_eraser
from dispart.nn.encoders import GaussianHead
from dispart.runs import load_run

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).parents[1]


def test_eraser_by_hand():
    # Two groups differing along x only; y varies within groups. Overall mean (1, 0) (equal
    # sizes); the orthogonal eraser sets every x to 1 and leaves y alone.
    z = np.array([[0.0, 1.0], [0.0, -1.0], [2.0, 3.0], [2.0, -3.0]])
    e = fit_group_eraser(z, np.array(["a", "a", "b", "b"]), method="orth")
    assert e.rank == 1
    np.testing.assert_allclose(e(z), [[1, 1], [1, -1], [1, 3], [1, -3]], atol=1e-6)
    matrix, offset = e.as_affine()
    np.testing.assert_allclose(z @ matrix.numpy().T + offset.numpy(), e(z), atol=1e-6)
    # Unequal group sizes: the erased group means meet at the overall mean.
    z3 = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [4.0, 2.0]])
    for method in ("orth", "leace"):
        out = fit_group_eraser(z3, np.array([0, 0, 0, 1]), method=method)(z3)
        np.testing.assert_allclose(out[:3].mean(0), out[3], atol=1e-6)
    # G groups span at most G - 1 directions, whatever D; LEACE moves the latents less than the
    # orthogonal projection and a linear probe reads the groups from neither.
    rng = np.random.default_rng(0)
    g = rng.integers(0, 5, 400)
    big = rng.normal(size=(400, 16)) * np.linspace(0.2, 3, 16) + rng.normal(size=(5, 16))[g] * 3
    moved = {}
    for method in ("orth", "leace"):
        eb = fit_group_eraser(big, g, method=method)
        erased = eb(big)
        assert eb.rank == 4
        gaps = [np.abs(erased[g == k].mean(0) - erased.mean(0)).max() for k in range(5)]
        assert max(gaps) < 1e-4
        assert linear_probe_accuracy(erased, g, erased, g) < 0.4
        moved[method] = float(((erased - big) ** 2).sum(1).mean())
    assert linear_probe_accuracy(big, g, big, g) > 0.9 and moved["leace"] < moved["orth"]
    with pytest.raises(ValueError, match="at least two groups"):
        fit_group_eraser(z, np.zeros(4))
    with pytest.raises(ValueError, match="N groups"):
        fit_group_eraser(z, np.zeros(3))
    with pytest.raises(ValueError, match="method must be one of"):
        fit_group_eraser(z, np.array([0, 0, 1, 1]), method="inlp")


def test_compose_mean_edits_only_the_mean():
    torch.manual_seed(0)
    head = GaussianHead(5, 3)
    h = torch.randn(7, 5)
    before = head(h)
    a, c = torch.randn(3, 3), torch.randn(3)
    head.compose_mean(a, c)
    after = head(h)
    torch.testing.assert_close(after.mean, before.mean @ a.T + c)
    torch.testing.assert_close(after.stddev, before.stddev)
    with pytest.raises(ValueError, match=r"\(3, 3\) matrix"):
        head.compose_mean(torch.eye(2), torch.zeros(2))


@pytest.fixture(scope="module")
def run_dir(tiny_pvae_run: Path) -> Path:
    return tiny_pvae_run


def test_erase_a_real_run(run_dir: Path, tmp_path: Path, capsys):
    """The erased copy: the training speakers' mean z^s (r_audio) meet; q's and r_image's z^s heads
    moved by the same map; style heads and decoders untouched; the source run unchanged; a
    linear probe reads the speakers on the training split before and not after."""
    out = tmp_path / "erased"
    assert main(["erase", str(run_dir), "--out", str(out)]) == 0
    assert "erased 5 speakers" in capsys.readouterr().out
    src, new = load_run(run_dir), load_run(out)
    record = json.loads((out / "run.json").read_text())["erasure"]
    assert record["rank"] == 4 and record["source_weights_sha256"] == src.weights_sha256
    assert record["speaker_mean_gap_after"] < 1e-4 < record["speaker_mean_gap_before"]
    data = load_experiment_data(src.config.data, progress=False, normalizer=src.normalizer)
    train = data.split("audio", "train")
    spk = np.asarray(train.speakers)
    z_src = modality_latents(src.model, "audio", train.examples)
    z_new = modality_latents(new.model, "audio", train.examples)
    np.testing.assert_allclose(z_new["z_audio"], z_src["z_audio"])  # the style is not touched
    assert linear_probe_accuracy(z_src["z_s"], spk, z_src["z_s"], spk) > 0.5
    assert linear_probe_accuracy(z_new["z_s"], spk, z_new["z_s"], spk) < 0.35
    # One map for every z^s head: an image's z^s moves as the fitted map says.
    images = torch.rand(4, 1, 28, 28)
    eraser = fit_group_eraser(z_src["z_s"], spk)
    with torch.no_grad():
        zi_src = src.model.unimodal["image"](images)["z_s"].mean.numpy()
        zi_new = new.model.unimodal["image"](images)["z_s"].mean.numpy()
    np.testing.assert_allclose(zi_new, eraser(zi_src), atol=1e-4)
    changed = {k for k, v in new.model.state_dict().items() if not torch.equal(v, src.model.state_dict()[k])}
    assert changed and all(".heads.z_s." in k for k in changed)
    assert load_run(run_dir).weights_sha256 == src.weights_sha256
    assert main(["erase", str(run_dir), "--out", str(out)]) == 2  # an existing folder is refused
    assert "exists" in capsys.readouterr().err


def test_erase_refuses_a_model_without_speech(tmp_path: Path):
    from dispart.config import load_config
    from dispart.features.fbank import FbankConfig
    from dispart.models import build_model
    from dispart.runs import save_run
    from dispart.training.erasure import erase_speaker
    from dispart.training.run import model_hparams

    cfg = load_config(None, ["model.name=vae", "model.modalities=[label]", "model.hidden=4",
                             "model.latent_dim=2"])
    save_run(tmp_path / "run", cfg, build_model(model_hparams(cfg)), None, FbankConfig(), {})
    with pytest.raises(RunDirError, match="PVAE over speech"):
        erase_speaker(tmp_path / "run", tmp_path / "out")


def test_train_on_from_an_erased_run_with_frozen_encoders(run_dir: Path, tmp_path: Path, capsys):
    """train.init_from + train.freeze: the decoders learn on the erased z^s while every encoder
    (and so the erasure) stays as it was; settings that differ, and a prefix naming nothing, are
    one clear error each."""
    erased = tmp_path / "erased"
    assert main(["erase", str(run_dir), "--out", str(erased)]) == 0
    tuned = tmp_path / "tuned"
    assert main(["train", str(erased / "config.yaml"), "--out", str(tuned), "train.epochs=1",
                 f"train.init_from={erased}", "train.freeze=[inference]", "train.progress_bar=false"]) == 0
    before, after = load_run(erased).model.state_dict(), load_run(tuned).model.state_dict()
    inference = [k for k in before if k.startswith("inference.")]
    assert inference and all(torch.equal(before[k], after[k]) for k in inference)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("generative."))
    assert main(["train", str(erased / "config.yaml"), "--out", str(tmp_path / "bad"), "train.epochs=1",
                 f"train.init_from={erased}", "model.hidden=16"]) == 2
    assert "differ from this config's in ['hidden']" in capsys.readouterr().err
    assert main(["train", str(erased / "config.yaml"), "--out", str(tmp_path / "bad2"), "train.epochs=1",
                 "train.freeze=[encoders]"]) == 2
    assert "'encoders' names no parameter" in capsys.readouterr().err
