"""MDVAE (issue 11): the model, its inference dependencies and ELBO, the frozen stage-1 VQ-VAEs,
the experiment helpers, and two-stage training in one command (resumable).

Inference dependencies (slides, "MDVAE inference model"): q(z_av,t | z_av,1:t-1, x_a,t:T, x_v,t:T, w),
q(z_a,t | z_a,1:t-1, x_a,t:T, z_av,t, w), q(z_v,t | z_v,1:t-1, x_v,t:T, z_av,t, w). With w, the
previous values of every recurrence and z_av *given* (teacher forcing, ``infer(given=...)``),
changing the audio at frame t must move q(z_av,s) and q(z_a,s) exactly for s <= t and leave them
unchanged for s > t, and must leave q(z_v) unchanged at every frame; with the recurrences fed
their own posterior means (``encode``), the change reaches later frames through z_av,1:s-1 and
q(z_v) through z_av and w.

Two-stage training runs on a synthetic audio-visual corpus registered here as the loader
"test_av_clips" (12-bin "audio" frames and 3 x 16 x 16 "video" frames, 6 per clip), never on
another helper's loader.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import kl_diag, kl_std, lstm_prior_params, np64

from dispart.batches.batch import Sequences
from dispart.batches.corpus import Corpus, register_loader
from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.cli import main
from dispart.config import load_config
from dispart.errors import RunDirError
from dispart.files import file_sha256
from dispart.models import build_model
from dispart.models.mdvae import MDVAE
from dispart.models.vqvae import Encodings
from dispart.runs import load_run

pytestmark = pytest.mark.usefixtures("single_thread")

A = {"name": "audio", "kind": "sequence", "shape": [5]}
V = {"name": "video", "kind": "frames", "shape": [3, 16, 16], "likelihood": "bernoulli"}
SIZES = {"w_dim": 3, "zav_dim": 2, "za_dim": 4, "zv_dim": 5, "hidden": 8, "prior_hidden": 6,
         "vq_code_dim": 2, "vq_codebook_size": 8, "vq_hidden": 8, "vq_conv_width": 4, "vq_frame_codes": 2}


def build(mods=(A, V), **kw) -> MDVAE:
    torch.manual_seed(0)
    return build_model({"name": "mdvae", "modalities": list(mods), **SIZES, **kw})


def av_batch(lengths=(5, 3, 4), seed: int = 0, mods=("audio", "video")) -> dict[str, Sequences]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    if "audio" in mods:
        out["audio"] = Sequences.from_list([torch.randn(n, 5, generator=g) for n in lengths])
    if "video" in mods:
        out["video"] = Sequences.from_list([torch.rand(n, 3, 16, 16, generator=g) for n in lengths])
    return out


def with_frame(batch, modality: str, t: int, delta: float = 1.0) -> dict[str, Sequences]:
    """``batch`` with frame t of ``modality`` changed in every row."""
    x = batch[modality]
    data = x.data.clone()
    data[:, t] = data[:, t] + delta
    return {**batch, modality: Sequences(data, x.lengths)}


def moved(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(T,) whether frame s differs in any row/dimension (exact comparison)."""
    return (a != b).flatten(2).any(-1).any(0).numpy() if a.dim() == 3 else np.array([bool((a != b).any())])


# --------------------------------------------------------------------------- declarations


def test_latents_roles_and_decoders():
    model = build()
    got = {k: (v.role, v.dynamic, v.modalities, v.size) for k, v in model.latents.items()}
    assert got == {"w": ("style", False, ("audio", "video"), 3),
                   "z_av": ("content", True, ("audio", "video"), 2),
                   "z_a": ("style", True, ("audio",), 4),
                   "z_v": ("style", True, ("video",), 5)}
    assert model.decoder_latents("audio") == ("w", "z_av", "z_a")
    assert model.decoder_latents("video") == ("w", "z_av", "z_v")
    assert [p.size for p in model.priors.values()] == [3, 2, 4, 5]
    for m in ("audio", "video"):  # A-DSAE / V-DSAE: the same class over one modality
        one = build([A if m == "audio" else V])
        got = {k: (v.role, v.dynamic, v.modalities) for k, v in one.latents.items()}
        assert got == {"w": ("style", False, (m,)), "z": ("content", True, (m,))}
    with pytest.raises(ValueError, match="one 'sequence'"):
        build([A, {**A, "name": "speech"}])


def test_mdvae_infers_from_both_modalities_with_equal_lengths_only():
    model = build().eval()
    batch = av_batch()
    with pytest.raises(ValueError, match=r"lacks \['video'\].*A-DSAE / V-DSAE"):
        model.encode({"audio": batch["audio"]})
    other = av_batch(lengths=(5, 3, 3))
    with pytest.raises(ValueError, match="same number of frames"):
        model.encode({"audio": batch["audio"], "video": other["video"]})
    with pytest.raises(ValueError, match="marked absent"):
        model.encode({**batch, "video:present": torch.tensor([True, False, True])})
    with pytest.raises(ValueError, match="'video'"):
        model.encode({**batch, "video": Sequences(batch["video"].data[..., :8], batch["video"].lengths)})


# --------------------------------------------------------------------------- inference


@torch.no_grad()
def test_inference_dependencies_when_the_audio_changes_at_frame_t():
    model = build().eval()
    batch, t = av_batch(lengths=(6, 6), seed=1), 2
    changed = with_frame(batch, "audio", t)
    g = torch.Generator().manual_seed(5)
    given = {k: torch.randn(2, *((6,) if v.dynamic else ()), v.size, generator=g)
             for k, v in model.latents.items()}
    before, after = (model.infer(b, given=given)[0] for b in (batch, changed))
    early = np.arange(6) <= t
    # w, every previous value and z_av given: frames s <= t move, later ones do not
    assert moved(before["z_av"].mean, after["z_av"].mean).tolist() == early.tolist()
    assert moved(before["z_a"].mean, after["z_a"].mean).tolist() == early.tolist()
    assert moved(before["z_a"].stddev, after["z_a"].stddev).tolist() == early.tolist()
    assert not moved(before["z_v"].mean, after["z_v"].mean).any()  # the video posterior ignores x_a
    assert not moved(before["z_v"].stddev, after["z_v"].stddev).any()
    assert moved(before["w"].mean, after["w"].mean).all()  # q(w | x_a, x_v) reads every frame
    # z_v's own recurrence on its means, w and z_av given: still unchanged
    part = {k: given[k] for k in ("w", "z_av")}
    b2, a2 = (model.infer(b, given=part)[0] for b in (batch, changed))
    assert not moved(b2["z_v"].mean, a2["z_v"].mean).any()
    # w given, z_av fed its own means: later frames of z_av move through z_av,1:s-1 ...
    b3, a3 = (model.infer(b, given={"w": given["w"]})[0] for b in (batch, changed))
    assert moved(b3["z_av"].mean, a3["z_av"].mean).all()
    # ... and q(z_v) moves through z_av (and, without w given, through w)
    assert moved(b3["z_v"].mean, a3["z_v"].mean).all()
    b4, a4 = (model.encode(b) for b in (batch, changed))
    assert all(moved(b4[k].mean, a4[k].mean).any() for k in model.latents)


@torch.no_grad()
def test_inference_dependencies_when_the_video_changes_and_padding_changes_nothing():
    model = build().eval()
    batch, t = av_batch(lengths=(6, 4), seed=2), 1
    g = torch.Generator().manual_seed(6)
    given = {k: torch.randn(2, *((6,) if v.dynamic else ()), v.size, generator=g)
             for k, v in model.latents.items()}
    before = model.infer(batch, given=given)[0]
    after = model.infer(with_frame(batch, "video", t, 0.5), given=given)[0]
    early = (np.arange(6) <= t).tolist()
    assert moved(before["z_v"].mean, after["z_v"].mean).tolist() == early
    assert moved(before["z_av"].mean, after["z_av"].mean).tolist() == early
    assert not moved(before["z_a"].mean, after["z_a"].mean).any()
    # frame 5 is padding in row 1: changing it there changes nothing in that row
    x = batch["video"]
    data = x.data.clone()
    data[1, 5] = 7.0
    padded = model.encode({**batch, "video": Sequences(data, x.lengths)})
    ref = model.encode(batch)
    assert all(torch.equal(padded[k].mean[1], ref[k].mean[1]) for k in ref)


def test_step_by_step_draws_are_the_teacher_forced_posterior():
    """The recurrences fed their own draws (the ELBO) or means (encode) give the posteriors that
    teacher forcing on those values gives, all frames at once."""
    model = build().eval()
    batch = av_batch()
    torch.manual_seed(3)
    q, z = model.infer(batch, sample=True)
    q_forced, z_forced = model.infer(batch, given=z)
    for k in q:
        torch.testing.assert_close(q[k].mean, q_forced[k].mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(q[k].stddev, q_forced[k].stddev, rtol=1e-5, atol=1e-6)
        assert torch.equal(z[k], z_forced[k])
    q_mean, z_mean = model.infer(batch)
    q_again, _ = model.infer(batch, given=z_mean)
    for k in q_mean:
        torch.testing.assert_close(q_mean[k].mean, q_again[k].mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(z_mean[k], q_mean[k].mean)
    lengths = batch["audio"].lengths
    for k in ("z_av", "z_a", "z_v"):
        pad = torch.arange(5)[None, :] >= lengths[:, None]
        assert (z[k][pad] == 0).all() and (q[k].mean[pad] == 0).all() and (q[k].stddev[pad] == 1).all()


# --------------------------------------------------------------------------- ELBO


@pytest.mark.parametrize("betas", [(1.0, 1.0), (2.0, 0.5)])
def test_loss_is_the_elbo_of_the_draws_computed_by_hand(betas):
    """KL(w) in closed form, every dynamic KL against its LSTM prior teacher-forced on the draw
    (numpy recurrence) summed over valid frames, the Gaussian log-likelihood of the encodings."""
    model = build(beta_w=betas[0], beta_z=betas[1]).train()
    batch = av_batch()
    torch.manual_seed(11)
    with torch.no_grad():
        out = model.loss(batch)
    torch.manual_seed(11)
    with torch.no_grad():
        q, z = model.infer(batch, sample=True)  # the same draws, in the same order
        enc = {m: model.observed(m, batch[m]) for m in batch}
        params = {m: np64(model.decode_params(z, m, enc[m].lengths)) for m in batch}
    mask = np64(batch["audio"].mask())
    kl = {"w": kl_std(q["w"].mean, 2 * torch.log(q["w"].stddev))}
    for k in ("z_av", "z_a", "z_v"):
        p_mean, p_logvar = lstm_prior_params(model.priors[k], z[k])
        per_frame = kl_diag(q[k].mean, 2 * torch.log(q[k].stddev), p_mean, p_logvar)
        kl[k] = (per_frame * mask).sum(1)
    rec = {}
    for m in batch:
        e = np64(enc[m].data)
        elem = -0.5 * math.log(2 * math.pi) - 0.5 * (e - params[m]) ** 2
        rec[m] = (elem.sum(-1) * mask).sum(1)
    elbo = rec["audio"] + rec["video"] - sum(kl.values())
    for k in kl:
        np.testing.assert_allclose(float(out.terms[f"kl_{k}"]), kl[k].mean(), rtol=1e-4, atol=1e-5)
    for m in rec:
        np.testing.assert_allclose(float(out.terms[f"rec_{m}"]), -rec[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(out.terms["elbo"]), elbo.mean(), rtol=1e-5)
    dynamic = kl["z_av"] + kl["z_a"] + kl["z_v"]
    weighted = rec["audio"] + rec["video"] - betas[0] * kl["w"] - betas[1] * dynamic
    np.testing.assert_allclose(float(out.loss), -weighted.mean(), rtol=1e-5)


def test_optimal_obs_scale_is_the_batch_residual_variance_of_each_dimension():
    """obs_scale="optimal": in training p(e | .) = N(mean, diag(v)) with v_d the mean squared
    residual of dimension d over the batch's valid frames (held fixed in the gradient); its EMA
    (momentum 0.99) is the variance outside training; padded frames count in neither."""
    model = build(obs_scale="optimal").train()
    assert not hasattr(build(), "obs_var_video")  # the unit-variance default has no buffer
    batch = av_batch()
    with torch.no_grad():
        q, z = model.infer(batch)
    mask = np64(batch["audio"].mask()).astype(bool)
    for m in ("audio", "video"):
        enc = model.observed(m, batch[m])
        mean = model.decode_params(z, m, enc.lengths)
        resid = np64(enc.data) - np64(mean)
        var = np.maximum((resid[mask] ** 2).mean(0), 1e-6)
        before = np64(getattr(model, f"obs_var_{m}")).copy()
        got = model.reconstruction_log_prob(z, m, enc)
        elem = -0.5 * np.log(2 * math.pi * var) - 0.5 * resid ** 2 / var
        np.testing.assert_allclose(np64(got), (elem.sum(-1) * mask).sum(1), rtol=1e-5)
        ema = np64(getattr(model, f"obs_var_{m}"))
        np.testing.assert_allclose(ema, 0.99 * before + 0.01 * var, rtol=1e-5)
        # the variance carries no gradient: d log p / d mean = resid / v exactly
        leaf = mean.detach().clone().requires_grad_(True)
        model.decode_params = lambda *args, leaf=leaf, **kw: leaf  # instance attribute: this test only
        (grad,) = torch.autograd.grad(model.reconstruction_log_prob(z, m, enc).sum(), leaf)
        del model.decode_params
        np.testing.assert_allclose(np64(grad), resid / var * mask[..., None], rtol=1e-4, atol=1e-6)
        ema = np64(getattr(model, f"obs_var_{m}"))  # (the second training call moved it again)
        model.eval()
        with torch.no_grad():
            evald = model.reconstruction_log_prob(z, m, enc)
        elem = -0.5 * np.log(2 * math.pi * ema) - 0.5 * resid ** 2 / ema
        np.testing.assert_allclose(np64(evald), (elem.sum(-1) * mask).sum(1), rtol=1e-5)
        np.testing.assert_allclose(np64(getattr(model, f"obs_var_{m}")), ema)  # eval leaves it
        model.train()
    with pytest.raises(ValueError, match="obs_scale must be one of"):
        build(obs_scale="learned")


def test_the_likelihood_is_over_the_frozen_encodings_and_decode_goes_through_the_vq_vae():
    model = build().eval()
    batch = av_batch()
    with torch.no_grad():
        enc = model.observed("video", batch["video"])
        assert isinstance(enc, Encodings) and enc.data.shape == (3, 5, 64 * 2)
        torch.testing.assert_close(enc.data, model.vq["video"].encode_frames(batch["video"]))
        z = {k: v.mean for k, v in model.encode(batch).items()}
        lengths = batch["video"].lengths
        e = model.decode_params(z, "video", lengths)
        frames = model.decode(z, "video", lengths)
        torch.testing.assert_close(frames, model.vq["video"].decode_codes(e, lengths))
        assert frames.shape == (3, 5, 3, 16, 16) and ((frames[0] > 0) & (frames[0] < 1)).all()
        # raw frames and their encodings give the same log-likelihood
        torch.testing.assert_close(model.reconstruction_log_prob(z, "video", batch["video"]),
                                   model.reconstruction_log_prob(z, "video", enc))


# --------------------------------------------------------------------------- stage 1 in stage 2


def _trained_vqvae(model: MDVAE, spec: dict, batch) -> torch.nn.Module:
    """A stage-1 VQ-VAE with the model's vq_* config, one Adam step away from its start."""
    torch.manual_seed(1)
    vq = build_model({"name": "vq_vae", "modalities": [spec],
                      **{k: v for k, v in vars(model.stage1_config()).items()}})
    opt = torch.optim.Adam(vq.parameters(), lr=0.01)
    vq.train().loss({spec["name"]: batch[spec["name"]]}).loss.backward()
    opt.step()
    return vq.eval()


def test_stage_two_loads_the_stage_one_weights_and_keeps_them_frozen():
    from dispart.training.module import LitModel

    batch = av_batch()
    lit = LitModel({"name": "mdvae", "modalities": [A, V], **SIZES}, lr=0.01)
    model = lit.model
    stage1 = {"audio": _trained_vqvae(model, A, batch), "video": _trained_vqvae(model, V, batch)}
    for m, vq in stage1.items():
        model.load_stage1(m, vq)
        loaded = model.vq[m].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in vq.frame_state().items())
        with torch.no_grad():
            torch.testing.assert_close(model.observed(m, batch[m]).data, vq.encode_frames(batch[m]))
    assert all(not p.requires_grad for p in model.vq.parameters())
    frozen = {k: v.clone() for k, v in model.vq.state_dict().items()}  # weights and EMA buffers
    trainable = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    opt = lit.configure_optimizers()
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad}
    model.train()
    assert not any(mod.training for mod in model.vq.modules())  # the VQ-VAEs stay in eval mode
    for _ in range(2):
        opt.zero_grad()
        model.loss(batch).loss.backward()
        assert all(p.grad is None for p in model.vq.parameters())
        opt.step()
    after = model.vq.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert all(not torch.equal(dict(model.named_parameters())[k], v) for k, v in trainable.items())


def test_load_stage1_refuses_a_vq_vae_of_another_shape():
    model = build()
    batch = av_batch()
    config = {**vars(model.stage1_config()), "code_dim": 3}
    other = build_model({"name": "vq_vae", "modalities": [A], **config})
    with pytest.raises(ValueError, match="vq_\\* fields"):
        model.load_stage1("audio", other)
    with pytest.raises(ValueError, match="trained on"):
        model.load_stage1("video", _trained_vqvae(model, {**V, "likelihood": "gaussian"}, batch))


# --------------------------------------------------------------------------- experiment helpers


def test_reconstruct_and_transfer():
    model = build().eval()
    target, source = av_batch(seed=3), av_batch(seed=4)
    lengths = target["video"].lengths
    with torch.no_grad():
        zt = {k: v.mean for k, v in model.encode(target).items()}
        zs = {k: v.mean for k, v in model.encode(source).items()}
        want = model.decode(zt, "video", lengths)
    torch.testing.assert_close(model.reconstruct(target), want)  # default: the video
    torch.testing.assert_close(model.reconstruct(target, "audio"), model.decode(zt, "audio", lengths))
    same = model.transfer(target, target, ("z_av", "z_v"))
    torch.testing.assert_close(same["video"], want)
    for names in [("z_av",), ("z_v",), ("z_av", "z_v"), ("w",)]:
        got = model.transfer(target, source, names)
        z = {**zt, **{k: zs[k] for k in names}}
        with torch.no_grad():
            for m in ("audio", "video"):
                torch.testing.assert_close(got[m], model.decode(z, m, lengths))
            # the transferred latents reach the video (in encoding space: an untrained 8-code
            # VQ-VAE may quantise both to the same codes)
            assert not torch.equal(model.decode_params(z, "video", lengths),
                                   model.decode_params(zt, "video", lengths))
    assert set(model.transfer(target, source, modalities=["video"])) == {"video"}
    with pytest.raises(ValueError, match="unknown latents"):
        model.transfer(target, source, ("f",))
    with pytest.raises(ValueError, match="at least as long"):
        model.transfer(target, av_batch(lengths=(2, 2, 2)))
    assert model.posterior_means(target).keys() == model.latents.keys()
    assert not model.training


# --------------------------------------------------------------------------- two-stage training

T, S, NB = 6, 16, 12


def _clips(n: int, seed: int) -> tuple[ModalitySet, ModalitySet]:
    rng = np.random.default_rng(seed)
    audio, video, labels = [], [], []
    for _ in range(n):
        c = int(rng.integers(3))
        audio.append((rng.standard_normal((T, NB)) + c).astype(np.float32))
        frames = 0.1 * rng.random((T, 3, S, S)).astype(np.float32)
        frames[:, c] += 0.5
        video.append(frames)
        labels.append(str(c))
    ids = [f"{seed}-{i}" for i in range(n)]
    return ModalitySet(audio, labels, ids=ids), ModalitySet(video, labels, ids=ids)


@register_loader("test_av_clips")
def _load_av_clips(cfg, progress: bool = True) -> Corpus:
    (a_tr, v_tr), (a_te, v_te) = _clips(40, 0), _clips(12, 1)
    specs = {"audio": ModalitySpec("audio", "sequence", (NB,), frame_rate=25.0),
             "video": ModalitySpec("video", "frames", (3, S, S), "bernoulli", frame_rate=25.0)}
    return Corpus({"audio": {"train": a_tr, "test": a_te}, "video": {"train": v_tr, "test": v_te}}, specs,
                  pairing="example")


CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mdvae_grid.yaml"
TINY = ["data.loader=test_av_clips", "model.w_dim=3", "model.zav_dim=2", "model.za_dim=2", "model.zv_dim=2",
        "model.hidden=8", "model.prior_hidden=8", "model.vq_code_dim=2", "model.vq_codebook_size=8",
        "model.vq_hidden=8", "model.vq_conv_width=4", "model.vq_frame_codes=2", "model.vq_downsample=0",
        "model.stage1_epochs=2",
        "train.epochs=1", "train.batch_size=16", "train.progress_bar=false", "train.log_every_n_steps=1"]


def _train(out: Path, *extra: str, resume: bool = False, overwrite: bool = False) -> dict:
    from dispart.training.run import train

    return train(load_config(CONFIG, [*TINY, *extra]), out, resume=resume, overwrite=overwrite)


def _mtimes(run: Path) -> dict[str, int]:
    return {m: os.stat(run / f"stage1_{m}" / "model.safetensors").st_mtime_ns for m in ("audio", "video")}


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("mdvae") / "run"
    assert main(["train", str(CONFIG), "--out", str(run), *TINY]) == 0  # one command, both stages
    return run


def test_one_command_trains_both_stages(two_stage):
    run = two_stage
    stage2 = load_run(run)
    assert stage2.model.name == "mdvae" and stage2.config.model.stage1_epochs == 2
    sha = {}
    for m in ("audio", "video"):
        s1 = load_run(run / f"stage1_{m}")  # an ordinary, finished run folder
        assert s1.model.name == "vq_vae" and s1.model.modalities == (m,)
        assert s1.config.train.epochs == 2 and s1.config.model.display_name == "MDVAE stage 1 (" + m + ")"
        sha[m] = file_sha256(run / f"stage1_{m}" / "model.safetensors")
        state = stage2.model.vq[m].state_dict()
        assert all(torch.equal(state[k], v) for k, v in s1.model.frame_state().items())
    record = {m: {"path": f"stage1_{m}", "weights_sha256": h} for m, h in sha.items()}
    assert stage2.info["data"]["stage1"] == record  # run.json
    assert json.loads((run / "stage1.json").read_text()) == {"format": 1, "stage1": record}
    assert json.loads((run / "train_summary.json").read_text())["stage1"] == record
    assert all(not p.requires_grad for p in stage2.model.vq.parameters())


def test_resume_skips_a_finished_stage_one_and_resumes_an_interrupted_one(two_stage, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_stage, run)
    before = _mtimes(run)
    sha = {m: v["weights_sha256"] for m, v in load_run(run).info["data"]["stage1"].items()}
    # stage 1 of the video interrupted after its last checkpoint, stage 2 not started
    for name in ("run.json", "model.safetensors", "train_summary.json"):
        (run / "stage1_video" / name).unlink()
    for name in ("checkpoints", "logs"):
        shutil.rmtree(run / name)
    for name in ("config.yaml", "run.json", "model.safetensors", "train_summary.json"):
        (run / name).unlink()
    with pytest.raises(RunDirError, match="pass --resume"):
        _train(run)
    _train(run, resume=True)
    after = _mtimes(run)
    assert after["audio"] == before["audio"]  # finished: skipped
    assert after["video"] != before["video"]  # resumed from its checkpoint (and written again) ...
    assert file_sha256(run / "stage1_video" / "model.safetensors") == sha["video"]  # ... to the same weights
    assert {m: v["weights_sha256"] for m, v in load_run(run).info["data"]["stage1"].items()} == sha
    # a finished two-stage run resumes to itself
    _train(run, resume=True)
    assert _mtimes(run) == after


def test_a_changed_stage_one_is_detected(two_stage, tmp_path):
    import shutil

    from dispart.training.run import train
    from dispart.training.stages import stage1_config

    run = tmp_path / "run"
    shutil.copytree(two_stage, run)
    cfg = load_config(CONFIG, TINY)
    s1 = stage1_config(cfg, "video")
    s1.train.seed = 1  # other weights
    train(s1, run / "stage1_video", overwrite=True)
    with pytest.raises(RunDirError, match="stage 1 changed"):
        _train(run, resume=True)
    # after deleting stage 2's checkpoints (as the message says) stage 2 trains on the new stage 1
    shutil.rmtree(run / "checkpoints")
    _train(run, resume=True)
    new = file_sha256(run / "stage1_video" / "model.safetensors")
    assert load_run(run).info["data"]["stage1"]["video"]["weights_sha256"] == new


def test_unimodal_counterpart_reuses_the_stage_one_runs(two_stage, tmp_path):
    out = tmp_path / "vdsae"
    _train(out, "model.modalities=[video]", "model.display_name=V-DSAE", f"model.stage1_dir={two_stage}")
    assert not any(p.name.startswith("stage1_") for p in out.iterdir())
    loaded = load_run(out)
    assert set(loaded.model.latents) == {"w", "z"}
    assert loaded.info["data"]["stage1"] == {"video": {
        "path": str(two_stage / "stage1_video"),
        "weights_sha256": file_sha256(two_stage / "stage1_video" / "model.safetensors")}}
    vq = load_run(two_stage / "stage1_video").model.frame_state()
    assert all(torch.equal(loaded.model.vq["video"].state_dict()[k], v) for k, v in vq.items())
    with pytest.raises(RunDirError, match="not a finished stage-1 run"):
        _train(tmp_path / "adsae", "model.modalities=[audio]", f"model.stage1_dir={tmp_path}")


def test_overwrite_starts_both_stages_over(two_stage, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_stage, run)
    before = _mtimes(run)
    _train(run, overwrite=True)
    after = _mtimes(run)
    assert all(after[m] != before[m] for m in before)
    assert {m: v["weights_sha256"] for m, v in load_run(run).info["data"]["stage1"].items()} == {
        m: file_sha256(run / f"stage1_{m}" / "model.safetensors") for m in ("audio", "video")}
