"""Model API, the PVAE/JMVAE-kl objectives as a whole, padding invariance, shape errors."""

import numpy as np
import pytest
import torch
from model_helpers import (
    FixedHead,
    LinearDecoder,
    kl_diag,
    kl_std,
    known_gaussian,
    np64,
    rbf,
    sample,
    unit_gauss_logpdf,
    vec,
)

from dispart.batches.batch import Sequences
from dispart.batches.modality import DIGIT_IMAGE, DIGIT_LABEL, SPEECH, ModalitySpec
from dispart.models import JMVAE, PVAE, VAE, build_model
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


HAND_AUDIO, HAND_IMAGE = ModalitySpec("audio", "sequence", (2,)), vec("image", 3)


def _linear_decoders(g, latent_dim):
    """Known linear decoders: audio (2-dim frames) and image (3-dim vectors) from latent_dim."""
    w = {"audio": torch.randn(2, latent_dim, generator=g), "image": torch.randn(3, latent_dim,
                                                                               generator=g)}
    c = {"audio": torch.randn(2, generator=g), "image": torch.randn(3, generator=g)}
    return {mod: LinearDecoder(w[mod], c[mod]) for mod in w}


def _hand_batch(g, b=4):
    """Speech of lengths 3, 1, 2, 3 padded to 5 frames with garbage, and 3-dim "images"."""
    lengths = torch.tensor([3, 1, 2, 3])[:b]
    data = torch.randn(b, 5, 2, generator=g)
    for i, n in enumerate(lengths.tolist()):
        data[i, n:] = 100.0  # padding: must count for nothing
    return {"audio": Sequences(data, lengths), "image": torch.randn(b, 3, generator=g)}


def _hand_rec(x, z, dec):
    """log N(x; W z + c, I) per row in float64; speech frames past each length left out."""
    mean = z @ np64(dec.weight).T + np64(dec.bias)
    if not isinstance(x, Sequences):
        return unit_gauss_logpdf(x, mean).sum(1)
    valid = (np.arange(x.data.shape[1])[None, :] < x.lengths.numpy()[:, None])[..., None]
    return (unit_gauss_logpdf(x.data, mean[:, None]) * valid).sum((1, 2))


def _hand_pvae(alpha_ch=0.1, alpha_cm=10.0):
    """A PVAE whose heads emit known Gaussians and whose decoders are known linear maps, a
    batch for it, and its objective's terms computed by hand (per row)."""
    b, s_dim, y_dim = 4, 2, 3
    m = PVAE([HAND_AUDIO, HAND_IMAGE], semantic_dim=s_dim, style_dim=y_dim, hidden=4,
             alpha_ch=alpha_ch, alpha_cm=alpha_cm)
    g = torch.Generator().manual_seed(0)
    q = {"z_s": known_gaussian(g, b, s_dim), "z_audio": known_gaussian(g, b, y_dim),
         "z_image": known_gaussian(g, b, y_dim)}
    r = {"audio": {"z_s": known_gaussian(g, b, s_dim), "z_audio": known_gaussian(g, b, y_dim)},
         "image": {"z_s": known_gaussian(g, b, s_dim), "z_image": known_gaussian(g, b, y_dim)}}
    # Unimodal semantic means that make the hinge active for some pairs and not for others.
    r["audio"]["z_s"] = (torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]),
                         r["audio"]["z_s"][1])
    r["image"]["z_s"] = (torch.tensor([[0.1, 0.0], [1.0, 0.5], [3.0, 0.0], [2.0, 2.2]]),
                         r["image"]["z_s"][1])
    for name in m.joint.heads:
        m.joint.heads[name] = FixedHead(*q[name])
    for mod in r:
        for name in m.unimodal[mod].heads:
            m.unimodal[mod].heads[name] = FixedHead(*r[mod][name])
    m.decoders.update(_linear_decoders(g, s_dim + y_dim))
    x = _hand_batch(g, b)
    neg = torch.tensor([1, 2, 3, 0])

    # By hand, from the paper (eqs. 7-9 and appendix A), in float64; z ~ q with the noise the
    # model will draw after torch.manual_seed(1) (one draw per latent, in encode order).
    torch.manual_seed(1)
    z = {name: sample(*q[name], torch.randn(b, q[name][0].shape[1])) for name in q}
    rec = {mod: _hand_rec(x[mod], np.concatenate([z["z_s"], z[f"z_{mod}"]], 1), m.decoders[mod])
           for mod in ("audio", "image")}
    kl = sum(kl_std(*q[name]) for name in q)
    elbo = rec["audio"] + rec["image"] - kl
    ch = sum(kl_diag(*q[name], *r[mod][name]) for mod in r for name in r[mod])
    mu = {mod: np64(r[mod]["z_s"][0]) for mod in r}
    unclamped = np.stack([0.5 - rbf(mu[anchor], mu[mod]) + rbf(mu[anchor], mu[mod][neg.numpy()])
                          for mod, anchor in (("audio", "image"), ("image", "audio"))])
    cm = np.maximum(unclamped, 0.0).sum(0) / 2
    hand = {"rec_audio": -rec["audio"], "rec_image": -rec["image"], "kl": kl, "elbo": elbo,
            "ch_kl": ch, "cm_hinge": cm}
    return m, x, neg, hand, unclamped


def test_pvae_loss_is_negative_elbo_plus_weighted_terms():
    m, b, neg, hand, unclamped = _hand_pvae(alpha_ch=0.1, alpha_cm=10.0)
    assert (unclamped < 0).any() and (unclamped > 0).any()  # the max(0, .) matters
    torch.manual_seed(1)
    out = m.loss(b, negative_index=neg)
    expected = (-hand["elbo"] + 0.1 * hand["ch_kl"] + 10.0 * hand["cm_hinge"]).mean()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # Every logged term: elbo = -(rec terms) - kl; ch_kl is eq. (7), cm_hinge eq. (8) on the
    # unimodal semantic means (not the joint's).
    assert out.terms.keys() == hand.keys()
    for k, v in hand.items():
        assert out.terms[k].item() == pytest.approx(v.mean(), rel=1e-5, abs=1e-6), k
    # a_CM = 0 ("PVAE (no CM)") drops exactly that term.
    m.alpha_cm = 0.0
    torch.manual_seed(1)
    out0 = m.loss(b, negative_index=neg)
    assert out0.loss.item() == pytest.approx((-hand["elbo"] + 0.1 * hand["ch_kl"]).mean(), rel=1e-5)
    # The same objective on the real networks: cm_hinge is eq. (8) on r's semantic means.
    torch.manual_seed(0)
    real = small_pvae(alpha_ch=0.1, alpha_cm=10.0)
    rb = batch()
    neg = torch.tensor([1, 2, 3, 4, 0])
    t = real.loss(rb, negative_index=neg).terms
    mu = {k: real.unimodal[k](rb[k])["z_s"].mean for k in ("audio", "image")}
    assert t["cm_hinge"].item() == pytest.approx(cross_modal_hinge(mu, neg).mean().item(), rel=1e-5)


def test_pvae_style_beta_and_independence_options_add_exactly_their_terms():
    from dispart.distributions import kl_to_prior
    from dispart.objectives import kernel_dependence

    torch.manual_seed(0)
    m = small_pvae(alpha_ch=0.1, alpha_cm=10.0)
    b, neg = batch(), torch.tensor([1, 2, 3, 4, 0])
    torch.manual_seed(5)
    base = m.loss(b, negative_index=neg)
    q = m.encode(b)
    kl_style = (kl_to_prior(q["z_audio"]) + kl_to_prior(q["z_image"])).mean()
    # style_beta = 4: the style latents' KL counts 4 times; the logged ELBO stays the ELBO.
    m.style_beta = 4.0
    torch.manual_seed(5)
    out = m.loss(b, negative_index=neg)
    assert out.loss.item() == pytest.approx(base.loss.item() + 3.0 * kl_style.item(), rel=1e-5)
    assert out.terms["elbo"].item() == pytest.approx(base.terms["elbo"].item(), rel=1e-6)
    assert "indep" not in out.terms
    # alpha_indep: + alpha * sum_m CKA(mean of r_m(z^s), mean of r_m(z^m)), logged as "indep".
    m.style_beta, m.alpha_indep = 1.0, 2.5
    torch.manual_seed(5)
    out = m.loss(b, negative_index=neg)
    dep = sum(kernel_dependence(m.unimodal[k](b[k])["z_s"].mean, m.unimodal[k](b[k])[f"z_{k}"].mean)
              for k in ("audio", "image"))
    assert out.terms["indep"].item() == pytest.approx(dep.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(base.loss.item() + 2.5 * dep.item(), rel=1e-5)
    with pytest.raises(ValueError, match="style_beta"):
        small_pvae(style_beta=-1.0)
    # style_beta_on=audio: only z^a's KL is weighed (z^i's counts once, as in the paper)
    m.style_beta, m.alpha_indep = 4.0, 0.0
    m.beta_modalities = frozenset({"audio"})
    torch.manual_seed(5)
    out = m.loss(b, negative_index=neg)
    kl_audio = kl_to_prior(q["z_audio"]).mean()
    assert out.loss.item() == pytest.approx(base.loss.item() + 3.0 * kl_audio.item(), rel=1e-5)
    assert small_pvae(style_beta_on=" image ").beta_modalities == {"image"}
    assert small_pvae(style_beta_on="audio,image").beta_modalities == {"audio", "image"}
    for bad in ("video", "", "audio,speech"):
        with pytest.raises(ValueError, match="style_beta_on"):
            small_pvae(style_beta_on=bad)
    m.style_beta, m.beta_modalities = 1.0, frozenset({"audio", "image"})
    # penalty_start: the two penalties stay off for that many training steps (counted in a buffer)
    late = small_pvae(alpha_ch=0.1, alpha_cm=10.0, alpha_indep=2.5, penalty_start=2)
    late.load_state_dict(m.state_dict(), strict=False)
    seen = []
    for _ in range(3):
        torch.manual_seed(5)
        seen.append("indep" in late.loss(b, negative_index=neg).terms)
    assert seen == [False, False, True] and int(late.step) == 3
    late.eval()
    late.loss(b, negative_index=neg)
    assert int(late.step) == 3  # evaluation does not count
    assert "step" not in small_pvae().state_dict()  # the paper's layout is unchanged


def test_pvae_widths_set_one_modality_s_networks_and_keep_the_others_at_hidden():
    m = small_pvae(widths={"image": 24})
    assert m.joint.pre["image"].out_dim == 24 and m.unimodal["image"].pre.out_dim == 24
    assert m.joint.pre["audio"].out_dim == 16 and m.unimodal["audio"].pre.out_dim == 16
    assert m.decoders["image"].fc[0].out_features == 24
    assert m.decoders["audio"].lstm.hidden_size == 16
    assert m.joint.heads["z_s"].linear.in_features == 24 + 16  # q reads both pre-encoders
    assert m.config.widths == {"image": 24}
    out = m.loss(batch(), negative_index=torch.tensor([1, 2, 3, 4, 0]))
    assert torch.isfinite(out.loss)
    same = small_pvae(widths={"image": 16})  # a width equal to hidden: the paper's layout
    assert {k: v.shape for k, v in same.state_dict().items()} == \
        {k: v.shape for k, v in small_pvae().state_dict().items()}
    for bad in ({"video": 8}, {"image": 0}):
        with pytest.raises(ValueError, match="widths"):
            small_pvae(widths=bad)


def test_pvae_style_dims_size_one_style_latent_and_keep_the_others_at_style_dim():
    m = small_pvae(style_dims={"audio": 1}, alpha_xcorr=1.0, xcorr_momentum=0.5, alpha_adv=1.0)
    assert m.latents["z_audio"].size == 1 and m.latents["z_image"].size == 2
    assert m.joint.heads["z_audio"].linear.out_features == 2 * 1  # mean and log-variance
    assert m.joint.heads["z_image"].linear.out_features == 2 * 2
    assert m.unimodal["audio"].heads["z_audio"].linear.out_features == 2
    assert m.decoders["audio"].lstm.input_size == 3 + 1 and m.decoders["image"].fc[0].in_features == 3 + 2
    assert m.xcorr_audio_image_r.shape == (1, 3) and m.xcorr_image_audio_q.shape == (2, 3)
    assert m.critics["audio"][0].in_features == 1
    assert m.config.style_dims == {"audio": 1}
    m.train()
    out = m.loss(batch(), negative_index=torch.tensor([1, 2, 3, 4, 0]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    with torch.no_grad():
        assert tuple(m.encode(batch())["z_audio"].mean.shape) == (5, 1)
    same = small_pvae(style_dims={"audio": 2})  # equal to style_dim: the paper's layout
    assert {k: v.shape for k, v in same.state_dict().items()} == \
        {k: v.shape for k, v in small_pvae().state_dict().items()}
    for bad in ({"video": 8}, {"audio": 0}):
        with pytest.raises(ValueError, match="style_dims"):
            small_pvae(style_dims=bad)


def test_pvae_swap_consistency_re_encodes_the_swapped_decoding():
    torch.manual_seed(0)
    m = small_pvae(alpha_swap=3.0)
    b, other = batch(), torch.tensor([2, 0, 4, 1, 3])
    z = {k: torch.randn(5, 3 if k == "z_s" else 2) for k in ("z_s", "z_audio", "z_image")}
    got = m.swap_consistency(b, z, other, ["audio", "image"])
    expected = torch.zeros(5)
    for k in ("audio", "image"):
        lengths = b[k].lengths if k == "audio" else None
        x = m.decode({"z_s": z["z_s"][other], f"z_{k}": z[f"z_{k}"]}, k, lengths)
        if k == "audio":  # each row decoded at its own (style) length, re-encoded alone
            mus = [m.unimodal[k](Sequences.from_list([x[i, : int(n)]]))["z_s"].mean[0]
                   for i, n in enumerate(lengths)]
            mu = torch.stack(mus)
        else:
            mu = m.unimodal[k](x)["z_s"].mean
        expected += (mu - z["z_s"][other]).pow(2).mean(-1)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    # in the loss: + alpha_swap * mean, logged as "swap"
    torch.manual_seed(5)
    out = m.loss(b, negative_index=other)
    assert out.terms["swap"].item() > 0
    m.alpha_swap = 0.0
    torch.manual_seed(5)
    base = m.loss(b, negative_index=other)
    assert out.loss.item() == pytest.approx(base.loss.item() + 3.0 * out.terms["swap"].item(), rel=1e-5)
    # the latents are held fixed: only the decoder and r_m get gradients
    zs = z["z_s"].clone().requires_grad_(True)
    m.zero_grad()
    m.swap_consistency(b, {**z, "z_s": zs}, other, ["image"]).sum().backward()
    assert zs.grad is None
    assert m.decoders["image"].parameters().__next__().grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.joint.parameters())
    # swap_weights: a weight per modality (others alpha_swap); each term logged when unequal
    m.alpha_swap, m.swap_weights = 3.0, {"audio": 0.0, "image": 0.5}
    assert m.swap_weight == {"audio": 0.0, "image": 0.5} and m.config.swap_weights == m.swap_weights
    torch.manual_seed(5)
    out = m.loss(b, negative_index=other)
    q_means = {k: v.mean for k, v in m.encode(b).items()}
    image_only = m.swap_consistency(b, q_means, other, ["image"]).mean()
    assert set(out.terms) >= {"swap", "swap_image"} and "swap_audio" not in out.terms
    assert out.terms["swap"].item() == pytest.approx(image_only.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(base.loss.item() + 0.5 * image_only.item(), rel=1e-5)
    for bad in ({"video": 1.0}, {"image": -1.0}):
        with pytest.raises(ValueError, match="swap_weights"):
            small_pvae(swap_weights=bad)


def test_pvae_style_adversary_terms_and_who_they_train():
    """alpha_adv: critics exist only when switched on; the loss adds alpha * mean(critic + adv) with
    both terms the sum over modalities and over q's and r_m's style means of style_content_critic
    (content: the other modality's r z^s mean); the critics learn only from their own loss."""
    from dispart.objectives import style_content_critic

    assert not hasattr(small_pvae(), "critics")
    with pytest.raises(ValueError, match="alpha_adv"):
        small_pvae(alpha_adv=-1.0)
    torch.manual_seed(0)
    m = small_pvae(alpha_adv=2.0)
    assert {k.split(".")[1] for k in m.state_dict() if k.startswith("critics.")} == {"audio", "image"}
    b, neg = batch(), torch.tensor([2, 0, 4, 1, 3])
    q = m.joint(b)
    r = {k: m.unimodal[k](b[k]) for k in ("audio", "image")}
    critic, adv = m.style_adversary(q, r, ["audio", "image"])
    exp_c, exp_e = torch.zeros(5), torch.zeros(5)
    for k, other in (("audio", "image"), ("image", "audio")):
        for means in (q[f"z_{k}"].mean, r[k][f"z_{k}"].mean):
            c, e = style_content_critic(m.critics[k], means, r[other]["z_s"].mean)
            exp_c, exp_e = exp_c + c, exp_e + e
    assert torch.allclose(critic, exp_c) and torch.allclose(adv, exp_e)
    torch.manual_seed(5)
    out = m.loss(b, negative_index=neg)
    m.alpha_adv = 0.0
    torch.manual_seed(5)
    base = m.loss(b, negative_index=neg)
    extra = 2.0 * (out.terms["critic"].item() + out.terms["adv"].item())
    assert out.loss.item() == pytest.approx(base.loss.item() + extra, rel=1e-5)
    assert "critic" not in base.terms
    m.alpha_adv = 2.0
    m.zero_grad()
    critic.mean().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.unimodal.parameters())
    assert next(m.critics["audio"].parameters()).grad.abs().sum() > 0


def _posteriors_and_features(m, b):
    """q's posteriors, each r_m's, and the pre-encodings ("q" and per modality) of batch ``b``."""
    q = m.joint(b)
    r = {k: m.unimodal[k](b[k]) for k in ("audio", "image")}
    features = {"q": m.joint.features(b), **{k: m.unimodal[k].pre(b[k]) for k in ("audio", "image")}}
    return q, r, features


def _moved_by(m, value):
    """Names of m's parameters that get a nonzero gradient from the scalar ``value``."""
    m.zero_grad()
    value.backward()
    return {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def _check_added_term(m, b, neg, field: str, term: str) -> float:
    """With ``m.<field>`` = w, the loss is the loss without the term + w * terms[term] (same
    draws), and the term is not logged without it; returns terms[term]."""
    weight = getattr(m, field)
    torch.manual_seed(5)
    out = m.loss(b, negative_index=neg)
    setattr(m, field, 0.0)
    torch.manual_seed(5)
    base = m.loss(b, negative_index=neg)
    setattr(m, field, weight)
    assert out.loss.item() == pytest.approx(base.loss.item() + weight * out.terms[term].item(), rel=1e-5)
    assert term not in base.terms
    return out.terms[term].item()


def test_pvae_style_content_correlation_term_and_what_it_moves():
    """alpha_xcorr: + alpha * sum over m, n != m and (q's, r_m's) z^m means of
    cross_correlation(z^m mean, r_n z^s mean); only the z^m heads learn from it (pre-encoders and
    z^s heads do not), and the loss computes the same posteriors as without it."""
    from dispart.objectives import cross_correlation

    torch.manual_seed(0)
    m = small_pvae(alpha_xcorr=3.0)
    b, neg = batch(), torch.tensor([2, 0, 4, 1, 3])
    q, r, features = _posteriors_and_features(m, b)
    assert torch.equal(m.joint.from_features(features["q"])["z_s"].mean, q["z_s"].mean)
    got = m.style_content_correlation(features, r, ["audio", "image"])
    assert set(got) == {"audio", "image"}
    got = got["audio"] + got["image"]
    expected = sum(cross_correlation(means, r[other]["z_s"].mean)
                   for k, other in (("audio", "image"), ("image", "audio"))
                   for means in (q[f"z_{k}"].mean, r[k][f"z_{k}"].mean))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    moved = _moved_by(m, got)
    assert moved and all(".heads.z_audio." in n or ".heads.z_image." in n for n in moved)
    assert any(n.startswith("inference.joint.heads.z_audio") for n in moved)
    assert any(n.startswith("inference.unimodal.image.heads.z_image") for n in moved)
    _check_added_term(m, b, neg, "alpha_xcorr", "xcorr")
    with pytest.raises(ValueError, match="alpha_xcorr"):
        small_pvae(alpha_xcorr=-0.5)


def test_pvae_xcorr_weights_override_alpha_xcorr_per_style_latent():
    """xcorr_weights: each modality's term (z^m's means against the other modality's r z^s) is
    weighed by its own weight (0: not computed; others alpha_xcorr); only heads of weighed
    latents move, and running buffers exist for their terms only."""
    from dispart.objectives import cross_correlation

    torch.manual_seed(0)
    m = small_pvae(alpha_xcorr=3.0, xcorr_weights={"image": 0.0})
    assert m.xcorr_weight == {"audio": 3.0, "image": 0.0} and m.config.xcorr_weights == {"image": 0.0}
    b, neg = batch(), torch.tensor([2, 0, 4, 1, 3])
    q, r, features = _posteriors_and_features(m, b)
    got = m.style_content_correlation(features, r, ["audio", "image"])
    expected = sum(cross_correlation(means, r["image"]["z_s"].mean)
                   for means in (q["z_audio"].mean, r["audio"]["z_audio"].mean))
    assert list(got) == ["audio"] and got["audio"].item() == pytest.approx(expected.item(), rel=1e-6)
    moved = _moved_by(m, got["audio"])
    assert moved and all(".heads.z_audio." in n for n in moved)
    _check_added_term(m, b, neg, "alpha_xcorr", "xcorr")
    # unequal non-zero weights: loss = base + sum_m w_m * term_m, each term logged
    both = small_pvae(alpha_xcorr=3.0, xcorr_weights={"image": 0.5})
    both.load_state_dict(m.state_dict())
    torch.manual_seed(5)
    out = both.loss(b, negative_index=neg)
    both.xcorr_weights, both.alpha_xcorr = {"image": 0.0}, 0.0
    torch.manual_seed(5)
    plain = both.loss(b, negative_index=neg)
    t = out.terms
    assert t["xcorr"].item() == pytest.approx(t["xcorr_audio"].item() + t["xcorr_image"].item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(
        plain.loss.item() + 3.0 * t["xcorr_audio"].item() + 0.5 * t["xcorr_image"].item(), rel=1e-5)
    running = small_pvae(alpha_xcorr=3.0, xcorr_weights={"image": 0}, xcorr_momentum=0.5)
    assert {k for k in running.state_dict() if k.startswith("xcorr_")} == {
        "xcorr_audio_image_r", "xcorr_audio_image_q", "xcorr_batches"}
    only = small_pvae(xcorr_weights={"audio": 2.0})  # alpha_xcorr 0: z^a's term alone
    assert only.xcorr_active and only.xcorr_weight == {"audio": 2.0, "image": 0.0}
    for bad in ({"video": 1.0}, {"audio": -1.0}):
        with pytest.raises(ValueError, match="xcorr_weights"):
            small_pvae(alpha_xcorr=1.0, xcorr_weights=bad)


def test_pvae_image_channels_widens_the_image_pre_encoders_only():
    """image_channels=c: q's and r_image's image pre-encoders convolve with (c, 2c) channels; the
    decoder and the speech networks keep their shapes, 4 gives the paper's (4, 8) weights, and a
    wider model still encodes and scores a batch."""
    default, wide = small_pvae(), small_pvae(image_channels=16)
    shapes = {k: v.shape for k, v in default.state_dict().items()}
    wide_shapes = {k: v.shape for k, v in wide.state_dict().items()}
    changed = {k for k in shapes if shapes[k] != wide_shapes[k]}
    assert changed and all(k.startswith(("inference.joint.pre.image.", "inference.unimodal.image.pre."))
                           for k in changed)
    for pre in (wide.joint.pre["image"], wide.unimodal["image"].pre):
        assert [c.out_channels for c in pre.conv if isinstance(c, torch.nn.Conv2d)] == [16, 32]
    assert [c.out_channels for c in default.unimodal["image"].pre.conv
            if isinstance(c, torch.nn.Conv2d)] == [4, 8]
    assert wide.config.image_channels == 16
    assert torch.isfinite(wide.loss(batch()).loss)
    with pytest.raises(ValueError, match="image_channels"):
        small_pvae(image_channels=0)


def test_pvae_semantic_style_correlation_term_and_what_it_moves():
    """alpha_semantic_xcorr: + alpha * sum over m and (q's, r_m's) means of
    cross_correlation(z^s mean, same row's z^m mean); only the z^s heads learn from it."""
    from dispart.objectives import cross_correlation

    torch.manual_seed(0)
    m = small_pvae(alpha_semantic_xcorr=2.0)
    b, neg = batch(), torch.tensor([2, 0, 4, 1, 3])
    q, r, features = _posteriors_and_features(m, b)
    got = m.semantic_style_correlation(features, q, r, ["audio", "image"])
    expected = sum(cross_correlation(post["z_s"].mean, post[f"z_{k}"].mean)
                   for k in ("audio", "image") for post in (q, r[k]))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    moved = _moved_by(m, got)
    assert moved and all(".heads.z_s." in n for n in moved)
    assert any(n.startswith("inference.joint.heads.z_s") for n in moved)
    assert any(n.startswith("inference.unimodal.audio.heads.z_s") for n in moved)
    logged = _check_added_term(m, b, neg, "alpha_semantic_xcorr", "semantic_xcorr")
    assert logged == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="alpha_semantic_xcorr"):
        small_pvae(alpha_semantic_xcorr=-1.0)


def test_pvae_sequence_encoder_bilstm_reads_speech_in_q_and_r_audio():
    """model.sequence_encoder="bilstm": q's and r_audio's speech pre-encoders are MeanBiLSTMEncoders
    (images keep theirs); the loss trains; an unknown reader is a clear error naming it."""
    from dispart.nn.encoders import SequenceEncoder
    from dispart.nn.frames import MeanBiLSTMEncoder

    torch.manual_seed(0)
    m = small_pvae(sequence_encoder="bilstm")
    assert isinstance(m.unimodal["audio"].pre, MeanBiLSTMEncoder)
    assert isinstance(m.joint.pre["audio"], MeanBiLSTMEncoder)
    assert not isinstance(m.unimodal["image"].pre, MeanBiLSTMEncoder)
    assert isinstance(small_pvae().unimodal["audio"].pre, SequenceEncoder)
    out = m.loss(batch())
    out.loss.backward()
    assert torch.isfinite(out.loss) and m.unimodal["audio"].pre.frame[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sequence_encoder.*'gru'"):
        small_pvae(sequence_encoder="gru")
    from dispart.nn.frames import MelConvBiLSTMEncoder

    conv = small_pvae(sequence_encoder="conv_bilstm")
    assert isinstance(conv.unimodal["audio"].pre, MelConvBiLSTMEncoder)
    assert isinstance(conv.joint.pre["audio"], MelConvBiLSTMEncoder)
    out = conv.loss(batch())
    out.loss.backward()
    assert torch.isfinite(out.loss) and conv.unimodal["audio"].pre.conv[0].weight.grad.abs().sum() > 0


def test_pvae_running_speaker_correlation_updates_and_saves_its_averages():
    """xcorr_momentum with the speaker's xcorr: per source (q, r_audio) the first training batch
    scores mean(C * C) of the (D_s, speakers) correlation matrix C and stores it, the next scores
    mean(A * C') against the average A and stores mom * A + (1 - mom) * C'; evaluation leaves the
    averages alone; they travel with the state dict; without momentum there are none."""
    from dispart.objectives import correlation_matrix

    torch.manual_seed(0)
    m = small_pvae(alpha_speaker=3.0, speaker_classes=3, speaker_penalty="xcorr", xcorr_momentum=0.6)
    assert m.running_speaker and int(m.speaker_xcorr_batches) == 0
    assert not small_pvae(alpha_speaker=3.0, speaker_classes=3, speaker_penalty="critic",
                          xcorr_momentum=0.6).running_speaker

    def step(seed, speakers):
        b = {**batch(seed=seed), "speaker": torch.tensor(speakers)}
        q, r, features = _posteriors_and_features(m, b)
        onehot = torch.nn.functional.one_hot(torch.tensor(speakers), 3).float()
        mats = {"r": correlation_matrix(r["audio"]["z_s"].mean, onehot).detach(),
                "q": correlation_matrix(q["z_s"].mean, onehot).detach()}
        sources = {"r": (m.unimodal["audio"].heads, features["audio"]), "q": (m.joint.heads, features["q"])}
        return m.speaker_correlation(b, sources), mats

    m.train()
    got, c1 = step(1, [0, 2, 1, 1, 0])
    assert got.item() == pytest.approx(sum((c * c).mean().item() for c in c1.values()), rel=1e-5)
    assert int(m.speaker_xcorr_batches) == 1
    for which, c in c1.items():
        assert torch.allclose(getattr(m, f"speaker_xcorr_{which}"), c)
    got, c2 = step(2, [1, 1, 2, 0, 0])
    assert got.item() == pytest.approx(sum((c1[k] * c2[k]).mean().item() for k in c1), rel=1e-5)
    for which in c1:
        want = 0.6 * c1[which] + 0.4 * c2[which]
        assert torch.allclose(getattr(m, f"speaker_xcorr_{which}"), want, atol=1e-6)
    saved = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("speaker_xcorr")}
    assert set(saved) == {"speaker_xcorr_q", "speaker_xcorr_r", "speaker_xcorr_batches"}
    m.eval()
    step(3, [2, 0, 1, 2, 1])
    assert all(torch.equal(m.state_dict()[k], v) for k, v in saved.items())
    other = small_pvae(alpha_speaker=3.0, speaker_classes=3, speaker_penalty="xcorr", xcorr_momentum=0.6)
    other.load_state_dict(m.state_dict())
    assert all(torch.equal(other.state_dict()[k], v) for k, v in saved.items())
    plain = small_pvae(alpha_speaker=3.0, speaker_classes=3, speaker_penalty="xcorr")
    assert not any(k.startswith("speaker_xcorr") for k in plain.state_dict())


def test_pvae_running_style_content_correlation_updates_and_saves_its_averages():
    """xcorr_momentum: the first training batch scores mean(C * C) of each term's correlation
    matrix C and stores C; the next scores mean(A * C') against that average A and stores
    mom * A + (1 - mom) * C'; evaluation reads the averages without changing them; the averages
    travel with the state dict."""
    from dispart.objectives import correlation_matrix

    torch.manual_seed(0)
    m = small_pvae(alpha_xcorr=2.0, xcorr_momentum=0.75)
    assert int(m.xcorr_batches) == 0 and len(m.xcorr_terms(["audio", "image"])) == 4

    def terms(b):
        q, r, features = _posteriors_and_features(m, b)
        mats = {f"{k}_{o}_{w}": correlation_matrix(post[f"z_{k}"].mean, r[o]["z_s"].mean).detach()
                for k, o in (("audio", "image"), ("image", "audio"))
                for w, post in (("r", r[k]), ("q", q))}
        return features, r, mats

    m.train()
    b1, b2 = batch(seed=1), batch(seed=2)
    features, r, c1 = terms(b1)
    got = sum(m.style_content_correlation(features, r, ["audio", "image"]).values())
    assert got.item() == pytest.approx(sum((c * c).mean().item() for c in c1.values()), rel=1e-5)
    assert int(m.xcorr_batches) == 1
    for key, c in c1.items():
        assert torch.allclose(getattr(m, f"xcorr_{key}"), c)
    features, r, c2 = terms(b2)
    got = sum(m.style_content_correlation(features, r, ["audio", "image"]).values())
    assert got.item() == pytest.approx(sum((c1[k] * c2[k]).mean().item() for k in c1), rel=1e-5)
    got.backward()  # the averages were updated after the term was computed
    for key in c1:
        assert torch.allclose(getattr(m, f"xcorr_{key}"), 0.75 * c1[key] + 0.25 * c2[key], atol=1e-6)
    saved = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("xcorr_")}
    assert set(saved) == {f"xcorr_{k}" for k in c1} | {"xcorr_batches"}
    m.eval()
    m.style_content_correlation(*terms(b1)[:2], ["audio", "image"])
    assert all(torch.equal(m.state_dict()[k], v) for k, v in saved.items())
    other = small_pvae(alpha_xcorr=2.0, xcorr_momentum=0.75)
    other.load_state_dict(m.state_dict())
    assert all(torch.equal(other.state_dict()[k], v) for k, v in saved.items())
    assert not any(k.startswith("xcorr_") for k in small_pvae(alpha_xcorr=2.0).state_dict())
    with pytest.raises(ValueError, match="xcorr_momentum"):
        small_pvae(alpha_xcorr=1.0, xcorr_momentum=1.0)


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
    # By hand (Suzuki et al. eq. 2) with known heads and linear decoders:
    # -(E_q[log p(x^a|z) + log p(x^i|z)] - KL(q||p)) + alpha sum_m KL(q(z|X) || r_m(z|x^m)).
    m = JMVAE([HAND_AUDIO, HAND_IMAGE], latent_dim=3, hidden=4, alpha=0.3)
    g = torch.Generator().manual_seed(0)
    q = known_gaussian(g, 4, 3)
    r = {mod: known_gaussian(g, 4, 3) for mod in ("audio", "image")}
    m.inference.joint_head = FixedHead(*q)
    for mod in r:
        m.inference.unimodal_head[mod] = FixedHead(*r[mod])
    m.decoders.update(_linear_decoders(g, 3))
    x = _hand_batch(g)
    torch.manual_seed(1)
    z = sample(*q, torch.randn(4, 3))
    rec = {mod: _hand_rec(x[mod], z, m.decoders[mod]) for mod in ("audio", "image")}
    kl = kl_std(*q)
    kl_uni = kl_diag(*q, *r["audio"]) + kl_diag(*q, *r["image"])
    elbo = rec["audio"] + rec["image"] - kl
    hand = {"rec_audio": -rec["audio"], "rec_image": -rec["image"], "kl": kl, "elbo": elbo,
            "kl_unimodal": kl_uni}
    torch.manual_seed(1)
    out = m.loss(x)
    assert out.loss.item() == pytest.approx((-elbo + 0.3 * kl_uni).mean(), rel=1e-5)
    assert out.terms.keys() == hand.keys()
    for k, v in hand.items():
        assert out.terms[k].item() == pytest.approx(v.mean(), rel=1e-5), k


def test_vae_loss_and_build_model_round_trip():
    m = VAE(SMALL_SPEECH, latent_dim=4, hidden=16)
    out = m.loss(batch())
    assert out.loss.item() == pytest.approx(-out.terms["elbo"].item(), rel=1e-6)
    for model in (m, small_pvae(), JMVAE([SMALL_SPEECH, DIGIT_IMAGE], latent_dim=4, hidden=16)):
        rebuilt = build_model(model.hparams())
        rebuilt.load_state_dict(model.state_dict())
        assert type(rebuilt) is type(model)
    # By hand: -(E_q[log p(x|z)] - KL(q(z|x) || N(0, I))) with a known head and decoder.
    v = VAE(HAND_AUDIO, latent_dim=3, hidden=4)
    g = torch.Generator().manual_seed(3)
    q = known_gaussian(g, 4, 3)
    v.inference.head = FixedHead(*q)
    v.generative.decoders["audio"] = _linear_decoders(g, 3)["audio"]
    x = _hand_batch(g)
    torch.manual_seed(4)
    rec = _hand_rec(x["audio"], sample(*q, torch.randn(4, 3)), v.decoder)
    torch.manual_seed(4)
    out = v.loss(x)  # the image in the batch is ignored
    assert out.loss.item() == pytest.approx((kl_std(*q) - rec).mean(), rel=1e-5)
    assert out.terms["kl"].item() == pytest.approx(kl_std(*q).mean(), rel=1e-5)
    assert out.terms["rec_audio"].item() == pytest.approx(-rec.mean(), rel=1e-5)


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
    # Parameter names of trained runs (safetensors): generative (priors, decoders) and inference.
    # Names saved before generative/inference existed are renamed by upgrade_state_dict
    # (tests/test_run_files.py loads such runs).
    p = small_pvae()
    prefixes = {".".join(k.split(".")[:3]) for k in p.state_dict()}
    assert {"generative.decoders.audio", "generative.decoders.image", "inference.joint.pre",
            "inference.joint.heads", "inference.unimodal.audio", "inference.unimodal.image"} == prefixes
    j = JMVAE([SMALL_SPEECH, DIGIT_IMAGE], latent_dim=4, hidden=16)
    assert {".".join(k.split(".")[:2]) for k in j.state_dict()} == {
        "generative.decoders", "inference.joint_pre", "inference.joint_head",
        "inference.unimodal_pre", "inference.unimodal_head"}
    v = VAE(SMALL_SPEECH, latent_dim=4, hidden=16)
    assert {".".join(k.split(".")[:2]) for k in v.state_dict()} == {
        "inference.pre", "inference.head", "generative.decoders"}
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
    assert torch.allclose(img, torch.sigmoid(bern.decode_params(z, "image")))  # Bernoulli mean
    with pytest.raises(ValueError, match="categorical likelihood goes with kind"):
        ModalitySpec("image", "image", (1, 28, 28), "categorical")


def test_pvae_speaker_adversary_terms_and_who_they_train():
    """alpha_speaker: the critic exists only when switched on and needs >= 2 speaker classes and
    an "audio" modality; the loss adds alpha * mean(critic + adv), both the sum of label_confusion
    over the z^s means that hear the voice (q's and r_audio's, not r_image's) against the batch's
    "speaker"; the critic learns only from its own loss, the encoders only from theirs (never
    r_image); a batch without (valid) speakers is a clear error."""
    from dispart.objectives import label_confusion

    assert not hasattr(small_pvae(), "speaker_critic") and small_pvae().extra_inputs == ()
    with pytest.raises(ValueError, match="speaker_classes"):
        small_pvae(alpha_speaker=1.0)
    with pytest.raises(ValueError, match="alpha_speaker"):
        small_pvae(alpha_speaker=-1.0, speaker_classes=3)
    with pytest.raises(ValueError, match="'audio' modality"):
        PVAE([DIGIT_IMAGE, DIGIT_LABEL], alpha_speaker=1.0, speaker_classes=3)
    torch.manual_seed(0)
    m = small_pvae(alpha_speaker=2.0, speaker_classes=3)
    assert m.extra_inputs == ("speaker",)
    b, neg = {**batch(), "speaker": torch.tensor([0, 2, 1, 1, 0])}, torch.tensor([2, 0, 4, 1, 3])
    q = m.joint(b)
    r = {k: m.unimodal[k](b[k]) for k in ("audio", "image")}
    means = [q["z_s"].mean, r["audio"]["z_s"].mean]
    critic, adv = m.speaker_adversary(b, means)
    exp = [label_confusion(m.speaker_critic, z, b["speaker"]) for z in means]
    assert torch.allclose(critic, sum(c for c, _ in exp)) and torch.allclose(adv, sum(e for _, e in exp))
    torch.manual_seed(5)
    out = m.loss(b, negative_index=neg)
    m.alpha_speaker = 0.0
    torch.manual_seed(5)
    base = m.loss(b, negative_index=neg)
    m.alpha_speaker = 2.0
    extra = 2.0 * (out.terms["speaker_critic"].item() + out.terms["speaker_adv"].item())
    assert out.loss.item() == pytest.approx(base.loss.item() + extra, rel=1e-5)
    assert "speaker_critic" not in base.terms
    assert out.terms["speaker_adv"].item() == pytest.approx(adv.mean().item(), rel=1e-5)
    critic_params = {n for n, _ in m.named_parameters() if n.startswith("speaker_critic.")}
    assert _moved_by(m, critic.mean()) == critic_params
    moved = _moved_by(m, adv.mean())
    assert moved and not any(n.startswith("speaker_critic.") for n in moved)
    assert any(n.startswith("inference.unimodal.audio.") for n in moved)
    assert any(n.startswith("inference.joint.") for n in moved)
    assert not any(n.startswith("inference.unimodal.image.") for n in moved)
    with pytest.raises(ValueError, match="'speaker'"):
        m.loss(batch(), negative_index=neg)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.loss({**batch(), "speaker": torch.tensor([0, 3, 1, 1, 0])}, negative_index=neg)


def test_pvae_speaker_correlation_term_and_what_it_moves():
    """speaker_penalty="xcorr": no critic; + alpha * sum over q and r_audio of
    cross_correlation(z^s mean, one-hot speaker); only their z^s heads learn from it."""
    from dispart.objectives import cross_correlation

    with pytest.raises(ValueError, match="speaker_penalty"):
        small_pvae(alpha_speaker=1.0, speaker_classes=3, speaker_penalty="probe")
    torch.manual_seed(0)
    m = small_pvae(alpha_speaker=3.0, speaker_classes=3, speaker_penalty="xcorr")
    assert not hasattr(m, "speaker_critic") and m.extra_inputs == ("speaker",)
    speakers = torch.tensor([0, 2, 1, 1, 0])
    b, neg = {**batch(), "speaker": speakers}, torch.tensor([2, 0, 4, 1, 3])
    q, r, features = _posteriors_and_features(m, b)
    onehot = torch.nn.functional.one_hot(speakers, 3).float()
    expected = sum(cross_correlation(z, onehot).item() for z in (q["z_s"].mean, r["audio"]["z_s"].mean))
    assert expected > 0.05
    assert _check_added_term(m, b, neg, "alpha_speaker", "speaker_xcorr") == pytest.approx(expected, rel=1e-5)
    sources = {"r": (m.unimodal["audio"].heads, features["audio"]), "q": (m.joint.heads, features["q"])}
    moved = _moved_by(m, m.speaker_correlation(b, sources))
    assert moved and all(".heads.z_s." in n for n in moved), sorted(moved)
    assert {n.split(".")[1] for n in moved} == {"joint", "unimodal"}
    assert not any(n.startswith("inference.unimodal.image.") for n in moved)


def test_pvae_lambdas_weigh_each_log_likelihood_in_L_only():
    """lambdas={image: w}: the loss is the paper's minus (w - 1) times the image log-likelihood
    (same weights, same draws); the logged reconstructions stay unweighted; unknown modalities or
    negative weights are a clear error."""
    torch.manual_seed(0)
    base = small_pvae()
    weighted = small_pvae(lambdas={"image": 3.0})
    weighted.load_state_dict(base.state_dict())
    b, neg = batch(), torch.tensor([2, 0, 4, 1, 3])
    torch.manual_seed(1)
    plain = base.loss(b, neg)
    torch.manual_seed(1)
    heavy = weighted.loss(b, neg)
    rec_image = -plain.terms["rec_image"]  # mean log p(x^image | z) over the batch
    assert heavy.loss.item() == pytest.approx(plain.loss.item() - 2.0 * rec_image.item(), rel=1e-5)
    assert heavy.terms["rec_image"].item() == pytest.approx(plain.terms["rec_image"].item(), rel=1e-6)
    assert weighted.config.lambdas == {"image": 3.0} and base.config.lambdas is None
    for bad in ({"video": 1.0}, {"image": -1.0}):
        with pytest.raises(ValueError, match="lambdas"):
            small_pvae(lambdas=bad)
