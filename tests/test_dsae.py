"""DSAE (Li & Mandt 2018, dispart/models/dsae.py): the LSTM prior is conditioned on POSTERIOR
samples; the loss equals an ELBO rolled by hand (numpy, float64) with a fixed seed; factorised vs
full q dependencies; shapes for log-Mel sequences and 64x64x3 video; generation helpers; and
swapping f moves the speaker on a tiny model trained on two real FSDD speakers (embedded sample).

Expected values come from numpy closed forms (``model_helpers``), never from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import kl_diag, lstm_prior_params, np64, unit_gauss_logpdf

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec
from dispart.batches.pipeline import load_experiment_data
from dispart.config import load_config
from dispart.models import build_model
from dispart.models.dsae import DSAE, JITTER_GAIN, DSAEConfig, colour_jitter, conv_layers
from dispart.models.registry import REGISTRY

pytestmark = pytest.mark.usefixtures("single_thread")

DEMO = Path(__file__).parent / "sample.yaml"  # the embedded sample: FSDD wavs (log-Mel)
MEL = ModalitySpec("audio", "sequence", (80,), frame_rate=100.0)
TINY = {"f_dim": 5, "z_dim": 3, "hidden": 12, "prior_hidden": 7}


@pytest.fixture(scope="module")
def speech():
    """The embedded FSDD sample's audio as training loads it (80-dim log-Mel, normalised)."""
    return load_experiment_data(load_config(DEMO).data, progress=False)


@pytest.fixture(scope="module")
def batch(speech) -> dict[str, Sequences]:
    """4 real test utterances of different lengths, cut to <= 30 frames (padding exercised)."""
    sp = speech.split("audio", "test")
    lengths = np.array(sp.lengths())
    order = np.argsort(lengths, kind="stable")
    picks = [int(order[i]) for i in np.linspace(0, len(order) - 1, 4).round().astype(int)]
    seqs = [np.asarray(sp.examples[i])[:30] for i in picks]
    x = Sequences.from_list(seqs)
    assert len(set(x.lengths.tolist())) > 1
    return {"audio": x}


def tiny(q: str = "factorised", seed: int = 0, spec: ModalitySpec = MEL, **kw) -> DSAE:
    torch.manual_seed(seed)
    return DSAE([spec], q=q, **{**TINY, **kw})


# --------------------------------------------------------------------------- the prior sees q's sample


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_lstm_prior_is_conditioned_on_the_posterior_sample(q, batch):
    model = tiny(q).eval()
    x = batch["audio"]
    mask = np64(x.mask())
    with torch.no_grad():
        post, draws = model.infer(batch, draw_f=True)
        torch.manual_seed(1)
        e = model.elbo(batch, post, ("audio",), samples=draws)
        z = e.z["z"]
        mean, logvar = np64(post["z"].mean), 2 * np.log(np64(post["z"].stddev))
        # KL_t = KL(q(z_t) || p(z_t | z_<t = the posterior SAMPLE)), by a numpy LSTM loop
        p_mean, p_logvar = lstm_prior_params(model.priors["z"], z)
        want = (kl_diag(mean, logvar, p_mean, p_logvar) * mask).sum(1)
        np.testing.assert_allclose(np64(e.kl["z"]), want, rtol=1e-4, atol=1e-4)
        # ... and not on the posterior mean (the sample differs from it, so would the KL)
        m_mean, m_logvar = lstm_prior_params(model.priors["z"], post["z"].mean)
        assert np.abs((kl_diag(mean, logvar, m_mean, m_logvar) * mask).sum(1) - want).max() > 1e-2
        # Perturb the sample of z_1 only: p(z_1) stays, p(z_2 | z_1) moves, the KL follows.
        z2 = z.clone()
        z2[:, 0] += 1.5
        e2 = model.elbo(batch, post, ("audio",), samples={**draws, "z": z2})
        q_mean, q_logvar = lstm_prior_params(model.priors["z"], z2)
        np.testing.assert_array_equal(q_mean[:, 0], p_mean[:, 0])
        assert np.abs(q_mean[:, 1] - p_mean[:, 1]).min() > 1e-4
        want2 = (kl_diag(mean, logvar, q_mean, q_logvar) * mask).sum(1)
        np.testing.assert_allclose(np64(e2.kl["z"]), want2, rtol=1e-4, atol=1e-4)
        assert np.abs(want2 - want).min() > 1e-4
        # the model's own prior module, teacher-forced on z2, gives the same p(z_2 | z_1)
        p = model.priors["z"].distribution(4, x.lengths, z=z2)
        np.testing.assert_allclose(np64(p.mean[:, 1]), q_mean[:, 1], rtol=1e-5, atol=1e-5)


def test_elbo_samples_argument_keeps_other_callers_identical(batch):
    model = tiny().eval()
    with torch.no_grad():
        q = model.encode(batch)
        torch.manual_seed(5)
        a = model.elbo(batch, q, ("audio",))
        torch.manual_seed(5)
        b = model.elbo(batch, q, ("audio",), samples=None)
        torch.manual_seed(5)
        c = model.elbo(batch, q, ("audio",), samples={})
        for other in (b, c):
            assert all(torch.equal(a.z[k], other.z[k]) for k in a.z)
            assert torch.equal(a.value, other.value)
        # every latent given: used as they are, no random number drawn
        rng = torch.get_rng_state()
        d = model.elbo(batch, q, ("audio",), samples=a.z)
        assert torch.equal(torch.get_rng_state(), rng) and torch.equal(d.value, a.value)
        with pytest.raises(ValueError, match="nonsense"):
            model.elbo(batch, q, ("audio",), samples={"nonsense": a.z["f"]})
        with pytest.raises(ValueError, match="shape"):
            model.elbo(batch, q, ("audio",), samples={"f": a.z["f"][:1]})


# --------------------------------------------------------------------------- loss = ELBO by hand


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_loss_equals_an_elbo_rolled_by_hand(q, batch):
    """-mean_b [sum_valid log N(x; mu(z, f), 1) - KL(q(f)||N(0,I)) - sum_valid KL(q(z_t)||p(z_t|z_<t))]
    with f = mu_f + s_f eps_f, z = mu_z + s_z eps_z from the same seed; under full q the SAME f is
    fed to q(z | f, x) and to the decoder."""
    model = tiny(q).train()
    x = batch["audio"]
    torch.manual_seed(11)
    out = model.loss(batch)
    with torch.no_grad():
        torch.manual_seed(11)  # rsample draws eps_f, then eps_z, with normal_()
        h = model.inference.features(x)
        q_f = model.inference.q_f(h, x.lengths)
        eps_f = torch.empty(q_f.mean.shape).normal_()
        f = q_f.mean + q_f.stddev * eps_f
        q_z = model.inference.q_z(h, x.lengths, f if q == "full" else None)
        eps_z = torch.empty(q_z.mean.shape).normal_()
        z = q_z.mean + q_z.stddev * eps_z
        mu = model.decoders["audio"](z, f, x.lengths)
    mask = np64(x.mask())
    rec = (unit_gauss_logpdf(np64(x.data), np64(mu)).sum(-1) * mask).sum(1)
    kl_f = kl_diag(q_f.mean, 2 * torch.log(q_f.stddev), np.zeros((4, 5)), np.zeros((4, 5)))
    p_mean, p_logvar = lstm_prior_params(model.priors["z"], z)
    kl_z = (kl_diag(q_z.mean, 2 * torch.log(q_z.stddev), p_mean, p_logvar) * mask).sum(1)
    elbo = rec - kl_f - kl_z
    np.testing.assert_allclose(float(out.loss.detach()), -elbo.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(out.terms["kl_z"].detach()), kl_z.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(out.terms["kl_f"].detach()), kl_f.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(out.terms["rec_audio"].detach()), -rec.mean(), rtol=1e-5)
    if q == "full":  # reconstructing with a different f than q(z | f, x) saw gives another value
        mu_other = model.decoders["audio"](z, q_f.mean, x.lengths).detach()
        rec_other = (unit_gauss_logpdf(np64(x.data), np64(mu_other)).sum(-1) * mask).sum(1)
        assert abs((rec_other - kl_f - kl_z).mean() - elbo.mean()) > 1e-3


def test_kl_weights_scale_each_kl_and_leave_the_logged_elbo_alone(batch):
    """beta_f, beta_z: loss = -mean(rec - beta_f KL_f - beta_z KL_z), from the same draws as the ELBO."""
    model = tiny("factorised", beta_f=3.0, beta_z=0.5).train()
    torch.manual_seed(5)
    out = model.loss(batch)
    rec, kl_f, kl_z = (float(out.terms[k].detach()) for k in ("rec_audio", "kl_f", "kl_z"))
    np.testing.assert_allclose(float(out.loss.detach()), rec + 3.0 * kl_f + 0.5 * kl_z, rtol=1e-5)
    np.testing.assert_allclose(float(out.terms["elbo"].detach()), -rec - kl_f - kl_z, rtol=1e-5)
    unweighted = tiny("factorised").train()
    torch.manual_seed(5)
    assert float(unweighted.loss(batch).loss) == pytest.approx(-float(out.terms["elbo"]), rel=1e-6)
    assert model.config.beta_f == 3.0 and model.hparams()["beta_z"] == 0.5
    with pytest.raises(ValueError, match="beta_z must be a number >= 0"):
        tiny(beta_z=-1.0)


# --------------------------------------------------------------------------- q's dependencies


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_which_q_of_z_moves_when_one_frame_moves(q, batch):
    model = tiny(q).eval()
    x = batch["audio"]
    row, t = int(torch.argmax(x.lengths)), 4
    n = int(x.lengths[row])
    data = x.data.clone()
    data[row, t] += 2.0
    with torch.no_grad():
        a = model.encode(batch)
        b = model.encode({"audio": Sequences(data, x.lengths)})
    moved = (a["z"].mean[row, :n] - b["z"].mean[row, :n]).abs().amax(-1)  # (n,)
    assert float((a["f"].mean[row] - b["f"].mean[row]).abs().max()) > 1e-6  # q(f | x_1:T) reads all
    assert float(moved[t]) > 1e-6
    others = torch.cat([moved[:t], moved[t + 1:]])
    if q == "factorised":  # q(z_s | x_s): only z_t moves, exactly
        assert float(others.max()) == 0.0
    else:  # q(z_1:T | f, x_1:T): later (and, through the bi-LSTM, earlier) frames move too
        assert bool((moved[t + 1:] > 1e-7).all()) and bool((moved[:t] > 1e-7).all())
    for other_row in range(4):  # other rows never move
        if other_row != row:
            assert torch.equal(a["z"].mean[other_row], b["z"].mean[other_row])


# --------------------------------------------------------------------------- shapes


def test_shapes_log_mel_with_lstm_decoder(batch):
    model = tiny("full", frame_decoder="lstm").eval()
    x = batch["audio"]
    t = x.max_length
    with torch.no_grad():
        q = model.encode(batch)
        assert tuple(q["f"].mean.shape) == (4, 5) and tuple(q["z"].mean.shape) == (4, t, 3)
        y = model.decode({k: v.mean for k, v in q.items()}, "audio", x.lengths)
    assert tuple(y.shape) == (4, t, 80) and (y[~x.mask()] == 0).all()
    assert model.latents["f"].role == "style" and not model.latents["f"].dynamic
    assert model.latents["z"].role == "content" and model.latents["z"].dynamic
    assert (model.latents["f"].symbol, model.latents["z"].symbol) == ("f", "z_t")


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_shapes_64x64_rgb_video(q):
    spec = ModalitySpec("video", "frames", (3, 64, 64), frame_rate=15.0)
    assert conv_layers(spec.shape) == 4 and conv_layers((1, 32, 32)) == 3 and conv_layers((1, 28, 28)) == 2
    model = tiny(q, spec=spec, conv_width=4).train()
    g = torch.Generator().manual_seed(0)
    x = Sequences(torch.rand(2, 8, 3, 64, 64, generator=g), torch.tensor([8, 5]))
    x.data[1, 5:] = 0
    out = model.loss({"video": x})
    assert torch.isfinite(out.loss) and set(out.terms) == {"rec_video", "kl_f", "kl_z", "elbo"}
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        q_ = model.encode({"video": x})
        assert tuple(q_["f"].mean.shape) == (2, 5) and tuple(q_["z"].mean.shape) == (2, 8, 3)
    y = model.swap(x, x)
    assert tuple(y.shape) == (2, 8, 3, 64, 64) and (y[1, 5:] == 0).all()
    s = model.generate(8, n=3, generator=torch.Generator().manual_seed(1))
    assert tuple(s.x.shape) == (3, 8, 3, 64, 64)


def test_colour_jitter_shuffles_and_scales_channels_per_sequence():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(40, 2, 3, 2, 2)
    x[:, :, 0], x[:, :, 1], x[:, :, 2] = 0.2, 0.5, 0.8
    x[:, 1, :, 0, 0] = 0.0  # a black pixel
    y = colour_jitter(x, generator=g)
    assert y.shape == x.shape and (y[:, 1, :, 0, 0] == 0).all()
    low, high = JITTER_GAIN
    for b in range(40):
        values = y[b, 0, :, 1, 1]
        assert torch.equal(y[b, :, :, 1, 1], values.expand(2, 3))  # one recolouring per sequence
        # each output channel is one input channel times a gain in range
        sources = torch.tensor([0.2, 0.5, 0.8])
        ratios = values[:, None] / sources[None, :]
        fits = (ratios >= low - 1e-6) & (ratios <= high + 1e-6)
        assert fits.any(dim=1).all()
    orders = {tuple(torch.argsort(y[b, 0, :, 1, 1]).tolist()) for b in range(40)}
    assert len(orders) > 3  # channels change places, not only brightness
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        colour_jitter(torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_z_colour_jitter_reaches_q_z_only_and_only_in_training(q):
    spec = ModalitySpec("video", "frames", (3, 16, 16), frame_rate=15.0)
    plain = tiny(q, spec=spec, conv_width=4)
    jit = tiny(q, spec=spec, conv_width=4, z_colour_jitter=True)
    jit.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(0)
    x = {"video": Sequences(torch.rand(3, 4, 3, 16, 16, generator=g), torch.tensor([4, 4, 2]))}
    with torch.no_grad():
        for m in (plain, jit):
            m.train()
        qp = plain.infer(x)[0]
        torch.manual_seed(1)
        qj = jit.infer(x)[0]
        assert torch.equal(qj["f"].mean, qp["f"].mean)  # q(f) reads the true frames
        assert not torch.allclose(qj["z"].mean, qp["z"].mean)  # q(z) reads recoloured ones
        jit.eval(), plain.eval()
        assert torch.equal(jit.encode(x)["z"].mean, plain.encode(x)["z"].mean)
    assert jit.config.z_colour_jitter is True
    with pytest.raises(ValueError, match="z_colour_jitter needs colour image frames"):
        tiny(z_colour_jitter=True)


# --------------------------------------------------------------------------- generation helpers


def test_generation_helpers(batch):
    model = tiny().eval()
    x = batch["audio"]
    with torch.no_grad():
        q = model.encode(batch)
        f, z = q["f"].mean, q["z"].mean
        # swap(x, x) is the reconstruction from posterior means; swap(a, b) = decode(f_a, z_b)
        torch.testing.assert_close(model.swap(x, x), model.decode({"f": f, "z": z}, "audio", x.lengths))
        perm = torch.tensor([1, 2, 3, 0])
        want = model.decode({"f": f[perm], "z": z}, "audio", x.lengths)
        torch.testing.assert_close(model.swap(x.index(perm), x), want)
    # fix f, draw z_1:T from the LSTM prior: f kept, z new and different per row
    fixed_f = f[:1].repeat(3, 1)
    a = model.generate(10, f=fixed_f, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.z["f"], fixed_f) and tuple(a.z["z"].shape) == (3, 10, 3)
    assert not torch.allclose(a.z["z"][0], a.z["z"][1])
    again = model.generate(10, f=fixed_f, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x, a.x)
    # fix z, draw f: z kept (cut and zeroed past each length), f new
    b = model.generate(x.lengths, z=z, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(b.z["z"], z)
    assert tuple(b.z["f"].shape) == (4, 5) and not torch.allclose(b.z["f"], f)
    with pytest.raises(ValueError, match="rows"):
        model.generate(5, f=fixed_f, n=4)
    with pytest.raises(ValueError, match="f must be"):
        model.generate(5, f=torch.zeros(2, 9))


# --------------------------------------------------------------------------- config and bad input


def test_config_registry_and_bad_input():
    assert REGISTRY["dsae"].config is DSAEConfig
    with pytest.raises(ValueError, match="q must be 'factorised' or 'full', got 'fulll'"):
        DSAE([MEL], q="fulll")
    with pytest.raises(ValueError, match="frame_decoder='conv'"):
        DSAE([MEL], frame_decoder="conv")
    with pytest.raises(ValueError, match="frame_encoder='mlp'"):
        DSAE([ModalitySpec("video", "frames", (3, 64, 64))], frame_encoder="mlp")
    with pytest.raises(ValueError, match="one 'sequence' or 'frames' modality"):
        DSAE([ModalitySpec("image", "image", (1, 28, 28))])
    with pytest.raises(ValueError, match="one 'sequence' or 'frames' modality"):
        DSAE([MEL, ModalitySpec("video", "frames", (3, 64, 64))])
    with pytest.raises(ValueError, match="z_dim must be an integer >= 1"):
        DSAE([MEL], z_dim=0)
    model = build_model({"name": "dsae", "modalities": [MEL.to_dict()], **TINY, "q": "full"})
    assert model.config == DSAEConfig(**{**TINY, "q": "full"})
    with pytest.raises(ValueError, match="'audio' expects 80-dim frames"):
        model.encode({"audio": Sequences(torch.zeros(2, 3, 79), torch.tensor([3, 2]))})
    with pytest.raises(ValueError, match="needs lengths"):
        model.decode({"f": torch.zeros(2, 5), "z": torch.zeros(2, 3, 3)}, "audio")


# --------------------------------------------------------------------------- swapping f moves the speaker


@pytest.mark.parametrize("q", ["factorised", "full"])
def test_swapping_f_moves_the_speaker(speech, q):
    """A tiny DSAE trained 200 steps on two real FSDD speakers of the embedded sample (george,
    nicolas: similar loudness, different spectra; a pair differing mostly in level, e.g. jackson vs
    yweweler, is carried by a 1-2 dim z_t as per-frame energy instead): decoding [f of an utterance
    of speaker A, z_1:T of one of B] is closer, in mean frame, to A's mean log-Mel frame (training
    split) than to B's, for >= 10 of 12 held-out pairs (both directions)."""
    a_spk, b_spk = "george", "nicolas"
    tr, te = speech.split("audio", "train"), speech.split("audio", "test")
    by: dict[tuple[bool, str], list[np.ndarray]] = {}
    for split in (tr, te):
        for ex, spk in zip(split.examples, split.speakers, strict=True):
            by.setdefault((split is te, spk), []).append(np.asarray(ex)[:40])
    if not all(by.get((t, s)) for t in (False, True) for s in (a_spk, b_spk)):
        pytest.skip(f"the embedded sample lacks {a_spk} or {b_spk} in a split")
    means = {s: np.concatenate(by[(False, s)]).mean(0) for s in (a_spk, b_spk)}
    train = by[(False, a_spk)] + by[(False, b_spk)]
    torch.manual_seed(0)
    model = DSAE([MEL], f_dim=8, z_dim=2, hidden=32, prior_hidden=16, q=q)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = rng.choice(len(train), size=24, replace=False)
        loss = model.loss({"audio": Sequences.from_list([train[i] for i in idx])}).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    wins, total = 0, 0
    for src, dst in ((a_spk, b_spk), (b_spk, a_spk)):
        xs, xd = by[(True, src)][:6], by[(True, dst)][:6]
        y = model.swap(Sequences.from_list(xs), Sequences.from_list(xd))
        for i, v in enumerate(xd):
            m = y[i, :len(v)].mean(0).numpy()
            wins += int(np.linalg.norm(m - means[src]) < np.linalg.norm(m - means[dst]))
            total += 1
    assert wins >= 10, f"{wins}/{total} swaps moved to the speaker of f ({a_spk} vs {b_spk})"
