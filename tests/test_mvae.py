"""MVAE / MVAE-Q: product (and quotient) of experts, prior expert, sub-sampled objective,
lambda weights, beta annealing, Bernoulli and categorical likelihoods."""

import numpy as np
import pytest
import torch
from model_helpers import (
    FixedExpertHead,
    LinearDecoder,
    kl_std,
    known_gaussian,
    np64,
    sample,
    unit_gauss_logpdf,
    vec,
    vec_batch,
)

from dispart.batches.labels import binarize, binary_image_spec, label_spec
from dispart.models import MVAE, build_model
from dispart.models.mvae import random_subsets

IMG = binary_image_spec()
LAB = label_spec(10)




def image_label_batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": binarize(torch.rand(b, 1, 28, 28, generator=g), 0.5),
            "label": torch.randint(0, 10, (b,), generator=g)}


def test_encode_is_product_with_prior_expert():
    torch.manual_seed(0)
    m = MVAE([vec("a"), vec("b")], latent_dim=2, hidden=8)
    b = vec_batch("ab")
    (ma, la), (mb, lb) = m.expert_params("a", b["a"]), m.expert_params("b", b["b"])
    q = m.encode(b)["z"]
    prec = 1 + torch.exp(-la) + torch.exp(-lb)  # prior expert N(0, 1) has precision 1
    assert torch.allclose(q.variance, 1 / prec, rtol=1e-5)
    assert torch.allclose(q.mean, (torch.exp(-la) * ma + torch.exp(-lb) * mb) / prec, atol=1e-5)
    # Unimodal posterior: the prior expert times that modality's expert only.
    qa = m.encode({"a": b["a"]})["z"]
    assert torch.allclose(qa.variance, 1 / (1 + torch.exp(-la)), rtol=1e-5)
    assert torch.allclose(qa.mean, torch.exp(-la) * ma / (1 + torch.exp(-la)), atol=1e-5)
    assert m.latent_names("a") == ("z",)


def test_mvae_q_is_product_over_prior_and_always_valid():
    torch.manual_seed(0)
    m = MVAE([vec("a"), vec("b"), vec("c")], latent_dim=2, hidden=8, quotient=True)
    assert m.name == "mvae_q"
    b = vec_batch("abc")
    ps = [m.expert_params(k, b[k]) for k in "abc"]
    assert all((lv <= 0).all() for _, lv in ps)  # variance constraint: V_i <= V_prior
    q = m.encode(b)["z"]
    t = [torch.exp(-lv) for _, lv in ps]
    prec = sum(t) - 2  # prod of three q's / p(z)^2
    assert torch.allclose(q.variance, 1 / prec, rtol=1e-4)
    assert torch.allclose(q.mean, sum(ti * mi for ti, (mi, _) in zip(t, ps, strict=True)) / prec,
                          atol=1e-4)
    # A single modality is its own q(z | x), no quotient.
    qa = m.encode({"a": b["a"]})["z"]
    assert torch.allclose(qa.variance, torch.exp(ps[0][1]), rtol=1e-5)
    rebuilt = build_model(m.hparams())
    rebuilt.load_state_dict(m.state_dict())
    assert rebuilt.quotient and rebuilt.name == "mvae_q"


def test_extreme_expert_outputs_give_no_nan():
    torch.manual_seed(0)
    for quotient in (False, True):
        m = MVAE([vec("a"), vec("b")], latent_dim=2, hidden=8, quotient=quotient)
        with torch.no_grad():
            m.experts["a"].head.linear.bias[2:] = -1e4  # log-variance of expert a: -1e4
            m.experts["b"].head.linear.bias[2:] = 1e4
        out = m.loss(vec_batch("ab"))
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        # The expert of variance ~e^-1e4 decides q alone (a; for MVAE-Q b, whose raw 1e4 is a
        # log-variance of -1e4 there): its mean, a log-variance clamped at -30.
        b = vec_batch("ab")
        sharp = "b" if quotient else "a"
        with torch.no_grad():
            q = m.encode(b)["z"]
            assert torch.allclose(q.mean, m.expert_params(sharp, b[sharp])[0], atol=1e-5)
            assert torch.allclose(q.variance.log(), torch.full_like(q.mean, -30.0), atol=1e-4)


def test_subsampled_objective_term_counts():
    torch.manual_seed(0)
    for names, k, expected in [("ab", 5, 3), ("abc", 0, 4), ("abc", 2, 6), ("abcd", 5, 10),
                               ("a", 3, 1)]:
        m = MVAE([vec(n) for n in "abcd"], latent_dim=2, hidden=8, k=k)
        subsets = m.elbo_subsets(tuple(names))
        assert len(subsets) == expected, (names, k)
        assert subsets[0] == tuple(names)
        assert all(2 <= len(s) < len(names) for s in subsets[1 + len(names) * (len(names) > 1):])
        out = m.loss(vec_batch(names))
        assert out.terms["n_elbo_terms"].item() == expected
    # Random subsets cover every admissible subset, uniformly enough.
    g = torch.Generator().manual_seed(0)
    draws = random_subsets(tuple("abcd"), 2000, g)
    counts = {s: draws.count(s) for s in set(draws)}
    assert len(counts) == 2 ** 4 - 4 - 2
    assert min(counts.values()) > 2000 / 10 * 0.6


def test_loss_is_sum_of_elbo_terms_with_lambdas_and_beta():
    torch.manual_seed(0)
    m = MVAE([vec("a"), vec("b")], latent_dim=2, hidden=8, lambdas={"a": 2.0}, beta=0.5)
    b = vec_batch("ab")
    torch.manual_seed(3)
    out = m.loss(b)
    torch.manual_seed(3)
    expected = 0
    for subset in [("a", "b"), ("a",), ("b",)]:
        e = m.subset_elbo(b, subset, beta=0.5)
        value, rec, kl = e.value, e.rec, e.kl_total
        lam = {"a": 2.0, "b": 1.0}
        assert torch.allclose(value, sum(lam[k] * rec[k] for k in subset) - 0.5 * kl)
        expected = expected + value
    assert out.loss.item() == pytest.approx(-expected.mean().item(), rel=1e-5)
    assert out.terms["elbo"].item() == pytest.approx(
        -(out.terms["rec_a"] + out.terms["rec_b"] + out.terms["kl"]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="unknown modalities"):
        MVAE([vec("a")], lambdas={"x": 1.0})


def test_loss_by_hand_with_known_experts_and_decoders():
    """MVAE eq. (2) and (5) by hand: experts with known outputs, linear decoders, numpy.

    -(1/B) sum_b sum_{Y in {ab, a, b}} [sum_{m in Y} lambda_m log N(x^m; W_m z_Y + c_m, I)
    - beta KL(q(z|Y) || N(0, I))], q(z|Y) = N(0, I) prod_{m in Y} N(mu_m, V_m), z_Y ~ q(z|Y)."""
    m = MVAE([vec("a"), vec("b", 2)], latent_dim=3, hidden=4, lambdas={"a": 2.0}, beta=0.5)
    g = torch.Generator().manual_seed(0)
    experts = {k: known_gaussian(g, 5, 3) for k in "ab"}
    for k in "ab":
        m.experts[k].head = FixedExpertHead(*experts[k])
    dec = {k: LinearDecoder(torch.randn(d, 3, generator=g), torch.randn(d, generator=g))
           for k, d in (("a", 3), ("b", 2))}
    m.decoders.update(dec)
    b = {"a": torch.randn(5, 3, generator=g), "b": torch.randn(5, 2, generator=g)}
    lam = {"a": 2.0, "b": 1.0}
    torch.manual_seed(3)
    total, plain = 0.0, {}
    for subset in ("ab", "a", "b"):  # the full set, then each modality (k = 0)
        prec = 1 + sum(np.exp(-np64(experts[k][1])) for k in subset)
        mean = sum(np.exp(-np64(experts[k][1])) * np64(experts[k][0]) for k in subset) / prec
        z = sample(mean, -np.log(prec), torch.randn(5, 3))
        rec = {k: unit_gauss_logpdf(b[k], z @ np64(dec[k].weight).T + np64(dec[k].bias)).sum(1)
               for k in subset}
        kl = kl_std(mean, -np.log(prec))
        total = total + sum(lam[k] * rec[k] for k in subset) - 0.5 * kl
        plain[subset] = (sum(rec.values()) - kl, rec, kl)
    torch.manual_seed(3)
    out = m.loss(b)
    assert out.loss.item() == pytest.approx(-total.mean(), rel=1e-5)
    t = out.terms
    assert t["elbo"].item() == pytest.approx(plain["ab"][0].mean(), rel=1e-5)
    assert t["kl"].item() == pytest.approx(plain["ab"][2].mean(), rel=1e-5)
    for k in "ab":
        assert t[f"rec_{k}"].item() == pytest.approx(-plain["ab"][1][k].mean(), rel=1e-5)
        assert t[f"elbo_{k}"].item() == pytest.approx(plain[k][0].mean(), rel=1e-5)


def test_beta_is_annealed_over_training_steps_and_saved():
    torch.manual_seed(0)
    m = MVAE([vec("a"), vec("b")], latent_dim=2, hidden=8, beta=1.0, anneal_steps=4)
    b = vec_batch("ab")
    betas = [m.loss(b).terms["beta"].item() for _ in range(6)]
    assert betas == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    m.eval()
    m.loss(b)
    with torch.no_grad():
        m.train()
        m.loss(b)
    assert int(m.anneal_step) == 6  # neither evaluation nor no-grad calls count
    rebuilt = build_model(m.hparams())
    rebuilt.load_state_dict(m.state_dict())
    assert rebuilt.current_beta() == 1.0 and rebuilt.anneal_steps == 4


def test_bernoulli_image_and_categorical_label_mvae():
    torch.manual_seed(0)
    m = MVAE([IMG, LAB], latent_dim=4, hidden=16)
    b = image_label_batch()
    z = m.encode({"label": b["label"]})["z"].mean
    img, lab = m.decode({"z": z}, "image"), m.decode({"z": z}, "label")
    assert img.shape == (6, 1, 28, 28) and ((img >= 0) & (img <= 1)).all()
    assert torch.allclose(lab.sum(-1), torch.ones(6), atol=1e-5)
    # decode gives the likelihoods' means: sigmoid of the image logits, softmax of the label's.
    assert torch.allclose(img, torch.sigmoid(m.decode_params({"z": z}, "image")))
    assert torch.allclose(lab, torch.softmax(m.decode_params({"z": z}, "label"), -1))
    # One-hot labels and indices are the same observation.
    onehot = torch.nn.functional.one_hot(b["label"], 10).float()
    assert torch.allclose(m.encode({"label": onehot})["z"].mean, z, atol=1e-6)
    with pytest.raises(ValueError, match="integer classes"):
        m.encode({"label": torch.rand(6, 3)})
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    torch.manual_seed(1)
    first = m.loss(b).loss.item()
    for _ in range(15):
        opt.zero_grad()
        m.loss(b).loss.backward()
        opt.step()
    torch.manual_seed(1)
    assert m.loss(b).loss.item() < first


def test_build_model_round_trips():
    m = MVAE([IMG, LAB], latent_dim=4, hidden=16, k=2, lambdas={"image": 0.5}, beta=0.8,
             anneal_steps=10)
    h = m.hparams()
    rebuilt = build_model(h)
    rebuilt.load_state_dict(m.state_dict())
    assert rebuilt.hparams() == h and type(rebuilt) is MVAE


def test_swish_activation_replaces_every_relu_of_the_mlp_experts_and_decoders():
    torch.manual_seed(0)
    specs = [vec("image", 784), LAB]
    swish = MVAE(specs, latent_dim=4, hidden=8, activation="swish")
    relu = MVAE(specs, latent_dim=4, hidden=8)
    acts = [type(mod) for mod in swish.modules() if isinstance(mod, (torch.nn.ReLU, torch.nn.SiLU))]
    assert acts == [torch.nn.SiLU] * 8  # 2 per expert, 2 per decoder, two modalities
    assert not any(isinstance(mod, torch.nn.SiLU) for mod in relu.modules())
    # The same layer computes x * sigmoid(x), and the choice travels with the model's hparams.
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(swish.experts["label"].pre.net[1](x), x * torch.sigmoid(x))
    rebuilt = build_model(swish.hparams())
    assert rebuilt.activation == "swish" and swish.hparams()["activation"] == "swish"
    with pytest.raises(ValueError, match="activation must be one of"):
        MVAE(specs, latent_dim=4, hidden=8, activation="gelu")


def test_decoder_layers_sets_the_hidden_layers_of_the_mlp_decoders_only():
    specs = [vec("image", 784), LAB]
    deep = MVAE(specs, latent_dim=4, hidden=8, decoder_layers=3, activation="swish")

    def linears(module):
        return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]

    # the reference code's MNIST decoders: latent -> 8 -> 8 -> 8 -> output
    assert linears(deep.decoders["image"]) == [(4, 8), (8, 8), (8, 8), (8, 784)]
    assert linears(deep.decoders["label"]) == [(4, 8), (8, 8), (8, 8), (8, 10)]
    assert linears(MVAE(specs, latent_dim=4, hidden=8).decoders["image"]) == [(4, 8), (8, 8), (8, 784)]
    assert linears(deep.experts["image"]) == [(784, 8), (8, 8), (8, 8)]  # experts unchanged (head 2x4)
    assert deep.hparams()["decoder_layers"] == 3
    rebuilt = build_model(deep.hparams())
    rebuilt.load_state_dict(deep.state_dict())
    assert rebuilt.decoder_layers == 3
    with pytest.raises(ValueError, match="layers must be >= 1"):
        MVAE(specs, latent_dim=4, hidden=8, decoder_layers=0)


def test_embedding_init_draws_the_label_experts_first_layer_from_n01_with_no_bias():
    specs = [vec("image", 784), LAB]
    torch.manual_seed(0)
    emb = MVAE(specs, latent_dim=4, hidden=256, categorical_init="embedding")
    torch.manual_seed(0)
    lin = MVAE(specs, latent_dim=4, hidden=256)
    first = emb.experts["label"].pre.net[0]
    assert first.weight.shape == (256, 10) and torch.count_nonzero(first.bias) == 0
    assert 0.9 < float(first.weight.std()) < 1.1  # N(0, 1) over 2,560 draws (nn.Embedding's init)
    assert float(lin.experts["label"].pre.net[0].weight.abs().max()) <= 10 ** -0.5  # U(+-1/sqrt(10))
    # only that layer: the image expert is the same draw in both (it is built first)
    assert torch.equal(emb.experts["image"].pre.net[0].weight, lin.experts["image"].pre.net[0].weight)
    # a label's hidden vector is its weight column through the activation, as an embedding's row
    y = torch.tensor([3])
    h = emb.experts["label"].pre.net[:2](torch.nn.functional.one_hot(y, 10).float())
    assert torch.allclose(h[0], torch.relu(first.weight[:, 3]))
    rebuilt = build_model(emb.hparams())
    assert rebuilt.categorical_init == "embedding" and emb.hparams()["categorical_init"] == "embedding"
    with pytest.raises(ValueError, match="categorical_init must be one of"):
        MVAE(specs, latent_dim=4, hidden=8, categorical_init="xavier")
