"""The frame-wise VQ-VAE (stage 1 of MDVAE, issue 11 item 2) and its codebook layer.

Checked by hand (numpy, float64): the straight-through gradient, the EMA codebook update (with
its Laplace smoothing), the codebook loss, the data-dependent initialisation, and every term of
the VQ-VAE loss on a tiny padded batch (nearest codes, commitment, reconstruction).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_helpers import np64

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec
from dispart.models import build_model
from dispart.models.vqvae import VQVAE, FrameVQ, VQVAEConfig
from dispart.nn.quantize import VectorQuantizer

pytestmark = pytest.mark.usefixtures("single_thread")

AUDIO = {"name": "audio", "kind": "sequence", "shape": [5]}
VIDEO = {"name": "video", "kind": "frames", "shape": [3, 16, 16], "likelihood": "bernoulli"}


def tiny(spec: dict, **kw) -> VQVAE:
    torch.manual_seed(0)
    args = {"code_dim": 3, "codebook_size": 6, "hidden": 8, "conv_width": 4, "frame_codes": 2, **kw}
    return build_model({"name": "vq_vae", "modalities": [spec], **args})


def audio_batch(lengths=(4, 2, 3), seed: int = 0) -> dict[str, Sequences]:
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, 5, generator=g) for n in lengths]
    return {"audio": Sequences.from_list(seqs)}


# --------------------------------------------------------------------------- the codebook layer


def test_straight_through_gradient_is_the_identity_and_commitment_trains_the_encoder_only():
    vq = VectorQuantizer(4, 3, beta=0.25)
    z = torch.randn(5, 3, requires_grad=True)
    out = vq(z)
    np.testing.assert_allclose(np64(out.z_q), np64(vq.codebook[out.indices]), atol=1e-6)  # the code forward
    w = torch.randn(5, 3)
    (out.z_q * w).sum().backward()
    assert torch.equal(z.grad, w)  # ... and the identity backward
    z.grad = None
    out = vq(z)
    out.commitment.sum().backward()
    e = np64(vq.codebook[out.indices])
    np.testing.assert_allclose(np64(z.grad), 2 * 0.25 * (np64(z) - e), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np64(out.commitment), 0.25 * ((np64(z) - e) ** 2).sum(1), rtol=1e-5)
    assert not out.codebook.any()  # EMA: no codebook loss


def test_nearest_code_by_hand():
    vq = VectorQuantizer(5, 2)
    z = torch.randn(20, 2)
    d = ((np64(z)[:, None] - np64(vq.codebook)[None]) ** 2).sum(-1)
    assert vq.nearest(z).tolist() == d.argmin(1).tolist()


def test_ema_update_moves_the_chosen_code_toward_its_inputs():
    vq = VectorQuantizer(3, 2, decay=0.9, restart=0, eps=1e-5)
    vq.initialised.fill_(True)  # skip the data-dependent initialisation
    codebook = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0]])
    vq.codebook.copy_(codebook)
    vq.code_sum.copy_(codebook * torch.tensor([2.0, 1.0, 1.0])[:, None])
    vq.cluster_size.copy_(torch.tensor([2.0, 1.0, 1.0]))
    z = torch.tensor([[1.0, 0.5], [2.0, 1.5], [0.5, -0.5]])  # all nearest to code 0
    vq.train()
    out = vq(z, update=True)
    # by hand: N <- 0.9 N + 0.1 n, m <- 0.9 m + 0.1 sum z, Laplace-smoothed N, e = m / N
    n = 0.9 * np.array([2.0, 1.0, 1.0]) + 0.1 * np.array([3.0, 0.0, 0.0])
    m = 0.9 * np64(codebook) * np.array([2.0, 1.0, 1.0])[:, None]
    m[0] += 0.1 * np64(z).sum(0)
    smoothed = (n + 1e-5) / (n.sum() + 3e-5) * n.sum()
    np.testing.assert_allclose(np64(vq.codebook), m / smoothed[:, None], rtol=1e-5)
    np.testing.assert_allclose(np64(vq.cluster_size), n, rtol=1e-6)
    before, after = np.zeros(2), np64(vq.codebook[0])
    mean = np64(z).mean(0)
    assert np.linalg.norm(after - mean) < np.linalg.norm(before - mean)  # toward its inputs
    assert out.indices.tolist() == [0, 0, 0]
    # codes nobody chose decay toward 0 count but keep their position
    np.testing.assert_allclose(np64(vq.codebook[1:]), np64(codebook[1:]) * (0.9 / 0.9), rtol=1e-3)
    # no update without update=True (evaluation)
    frozen = vq.codebook.clone()
    vq(z)
    assert torch.equal(vq.codebook, frozen)


def test_unused_codes_restart_on_input_rows():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, decay=0.5, restart=1.0)
    vq.initialised.fill_(True)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]))
    vq.code_sum.copy_(vq.codebook * 4)
    vq.cluster_size.fill_(4.0)
    z = torch.randn(8, 2) * 0.1  # all nearest to code 0
    vq(z, update=True)  # counts of codes 1-3: 0.5 * 4 = 2 >= 1, kept
    assert vq.codebook[1:].min() > 40
    vq(z, update=True)  # now 1 >= 1, kept
    vq(z, update=True)  # 0.5 < 1: restarted on rows of z, with a count of 1
    rows = {tuple(r) for r in np64(z).round(5)}
    assert {tuple(r) for r in np64(vq.codebook[1:]).round(5)} <= rows
    assert vq.cluster_size[1:].tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(np64(vq.code_sum[1:]), np64(vq.codebook[1:]))
    assert vq.cluster_size[0] > 1  # the code in use is not restarted


def test_codebook_loss_trains_the_codebook_without_ema():
    vq = VectorQuantizer(4, 3, ema=False)
    assert isinstance(vq.codebook, torch.nn.Parameter)
    z = torch.randn(6, 3)
    out = vq(z)
    out.codebook.sum().backward()
    expected = np.zeros((4, 3))
    for i, k in enumerate(out.indices.tolist()):
        expected[k] += 2 * (np64(vq.codebook[k]) - np64(z[i]))
    np.testing.assert_allclose(np64(vq.codebook.grad), expected, rtol=1e-5, atol=1e-6)


def test_first_training_call_puts_the_codes_on_input_rows():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2)
    z = torch.randn(10, 2) + 100
    vq(z, update=False)
    assert not bool(vq.initialised)
    vq(z, update=True)
    assert bool(vq.initialised)
    # after the init each code is an input row (near 100, far from the N(0, I) start); the EMA
    # step then pulls it to its cluster's mean, still near 100
    assert vq.codebook.min() > 90
    few = VectorQuantizer(8, 2)
    few(torch.randn(3, 2), update=True)  # fewer rows than codes: drawn with replacement
    assert torch.isfinite(few.codebook).all()


def test_perplexity():
    vq = VectorQuantizer(4, 2)
    assert math.isclose(float(vq.perplexity(torch.tensor([1, 1, 1]))), 1.0, rel_tol=1e-6)
    assert math.isclose(float(vq.perplexity(torch.tensor([0, 1, 2, 3]))), 4.0, rel_tol=1e-6)


# --------------------------------------------------------------------------- the model


def test_loss_terms_match_a_hand_computation_on_a_padded_batch():
    model = tiny(AUDIO, beta=0.5).eval()  # eval: no codebook update, the codebook stays known
    batch = audio_batch()
    x = batch["audio"]
    with torch.no_grad():
        out = model.loss(batch)
    # by hand: encoder output per valid frame, nearest code per position, decoder of the codes
    frames = x.data[x.mask()]
    z_e = np64(model.encoder(frames).detach())  # (N, P, D)
    book = np64(model.quantizer.codebook)
    idx = ((z_e[..., None, :] - book[None, None]) ** 2).sum(-1).argmin(-1)
    e = book[idx]
    with torch.no_grad():
        decoded = np64(model.decoder(torch.as_tensor(e, dtype=torch.float32)))
    rec_frame = (-0.5 * math.log(2 * math.pi) - 0.5 * (np64(frames) - decoded) ** 2).sum(-1)
    commit_frame = 0.5 * ((z_e - e) ** 2).sum((-1, -2))
    rows = np.repeat(np.arange(3), x.lengths.numpy())
    rec = np.bincount(rows, rec_frame)
    commit = np.bincount(rows, commit_frame)
    np.testing.assert_allclose(float(out.loss), np.mean(-rec + commit), rtol=1e-5)
    np.testing.assert_allclose(float(out.terms["rec_audio"]), -rec.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(out.terms["commitment"]), commit.mean(), rtol=1e-5)
    assert "codebook" not in out.terms  # EMA
    counts = np.bincount(idx.ravel(), minlength=6) / idx.size
    p = counts[counts > 0]
    np.testing.assert_allclose(float(out.terms["perplexity"]), np.exp(-(p * np.log(p)).sum()), rtol=1e-5)
    # the codebook loss joins without EMA
    plain = tiny(AUDIO, beta=0.5, ema=False).eval()
    with torch.no_grad():
        terms = plain.loss(batch).terms
    assert float(terms["codebook"]) == pytest.approx(float(terms["commitment"]) / 0.5, rel=1e-5)


def test_the_reconstruction_gradient_reaches_the_encoder_through_the_codes():
    model = tiny(AUDIO).train()
    out = model.loss(audio_batch())
    out.terms["rec_audio"].backward()  # reconstruction alone: only straight-through reaches the encoder
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_training_updates_the_codebook_evaluation_does_not():
    model = tiny(AUDIO)
    before = model.quantizer.codebook.clone()
    model.eval()
    model.loss(audio_batch())
    assert torch.equal(model.quantizer.codebook, before)
    model.train()
    model.loss(audio_batch())
    assert not torch.equal(model.quantizer.codebook, before)


def test_encode_decode_reconstruct_and_prior_samples_are_codes():
    model = tiny(AUDIO).eval()
    batch = audio_batch()
    x = batch["audio"]
    q = model.encode(batch)["e"]
    assert q.mean.shape == (3, 4, 6)  # 2 codes of 3 per frame
    book = {tuple(np.round(r, 5)) for r in np64(model.quantizer.codebook)}
    valid = np64(q.mean)[x.mask().numpy()].reshape(-1, 3)
    assert {tuple(np.round(r, 5)) for r in valid} <= book
    assert (q.mean[~x.mask()] == 0).all()
    rec = model.reconstruct(batch)
    torch.testing.assert_close(rec, model.decode({"e": q.mean}, "audio", x.lengths))
    # decode quantises its input: a small move of a code decodes the same
    torch.testing.assert_close(model.decode({"e": q.mean + 1e-3}, "audio", x.lengths), rec)
    s = model.sample_prior(2, torch.tensor([3, 1]))["e"]
    assert s.shape == (2, 3, 6) and (s[1, 1:] == 0).all()
    assert {tuple(np.round(r, 5)) for r in np64(s[0]).reshape(-1, 3)} <= book


def test_video_frames_are_quantised_position_by_position():
    model = tiny(VIDEO)  # 16x16 frames: one stride-2 convolution (auto) -> 8x8 positions of 3
    assert model.positions == 64 and model.latents["e"].size == 64 * 3
    g = torch.Generator().manual_seed(1)
    x = Sequences.from_list([torch.rand(n, 3, 16, 16, generator=g) for n in (3, 1)])
    out = model.train().loss({"video": x})
    assert torch.isfinite(out.loss)
    model.eval()
    rec = model.reconstruct({"video": x})
    assert rec.shape == (2, 3, 3, 16, 16) and (rec[1, 1:] == 0).all()
    assert ((rec[0] > 0) & (rec[0] < 1)).all()  # Bernoulli frames: sigmoid means
    e = model.encode_frames(x)
    assert e.shape == (2, 3, 192) and (e[1, 1:] == 0).all()
    with pytest.raises(ValueError, match="divisible"):
        build_model({"name": "vq_vae", "modalities": [VIDEO], "downsample": 5})


def test_frame_state_loads_into_a_frame_vq():
    model = tiny(AUDIO)
    model.train().loss(audio_batch())  # moves the codebook away from its initial value
    spec = ModalitySpec.from_dict(AUDIO)
    net = FrameVQ(spec, model.config)
    net.load_state_dict(model.frame_state())
    x = audio_batch()["audio"]
    model.eval()
    torch.testing.assert_close(net.encode_frames(x), model.encode_frames(x))
    torch.testing.assert_close(net.decode_codes(net.encode_frames(x), x.lengths),
                               model.reconstruct({"audio": x}))
    assert model.config == VQVAEConfig(3, 6, 8, 4, 0, 2, 0.25, True, 0.99, 1.0)


def test_one_modality_and_frame_kinds_only():
    with pytest.raises(ValueError, match="one modality"):
        build_model({"name": "vq_vae", "modalities": [AUDIO, VIDEO]})
    with pytest.raises(ValueError, match="'sequence' or 'frames'"):
        image = {"name": "image", "kind": "image", "shape": [1, 28, 28]}
        build_model({"name": "vq_vae", "modalities": [image]})
