"""Model API, the PVAE/JMVAE-kl objectives as a whole, padding invariance, shape errors."""

import pytest
import torch

from dispart.data.batch import Sequences
from dispart.models import JMVAE, PVAE, VAE, build_model
from dispart.nn.modality import DIGIT_IMAGE, SPEECH, ModalitySpec
from dispart.objectives import cross_modal_hinge

SMALL_SPEECH = ModalitySpec("audio", "sequence", (6,))


def small_pvae(**kw):
    return PVAE([SMALL_SPEECH, DIGIT_IMAGE], semantic_dim=3, style_dim=2, hidden=16, **kw)


def batch(b=5, t_max=7, seed=0, extra_pad=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, t_max + 1, (b,), generator=g)
    frames = [torch.randn(int(n), 6, generator=g) for n in lengths]
    seqs = Sequences.from_list(frames)
    if extra_pad:
        pad = torch.zeros(b, extra_pad, 6)
        seqs = Sequences(torch.cat([seqs.data, pad], dim=1), seqs.lengths)
    return {"audio": seqs, "image": torch.rand(b, 1, 28, 28, generator=g)}


def test_paper_networks_shapes_and_latent_sizes():
    m = PVAE([SPEECH, DIGIT_IMAGE])
    b = {"audio": Sequences.from_list([torch.randn(9, 80), torch.randn(4, 80)]),
         "image": torch.rand(2, 1, 28, 28)}
    q = m.encode(b)
    assert {k: v.mean.shape[-1] for k, v in q.items()} == {"z_s": 32, "z_audio": 32, "z_image": 32}
    r = m.encode({"audio": b["audio"]})
    assert set(r) == {"z_s", "z_audio"}
    z = {k: v.mean for k, v in q.items()}
    assert m.decode(z, "audio", b["audio"].lengths).shape == (2, 9, 80)
    assert m.decode(z, "image").shape == (2, 1, 28, 28)
    # Appendix B: pre-encoders are not shared between q and r.
    assert m.joint.pre["audio"] is not m.unimodal["audio"].pre
    assert m.unimodal["audio"].pre.lstm.hidden_size == 512
    assert [c.out_channels for c in m.unimodal["image"].pre.conv if hasattr(c, "out_channels")] \
        == [4, 8]
    j = JMVAE([SPEECH, DIGIT_IMAGE])
    assert j.encode({"image": b["image"]})["z"].mean.shape == (2, 96)


def test_pvae_loss_is_negative_elbo_plus_weighted_terms():
    torch.manual_seed(0)
    m = small_pvae(alpha_ch=0.1, alpha_cm=10.0)
    b = batch()
    neg = torch.tensor([1, 2, 3, 4, 0])
    torch.manual_seed(1)
    out = m.loss(b, negative_index=neg)
    t = out.terms
    expected = -t["elbo"] + 0.1 * t["ch_kl"] + 10.0 * t["cm_hinge"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # elbo = -(rec terms) - kl
    assert t["elbo"].item() == pytest.approx(
        -(t["rec_audio"] + t["rec_image"] + t["kl"]).item(), rel=1e-5)
    # cm_hinge is eq. (8) on the unimodal semantic means.
    mu = {k: m.unimodal[k](b[k])["z_s"].mean for k in ("audio", "image")}
    assert t["cm_hinge"].item() == pytest.approx(cross_modal_hinge(mu, neg).mean().item(), rel=1e-5)
    # a_CM = 0 ("PVAE (no CM)") drops exactly that term.
    m.alpha_cm = 0.0
    torch.manual_seed(1)
    out0 = m.loss(b, negative_index=neg)
    assert out0.loss.item() == pytest.approx((-t["elbo"] + 0.1 * t["ch_kl"]).item(), rel=1e-5)


def test_padding_changes_no_loss_term_or_gradient():
    torch.manual_seed(0)
    m = small_pvae()
    neg = torch.tensor([4, 0, 1, 2, 3])
    results = []
    for pad in (0, 6):
        m.zero_grad()
        torch.manual_seed(3)
        out = m.loss(batch(extra_pad=pad), negative_index=neg)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (a, ga), (b, gb) = results
    for k in a.terms:
        assert a.terms[k].item() == pytest.approx(b.terms[k].item(), rel=1e-5, abs=1e-5), k
    assert ga.keys() == gb.keys()
    for n in ga:
        assert torch.allclose(ga[n], gb[n], rtol=1e-4, atol=1e-6), n


def test_padding_invariance_of_encoder_output():
    m = small_pvae()
    b0, b1 = batch(), batch(extra_pad=9)
    assert torch.allclose(m.encode({"audio": b0["audio"]})["z_s"].mean,
                          m.encode({"audio": b1["audio"]})["z_s"].mean, atol=1e-6)


def test_jmvae_kl_loss_weights_unimodal_kl_by_alpha():
    torch.manual_seed(0)
    m = JMVAE([SMALL_SPEECH, DIGIT_IMAGE], latent_dim=4, hidden=16, alpha=0.3)
    torch.manual_seed(2)
    out = m.loss(batch())
    t = out.terms
    assert out.loss.item() == pytest.approx((-t["elbo"] + 0.3 * t["kl_unimodal"]).item(), rel=1e-5)
    assert t["kl_unimodal"].item() >= 0


def test_vae_loss_and_build_model_round_trip():
    m = VAE(SMALL_SPEECH, latent_dim=4, hidden=16)
    out = m.loss(batch())
    assert out.loss.item() == pytest.approx(-out.terms["elbo"].item(), rel=1e-6)
    for model in (m, small_pvae(), JMVAE([SMALL_SPEECH, DIGIT_IMAGE], latent_dim=4, hidden=16)):
        rebuilt = build_model(model.hparams())
        rebuilt.load_state_dict(model.state_dict())
        assert type(rebuilt) is type(model)


def test_bad_inputs_give_clear_errors():
    m = small_pvae()
    b = batch()
    with pytest.raises(ValueError, match="'image' expects"):
        m.encode({"image": torch.rand(2, 28, 28)})
    with pytest.raises(ValueError, match="6-dim frames"):
        m.encode({"audio": Sequences.from_list([torch.randn(3, 5)])})
    with pytest.raises(ValueError, match="missing \\['image'\\]"):
        m.loss({"audio": b["audio"]})
    with pytest.raises(ValueError, match="does not know"):
        m.encode({"video": torch.rand(2, 3)})
    with pytest.raises(ValueError, match="generates 'audio' only"):
        VAE(SMALL_SPEECH, latent_dim=4, hidden=16).decode({"z": torch.zeros(1, 4)}, "image")
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"name": "nope", "modalities": []})


def test_a_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = small_pvae()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    b = batch(b=8)
    neg = torch.roll(torch.arange(8), 1)
    torch.manual_seed(5)
    first = m.loss(b, negative_index=neg).loss.item()
    for _ in range(30):
        opt.zero_grad()
        m.loss(b, negative_index=neg).loss.backward()
        opt.step()
    torch.manual_seed(5)
    assert m.loss(b, negative_index=neg).loss.item() < first


def test_checkpoint_layout_and_old_hparams_still_load():
    # Parameter names of trained runs (safetensors) must not change.
    p = small_pvae()
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in p.state_dict()}
    assert {"decoders.audio", "decoders.image", "joint.pre", "joint.heads", "unimodal.audio",
            "unimodal.image"} == prefixes
    j = JMVAE([SMALL_SPEECH, DIGIT_IMAGE], latent_dim=4, hidden=16)
    assert {k.split(".")[0] for k in j.state_dict()} == {
        "decoders", "joint_pre", "joint_head", "unimodal_pre", "unimodal_head"}
    v = VAE(SMALL_SPEECH, latent_dim=4, hidden=16)
    assert {k.split(".")[0] for k in v.state_dict()} == {"pre", "head", "decoder"}
    # run.json written before allow_missing existed.
    old = {"name": "pvae", "modalities": [SMALL_SPEECH.to_dict(), DIGIT_IMAGE.to_dict()],
           "semantic_dim": 3, "style_dim": 2, "hidden": 16, "alpha_ch": 0.1, "alpha_cm": 10.0,
           "margin": 0.5}
    rebuilt = build_model(old)
    rebuilt.load_state_dict(p.state_dict())
    assert rebuilt.allow_missing is False


def test_decode_is_likelihood_mean_of_decoder_parameters():
    torch.manual_seed(0)
    m = small_pvae()
    b = batch(b=3)
    z = {k: q.mean for k, q in m.encode(b).items()}
    assert torch.equal(m.decode(z, "image"), m.decode_params(z, "image"))  # Gaussian: mean
    assert m.latent_sizes() == {"z_s": 3, "z_audio": 2, "z_image": 2}
    assert m.decoder_latents("audio") == ("z_s", "z_audio")
    rec = m.reconstruction_log_prob(z, "audio", b["audio"])
    assert torch.allclose(rec, m.log_likelihood("audio", m.decode(z, "audio", b["audio"].lengths),
                                                 b["audio"]))
    bern = PVAE([SMALL_SPEECH, ModalitySpec("image", "image", (1, 28, 28), "bernoulli")],
                semantic_dim=3, style_dim=2, hidden=16)
    img = bern.decode(z, "image")
    assert ((img >= 0) & (img <= 1)).all()
    with pytest.raises(ValueError, match="categorical likelihood goes with kind"):
        ModalitySpec("image", "image", (1, 28, 28), "categorical")
