"""Importance-weighted estimators on a linear-Gaussian model where log p is known exactly."""

import math

import numpy as np
import pytest
import torch
from model_helpers import FixedHead, np64
from torch import nn
from torch.distributions import MultivariateNormal

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec
from dispart.evaluation.likelihood import (
    evaluate_likelihoods,
    log_conditional,
    log_importance_weights,
    log_marginal,
)
from dispart.models import MVAE, PVAE
from dispart.nn.encoders import diag_gaussian

D1, D2, L = 3, 2, 2


def linear_model(seed=0):
    """z ~ N(0, I_2); x1 = W1 z + b1 + e, x2 = W2 z + b2 + e (unit noise); W = [W1; W2] has
    orthogonal columns, so the exact joint posterior is diagonal."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D1 + D2, L, generator=g))
    w = q * torch.tensor([1.5, 0.7])
    b = torch.randn(D1 + D2, generator=g)
    torch.manual_seed(seed)
    model = MVAE([ModalitySpec("x1", "vector", (D1,)), ModalitySpec("x2", "vector", (D2,))],
                 latent_dim=L, hidden=8)
    for name, rows in (("x1", slice(0, D1)), ("x2", slice(D1, D1 + D2))):
        lin = nn.Linear(L, rows.stop - rows.start)
        with torch.no_grad():
            lin.weight.copy_(w[rows])
            lin.bias.copy_(b[rows])
        model.decoders[name] = lin
    return model, w, b


def exact(w, b, x, rows):
    cov = w[rows] @ w[rows].T + torch.eye(rows.stop - rows.start)
    return MultivariateNormal(b[rows], cov).log_prob(x)


def data(w, b, n=40, seed=101):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, L, generator=g)
    x = z @ w.T + b + torch.randn(n, D1 + D2, generator=g)
    return {"x1": x[:, :D1], "x2": x[:, D1:]}


X1, X2, ALL = slice(0, D1), slice(D1, D1 + D2), slice(0, D1 + D2)


def test_exact_posterior_gives_exact_estimate_with_zero_variance():
    model, w, b = linear_model()
    batch = data(w, b)
    x = torch.cat([batch["x1"], batch["x2"]], dim=1)
    prec = 1 + (w ** 2).sum(0)  # W^T W is diagonal
    mean = ((x - b) @ w) / prec

    class Exact(MVAE):
        def encode(self, batch_):
            return {"z": diag_gaussian(mean, -torch.log(prec).expand_as(mean))}

    exact_model = Exact.__new__(Exact)
    exact_model.__dict__ = model.__dict__
    est = log_marginal(exact_model, batch, ["x1", "x2"], k=1)
    assert torch.allclose(est.log_p, exact(w, b, x, ALL), atol=1e-4)
    est = log_marginal(exact_model, batch, ["x1", "x2"], k=5)
    assert est.log_w_var.max().item() < 1e-8


def test_estimates_increase_with_k_towards_the_exact_value():
    torch.manual_seed(0)
    model, w, b = linear_model()
    batch = data(w, b, n=300)
    truth = {
        ("x1",): exact(w, b, batch["x1"], X1).mean().item(),
        ("x1", "x2"): exact(w, b, torch.cat([batch["x1"], batch["x2"]], 1), ALL).mean().item(),
    }
    for targets, proposal in [(("x1",), ("x1",)), (("x1", "x2"), ("x1",)), (("x1", "x2"), ("x1", "x2")),
                              (("x1",), ())]:
        torch.manual_seed(1)
        ests = [log_marginal(model, batch, targets, proposal, k=k).log_p.mean().item()
                for k in (1, 10, 100, 2000)]
        t = truth[targets]
        assert ests[0] < ests[1] < ests[2] + 0.02, (targets, proposal, ests)
        assert ests[-1] <= t + 0.05 and ests[-1] == pytest.approx(t, abs=0.15), (targets, ests, t)


def test_conditional_matches_exact_and_variance_reported():
    torch.manual_seed(0)
    model, w, b = linear_model()
    batch = data(w, b, n=50)
    xx = torch.cat([batch["x1"], batch["x2"]], 1)
    truth = (exact(w, b, xx, ALL) - exact(w, b, batch["x2"], X2)).mean().item()
    torch.manual_seed(2)
    est = log_conditional(model, batch, ["x1"], ["x2"], k=2000, k_given=5000)
    assert est.log_p.mean().item() == pytest.approx(truth, abs=0.15)
    assert est.joint.k == 2000 and est.given.k == 5000 and (est.joint.log_w_var >= 0).all()
    # log p(x1 | x2) = log p(x1, x2) - log p(x2), row by row; q(z | x2) is not the exact
    # posterior of (x1, x2), so its log weights vary.
    assert torch.equal(est.log_p, est.joint.log_p - est.given.log_p)
    assert (est.joint.log_w_var > 1e-3).all()
    with pytest.raises(ValueError, match="overlap"):
        log_conditional(model, batch, ["x1"], ["x1"])
    # Data-set level: batches, chunked decoding (max_rows) gives a close answer.
    torch.manual_seed(3)
    res = evaluate_likelihoods(model, [batch, batch], ["x1"], k=500, max_rows=64)
    assert res["n"] == 100
    assert res["log_p"] == pytest.approx(exact(w, b, batch["x1"], X1).mean().item(), abs=0.2)


class Recorder(nn.Module):
    """A decoder that remembers what it was given and what it returned."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, z, *lengths):
        out = self.inner(z, *lengths)
        self.calls.append((z, out))
        return out


def test_pvae_estimates_use_the_prior_for_styles_not_inferred():
    torch.manual_seed(0)
    m = PVAE([ModalitySpec("audio", "sequence", (4,)), ModalitySpec("v", "vector", (3,))],
             semantic_dim=2, style_dim=2, hidden=8)
    batch = {"audio": Sequences.from_list([torch.randn(n, 4) for n in (2, 5, 3)]),
             "v": torch.randn(3, 3)}
    for targets, proposal in [(["audio"], ["audio"]), (["audio", "v"], ["v"]),
                              (["audio", "v"], ["audio", "v"]), (["v"], [])]:
        est = log_marginal(m, batch, targets, proposal, k=20, max_rows=16)
        assert est.log_p.shape == (3,) and torch.isfinite(est.log_p).all()
    assert m.training  # estimators restore the mode
    assert not math.isnan(log_conditional(m, batch, ["v"], ["audio"], k=10, k_given=10).log_p.sum())

    # log p(audio, v) with q = r_v: z_s, z_v ~ r_v(. | v), z_audio ~ p(z_audio) (r_v does not
    # infer it; r_audio, made far from the prior here, must not be used), and by hand
    # log w = log p(audio | z_s, z_audio) + log p(v | z_s, z_v) + log p(z_s) p(z_v) / r_v(z_s, z_v).
    for name in m.unimodal["audio"].heads:
        m.unimodal["audio"].heads[name] = FixedHead(torch.full((3, 2), 3.0), torch.full((3, 2), -1.0))
    m.decoders["audio"], m.decoders["v"] = Recorder(m.decoders["audio"]), Recorder(m.decoders["v"])
    k = 2000
    lw = log_importance_weights(m, batch, ["audio", "v"], ["v"], k=k)
    (za, mean_a), = m.decoders["audio"].calls
    (zv, mean_v), = m.decoders["v"].calls
    za, mean_a, zv, mean_v = (np64(t).reshape(k, 3, *t.shape[1:])
                              for t in (za, mean_a, zv, mean_v))
    assert np.array_equal(za[..., :2], zv[..., :2])  # one z_s sample feeds both decoders
    z_s, z_audio, z_v = za[..., :2], za[..., 2:], zv[..., 2:]
    assert np.abs(z_audio.mean(0)).max() < 0.1 and np.abs(z_audio.var(0) - 1).max() < 0.15
    r = m.unimodal["v"](batch["v"])
    frames = np64(batch["audio"].data)
    valid = (np.arange(frames.shape[1]) < batch["audio"].lengths.numpy()[:, None])[None, ..., None]

    def log_normal(x, mean, var=1.0):
        return -0.5 * np.log(2 * np.pi * var) - 0.5 * (x - mean) ** 2 / var

    hand = ((log_normal(frames[None], mean_a) * valid).sum((2, 3))
            + log_normal(np64(batch["v"]), mean_v).sum(-1))
    for z, post in ((z_s, r["z_s"]), (z_v, r["z_v"])):
        mu, var = np64(post.mean), np64(post.variance)
        hand += (log_normal(z, 0.0) - log_normal(z, mu, var)).sum(-1)
    np.testing.assert_allclose(np64(lw), hand, rtol=1e-5, atol=1e-4)


def test_shared_samples_match_separate_estimates_and_table_matches_exact():
    from dispart.evaluation.likelihood import (
        likelihood_table,
        log_importance_weights,
        log_importance_weights_multi,
    )

    model, w, b = linear_model()
    batch = data(w, b, n=30)
    torch.manual_seed(5)
    multi = log_importance_weights_multi(model, batch, [("x1",), ("x1", "x2")], ("x1",), k=7)
    torch.manual_seed(5)
    single = log_importance_weights(model, batch, ("x1",), ("x1",), k=7)
    assert multi[("x1",)].shape == (7, 30) and torch.allclose(multi[("x1",)], single)
    # The joint weights add exactly log p(x2 | z) of the same samples.
    assert (multi[("x1", "x2")] < multi[("x1",)]).float().mean() > 0.5
    # By hand (numpy): z_k ~ q(z | x1) (the estimator's first draw after the seed), then
    # log w = log N(x1; W1 z + b1, I) + log N(z; 0, I) - log q(z | x1), plus log N(x2; W2 z + b2, I).
    q = model.encode({"x1": batch["x1"]})["z"]
    torch.manual_seed(5)
    z = np64(q.sample((7,)))  # (K, B, L)
    w64, b64 = np64(w), np64(b)
    mu, var = np64(q.mean), np64(q.variance)

    def log_normal(x, mean, v):
        return (-0.5 * np.log(2 * np.pi * v) - 0.5 * (x - mean) ** 2 / v).sum(-1)

    lw_x1 = (log_normal(np64(batch["x1"]), z @ w64[X1].T + b64[X1], 1.0)
             + log_normal(z, 0.0, 1.0) - log_normal(z, mu, var))
    lw_x2 = log_normal(np64(batch["x2"]), z @ w64[X2].T + b64[X2], 1.0)
    np.testing.assert_allclose(np64(multi[("x1",)]), lw_x1, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np64(multi[("x1", "x2")] - multi[("x1",)]), lw_x2,
                               rtol=1e-5, atol=1e-4)
    # The estimate is log mean exp of the weights; its variance is the weights' (K - 1 divisor).
    torch.manual_seed(5)
    est = log_marginal(model, batch, ["x1"], k=7)
    lse = np.log(np.exp(lw_x1 - lw_x1.max(0)).mean(0)) + lw_x1.max(0)
    np.testing.assert_allclose(np64(est.log_p), lse, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np64(est.log_w_var), lw_x1.var(0, ddof=1), rtol=1e-4, atol=1e-5)

    big = data(w, b, n=200, seed=7)
    xx = torch.cat([big["x1"], big["x2"]], 1)
    truth = {"log_p_x1": exact(w, b, big["x1"], X1).mean().item(),
             "log_p_x1_x2": exact(w, b, xx, ALL).mean().item()}
    truth["log_p_x1_given_x2"] = truth["log_p_x1_x2"] - exact(w, b, big["x2"], X2).mean().item()
    torch.manual_seed(6)
    seen = []
    table = likelihood_table(model, big, "x1", "x2", k=2000, k_given=5000, rows_per_step=64,
                             progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (200, 200) and table["n"] == 200 and table["k"] == 2000
    for key, value in truth.items():
        assert table[key] == pytest.approx(value, abs=0.15), key
        assert table[key + "/log_w_var"] >= 0
    torch.manual_seed(8)
    other = likelihood_table(model, big, "x1", "x2", k=2000, k_given=5000, conditional_proposal="x2")
    assert other["log_p_x1_given_x2"] == pytest.approx(truth["log_p_x1_given_x2"], abs=0.15)
    assert other["proposals"]["log_p_x1_given_x2"].startswith("q(z|x2)")
    torch.manual_seed(9)
    joint = likelihood_table(model, big, "x1", "x2", k=2000, k_given=5000, proposal=("x1", "x2"))
    assert joint["proposals"]["log_p_x1"] == "q(z|x1,x2)"
    for key, value in truth.items():
        assert joint[key] == pytest.approx(value, abs=0.15), key
    only = likelihood_table(model, big, "x1", None, k=10)
    assert "log_p_x1_x2" not in only and only["k_given"] is None
