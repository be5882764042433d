"""Models on an image-sequence ("frames") modality: video beside audio, paired by example.

References are independent of the code under test: numpy log-likelihoods of padded video
batches, each clip encoded alone and unpadded, hand-built zero inputs; padding is filled with
large garbage values so that any leak changes a value or a gradient.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import np64, sigmoid

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec
from dispart.distributions import BernoulliLikelihood, UnitGaussianLikelihood
from dispart.evaluation.likelihood import _repeat, log_marginal
from dispart.models import JMVAE, MVAE, PVAE, VAE, PlainJMVAE, mask_key
from dispart.models.jmvae import _zero_rows, zeros_for
from dispart.nn.modality import ClipDecoder, ClipEncoder, build_decoder, build_pre_encoder

pytestmark = pytest.mark.usefixtures("single_thread")

FRAME = (1, 9, 11)  # H, W not multiples of 4: the decoder must crop
AUDIO = ModalitySpec("audio", "sequence", (4,), frame_rate=25.0)
VIDEO = ModalitySpec("video", "frames", FRAME, frame_rate=25.0)
LENGTHS = [5, 2, 4, 3]
GARBAGE = 100.0
SHARED_GRID = Path(__file__).parents[1].parent / "shared" / "data" / "grid_s1"


def clips(lengths=LENGTHS, extra=1, seed=0, garbage=GARBAGE, grad=False) -> dict[str, Sequences]:
    """Audio (T, 4) and video (T, 1, 9, 11) of the same clips (equal lengths per row), padded to
    max(lengths) + ``extra`` frames filled with ``garbage``."""
    g = torch.Generator().manual_seed(seed)
    b, t = len(lengths), max(lengths)
    n = torch.tensor(lengths)
    valid = torch.arange(t + extra)[None, :] < n[:, None]
    audio = torch.cat([torch.randn(b, t, 4, generator=g), torch.zeros(b, extra, 4)], dim=1)
    video = torch.cat([torch.rand(b, t, *FRAME, generator=g), torch.zeros(b, extra, *FRAME)], dim=1)
    audio = torch.where(valid[..., None], audio, garbage)
    video = torch.where(valid[..., None, None, None], video, garbage)
    if grad:
        audio.requires_grad_(True)
        video.requires_grad_(True)
    return {"audio": Sequences(audio, n), "video": Sequences(video, n)}


def padded(x: Sequences) -> np.ndarray:
    """(B, T) bool, True past each length."""
    return np.arange(x.data.shape[1])[None, :] >= x.lengths.numpy()[:, None]


def build(name: str):
    torch.manual_seed(0)
    if name == "pvae":
        return PVAE([AUDIO, VIDEO], semantic_dim=3, style_dim=2, hidden=8)
    if name == "jmvae_kl":
        return JMVAE([AUDIO, VIDEO], latent_dim=3, hidden=8)
    if name == "jmvae":
        return PlainJMVAE([AUDIO, VIDEO], latent_dim=3, hidden=8)
    if name in ("mvae", "mvae_q"):
        return MVAE([AUDIO, VIDEO], latent_dim=3, hidden=8, quotient=name == "mvae_q")
    return VAE(VIDEO, latent_dim=3, hidden=8)


MODELS = ("pvae", "jmvae_kl", "jmvae", "mvae", "mvae_q", "vae")


def run_loss(model, batch):
    torch.manual_seed(3)
    if isinstance(model, PVAE):
        return model.loss(batch, negative_index=torch.tensor([1, 2, 3, 0]))
    return model.loss(batch)


# --------------------------------------------------------------------------- likelihoods


def test_gaussian_log_prob_of_padded_video_matches_numpy():
    g = torch.Generator().manual_seed(1)
    x = clips(extra=2)["video"]
    t = max(LENGTHS)
    params = torch.randn(4, t, *FRAME, generator=g, requires_grad=True)
    got = UnitGaussianLikelihood().log_prob(params, x)
    xd, mu = np64(x.data[:, :t]), np64(params)
    elem = -0.5 * math.log(2 * math.pi) - 0.5 * (xd - mu) ** 2
    valid = ~padded(Sequences(x.data[:, :t], x.lengths))
    want = (elem * valid[..., None, None, None]).sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(np64(got), want, rtol=1e-5)
    got.sum().backward()
    pad = padded(Sequences(x.data[:, :t], x.lengths))
    assert (params.grad[torch.from_numpy(pad)] == 0).all()
    assert (params.grad[torch.from_numpy(~pad)] != 0).any()


def test_bernoulli_log_prob_of_padded_video_matches_numpy():
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([3, 1])
    data = (torch.rand(2, 4, 3, 2, 2, generator=g) < 0.5).float()
    data[1, 1:] = 0.5  # padding that is not even binary
    logits = 3 * torch.randn(2, 3, 3, 2, 2, generator=g)
    got = BernoulliLikelihood().log_prob(logits, Sequences(data, lengths))
    lg, xd = np64(logits), np64(data[:, :3])
    elem = xd * np.log(sigmoid(lg)) + (1 - xd) * np.log(1 - sigmoid(lg))
    valid = (np.arange(3)[None, :] < lengths.numpy()[:, None])[..., None, None, None]
    np.testing.assert_allclose(np64(got), (elem * valid).sum(axis=(1, 2, 3, 4)), rtol=1e-5)


def test_log_prob_refuses_parameters_that_do_not_fit_the_frames():
    x = Sequences(torch.zeros(2, 3, 1, 4, 5), torch.tensor([3, 2]))
    with pytest.raises(ValueError, match=r"do not fit Sequences of data shape \(2, 3, 1, 4, 5\)"):
        UnitGaussianLikelihood().log_prob(torch.zeros(2, 3, 1, 4, 4), x)
    with pytest.raises(ValueError, match="do not fit"):  # fewer frames than the longest sequence
        UnitGaussianLikelihood().log_prob(torch.zeros(2, 2, 1, 4, 5), x)


# --------------------------------------------------------------------------- networks


def test_clip_encoder_is_each_clip_alone_and_ignores_padding():
    torch.manual_seed(0)
    enc = build_pre_encoder(VIDEO, hidden=8)
    assert isinstance(enc, ClipEncoder) and enc.out_dim == 8
    x = clips(extra=3)["video"]
    h = enc(x)
    assert h.shape == (4, 8)
    for b, n in enumerate(LENGTHS):
        alone = enc(Sequences(x.data[b:b + 1, :n], torch.tensor([n])))
        torch.testing.assert_close(h[b:b + 1], alone, rtol=1e-5, atol=1e-6)
    other = clips(extra=0, garbage=-7.0)["video"]
    torch.testing.assert_close(enc(other), h, rtol=1e-5, atol=1e-6)


def test_clip_decoder_shapes_zero_padding_and_frames_that_move():
    torch.manual_seed(0)
    dec = build_decoder(VIDEO, latent_dim=3, hidden=8)
    assert isinstance(dec, ClipDecoder)
    z = torch.randn(4, 3)
    lengths = torch.tensor(LENGTHS)
    out = dec(z, lengths)
    assert out.shape == (4, max(LENGTHS), *FRAME)
    pad = torch.from_numpy(padded(Sequences(out, lengths)))
    assert (out[pad] == 0).all() and torch.isfinite(out).all()
    # The latent is fed at every step of an LSTM: frames of one clip differ.
    assert (out[0, 0] - out[0, 4]).abs().max() > 1e-6
    # Rows are decoded independently of each other and of the others' lengths.
    alone = dec(z[1:2], torch.tensor([2]))
    torch.testing.assert_close(out[1:2, :2], alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, L\) static latent"):
        dec(torch.randn(4, 5, 3), lengths)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_finite_and_padded_frames_get_exactly_zero_gradient(name):
    model = build(name)
    batch = clips(grad=True)
    if name == "vae":
        batch = {"video": batch["video"]}
    out = run_loss(model, batch)
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.terms.values())
    out.loss.backward()
    for m, x in batch.items():
        pad = torch.from_numpy(padded(x))
        assert x.data.grad is not None, m
        assert (x.data.grad[pad] == 0).all(), f"{m}: gradient flows into padded frames"
        assert (x.data.grad[~pad] != 0).any(), f"{m}: no gradient on valid frames"
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ("pvae", "mvae", "jmvae_kl"))
def test_padding_changes_no_loss_term_or_parameter_gradient(name):
    model = build(name)
    results = []
    for extra, garbage in ((0, 0.0), (4, GARBAGE)):
        model.zero_grad()
        out = run_loss(model, clips(extra=extra, garbage=garbage))
        out.loss.backward()
        results.append((out.terms, {n: p.grad.clone() for n, p in model.named_parameters()
                                    if p.grad is not None}))
    (ta, ga), (tb, gb) = results
    for k in ta:
        assert ta[k].item() == pytest.approx(tb[k].item(), rel=1e-5, abs=1e-5), k
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", MODELS)
def test_encode_and_decode_shapes_on_audio_and_video(name):
    model = build(name).eval()
    batch = clips()
    if name == "vae":
        batch = {"video": batch["video"]}
    q = model.encode(batch)
    assert set(q) == set(model.latent_names("video")) | set().union(
        *(model.latent_names(m) for m in batch))
    for k, post in q.items():
        assert tuple(post.mean.shape) == (4, model.latents[k].size)
    z = {k: v.mean for k, v in q.items()}
    lengths = batch["video"].lengths
    if name != "vae" and name != "jmvae_kl":  # JMVAE-kl has no encoder for the video alone
        z.update({k: v.mean for k, v in model.encode({"video": batch["video"]}).items()
                  if k not in z})
    for m in batch:
        x = model.decode({k: z[k] for k in model.decoder_latents(m)}, m, lengths)
        assert tuple(x.shape) == (4, max(LENGTHS), *model.specs[m].shape)
        assert (x[torch.from_numpy(padded(Sequences(x, lengths)))] == 0).all()
    if name in ("pvae", "mvae", "mvae_q", "jmvae", "vae"):  # video alone
        r = model.encode({"video": batch["video"]})
        assert all(tuple(v.mean.shape) == (4, model.latents[k].size) for k, v in r.items())


def test_bernoulli_video_model_trains_on_binary_frames():
    spec = ModalitySpec("video", "frames", FRAME, "bernoulli")
    torch.manual_seed(0)
    model = MVAE([AUDIO, spec], latent_dim=3, hidden=8)
    batch = clips()
    batch["video"] = Sequences((batch["video"].data > 0.5).float(), batch["video"].lengths)
    out = model.loss(batch)
    assert torch.isfinite(out.loss)
    mean = model.decode({"z": torch.zeros(4, 3)}, "video", batch["video"].lengths)
    valid = torch.from_numpy(~padded(Sequences(mean, batch["video"].lengths)))
    assert ((mean[valid] > 0) & (mean[valid] < 1)).all()  # sigmoid of logits


def test_frames_inputs_are_checked_with_errors_naming_the_modality():
    model = build("pvae")
    x = clips()["video"]
    with pytest.raises(ValueError, match=r"modality 'video' expects Sequences of image frames"):
        model.encode({"video": x.data})
    bad = Sequences(torch.zeros(4, 5, 1, 8, 11), x.lengths)
    with pytest.raises(ValueError, match=r"modality 'video' expects frames of shape \(1, 9, 11\)"):
        model.encode({"video": bad})
    with pytest.raises(ValueError, match="decoding frames modality 'video' needs lengths"):
        model.decode({"z_s": torch.zeros(4, 3), "z_video": torch.zeros(4, 2)}, "video")


# --------------------------------------------------------------------------- missing video (JMVAE)


def test_zero_inputs_for_missing_video_rows_are_all_zero_single_frames():
    x = clips()["video"]
    z = zeros_for(VIDEO, 3, x.data)
    assert isinstance(z, Sequences) and tuple(z.data.shape) == (3, 1, *FRAME)
    assert (z.data == 0).all() and z.lengths.tolist() == [1, 1, 1]
    keep = torch.tensor([True, False, True, False])
    out = _zero_rows(x, keep, VIDEO)
    assert out.lengths.tolist() == [5, 1, 4, 1]
    assert (out.data[1] == 0).all() and (out.data[3] == 0).all()
    assert torch.equal(out.data[0], x.data[0]) and torch.equal(out.data[2], x.data[2])


def test_plain_jmvae_masked_video_rows_are_encoded_as_if_video_were_absent():
    model = build("jmvae").eval()
    batch = dict(clips())
    batch[mask_key("video")] = torch.tensor([True, False, True, False])
    with torch.no_grad():
        masked = model.encode(batch)["z"].mean
        audio_only = model.encode({"audio": batch["audio"]})["z"].mean
        full = model.encode({"audio": batch["audio"], "video": batch["video"]})["z"].mean
    torch.testing.assert_close(masked[[1, 3]], audio_only[[1, 3]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked[[0, 2]], full[[0, 2]], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- likelihood estimates


def test_importance_weighted_estimates_run_on_video():
    x = clips()["video"]
    rep = _repeat(x, 3)
    assert tuple(rep.data.shape) == (12, *x.data.shape[1:])
    for k in range(3):
        assert torch.equal(rep.data[4 * k:4 * k + 4], x.data)
        assert rep.lengths[4 * k:4 * k + 4].tolist() == LENGTHS
    model = build("vae")
    ests = []
    for extra, garbage in ((0, 0.0), (3, GARBAGE)):
        torch.manual_seed(5)
        ests.append(log_marginal(model, {"video": clips(extra=extra, garbage=garbage)["video"]}, k=4))
    assert ests[0].log_p.shape == (4,) and torch.isfinite(ests[0].log_p).all()
    torch.testing.assert_close(ests[0].log_p, ests[1].log_p, rtol=1e-5, atol=1e-4)
    torch.manual_seed(5)  # from the prior: the decoders still get each row's length
    prior = log_marginal(model, {"video": x}, proposal=(), k=4)
    assert torch.isfinite(prior.log_p).all()


# --------------------------------------------------------------------------- sample


def test_sample_decodes_prior_draws_for_the_given_lengths():
    model = build("pvae").train()
    g = torch.Generator().manual_seed(7)
    state = torch.get_rng_state()
    s = model.sample(3, "video", lengths=[4, 1, 2], generator=g)
    assert torch.equal(torch.get_rng_state(), state), "sample with a generator moved the global RNG"
    assert model.training, "sample did not restore the training mode"
    assert set(s.z) == set(model.latents)
    assert {k: tuple(v.shape) for k, v in s.z.items()} == {"z_s": (3, 3), "z_audio": (3, 2),
                                                          "z_video": (3, 2)}
    assert tuple(s.x.shape) == (3, 4, *FRAME) and s.lengths.tolist() == [4, 1, 2]
    assert (s.x[torch.from_numpy(padded(Sequences(s.x, s.lengths)))] == 0).all()
    assert not s.x.requires_grad
    again = model.sample(3, "video", lengths=[4, 1, 2], generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(s.z[k], again.z[k]) for k in s.z) and torch.equal(s.x, again.x)
    with torch.no_grad():
        decoded = model.eval().decode({k: s.z[k] for k in ("z_s", "z_video")}, "video", s.lengths)
    torch.testing.assert_close(s.x, decoded)
    one = model.sample(2, "audio", lengths=3)
    assert tuple(one.x.shape) == (2, 3, 4) and one.lengths.tolist() == [3, 3]


def test_sample_of_a_static_modality_needs_no_lengths_and_draws_standard_normals():
    model = MVAE([ModalitySpec("a", "vector", (3,)), ModalitySpec("b", "vector", (2,))],
                 latent_dim=4, hidden=8)
    s = model.sample(4000, "b", generator=torch.Generator().manual_seed(0))
    assert s.lengths is None and tuple(s.x.shape) == (4000, 2)
    z = np64(s.z["z"])
    assert np.abs(z.mean(0)).max() < 4 / math.sqrt(4000)
    assert np.abs(z.var(0) - 1).max() < 0.12


def test_sample_errors_name_the_bad_argument():
    model = build("pvae")
    with pytest.raises(ValueError, match=r"pvae.sample\('video'\): lengths is required"):
        model.sample(2, "video")
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        model.sample(2, "video", lengths=[3, 2, 1])
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        model.sample(2, "video", lengths=[3, 0])
    with pytest.raises(ValueError, match="lengths must hold integers"):
        model.sample(2, "video", lengths=torch.tensor([3.0, 2.0]))
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        model.sample(0, "video", lengths=[])
    with pytest.raises(ValueError, match="unknown modality 'image'"):
        model.sample(2, "image")


# --------------------------------------------------------------------------- real GRID clips


@pytest.fixture(scope="module")
def grid_corpus():
    if not SHARED_GRID.is_dir():
        pytest.skip(f"GRID clips not available at {SHARED_GRID} (development data only)")
    if importlib.util.find_spec("av") is None:
        pytest.skip("PyAV (import av) is not installed: GRID clips cannot be decoded")
    from dispart.batches.loaders import load_grid
    from dispart.data.config import DataConfig

    return load_grid(SHARED_GRID, DataConfig(audio=str(SHARED_GRID)), limit=2)


@pytest.mark.parametrize("name", ("pvae", "mvae"))
def test_models_on_two_real_grid_clips(grid_corpus, name):
    corpus = grid_corpus
    audio_spec, video_spec = corpus.specs["audio"], corpus.specs["video"]
    assert video_spec.kind == "frames" and len(video_spec.shape) == 3
    a = [np.asarray(e) for s in ("train", "test") for e in corpus.sets["audio"][s].examples]
    v = [np.asarray(e) for s in ("train", "test") for e in corpus.sets["video"][s].examples]
    cut = min(len(a[1]), len(v[1])) * 2 // 3  # make the second clip shorter: real padding
    a[1], v[1] = a[1][:cut], v[1][:cut]
    stack = np.concatenate(a)
    a = [(x - stack.mean(0)) / (stack.std(0) + 1e-6) for x in a]
    batch = {"audio": Sequences.from_list(a), "video": Sequences.from_list(v)}
    assert batch["audio"].lengths.tolist() == batch["video"].lengths.tolist()
    batch["video"].data.requires_grad_(True)
    torch.manual_seed(0)
    if name == "pvae":
        model = PVAE([audio_spec, video_spec], semantic_dim=4, style_dim=2, hidden=16)
        out = model.loss(batch, negative_index=torch.tensor([1, 0]))
    else:
        model = MVAE([audio_spec, video_spec], latent_dim=4, hidden=16)
        out = model.loss(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    pad = torch.from_numpy(padded(batch["video"]))
    assert pad.any() and (batch["video"].data.grad[pad] == 0).all()
    model.eval()
    with torch.no_grad():
        z = {k: q.mean for k, q in model.encode({"video": batch["video"]}).items()}
        if name == "pvae":
            z["z_audio"] = torch.zeros(2, 2)
        for m in ("audio", "video"):
            x = model.decode({k: z[k] for k in model.decoder_latents(m)}, m, batch[m].lengths)
            assert x.shape == batch[m].data.shape
        s = model.sample(2, "video", lengths=batch["video"].lengths)
    assert s.x.shape == batch["video"].data.shape and torch.isfinite(s.x).all()
