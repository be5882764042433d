"""Objective terms against values computed by hand."""

import math

import numpy as np
import pytest
import torch
from model_helpers import kl_diag

from dispart.batches.batch import Sequences
from dispart.distributions import UnitGaussianLikelihood, kl_to_prior
from dispart.nn.encoders import diag_gaussian
from dispart.objectives import (
    coherence_kl,
    correlation_matrix,
    cross_correlation,
    cross_modal_hinge,
    kernel_dependence,
    kl_dynamic,
    kl_static,
    kl_sum_to_prior,
    label_confusion,
    random_negatives,
    rbf_kernel,
    running_cross_correlation,
    style_content_critic,
)


def test_kl_of_known_gaussians_to_prior():
    # KL(N(1, 2^2) || N(0, 1)) = log(1/2) + (4 + 1) / 2 - 1/2 per dimension.
    q = diag_gaussian(torch.tensor([[1.0, 1.0, 1.0]]), torch.log(torch.tensor([[4.0, 4.0, 4.0]])))
    expected = 3 * (math.log(0.5) + 2.5 - 0.5)
    assert kl_to_prior(q).item() == pytest.approx(expected, rel=1e-6)


def test_kl_between_two_gaussians_and_coherence_sum():
    # KL(N(0, 1) || N(1, 2^2)) = log 2 + (1 + 1) / 8 - 1/2 per dim.
    q = diag_gaussian(torch.zeros(1, 2), torch.zeros(1, 2))
    r = diag_gaussian(torch.ones(1, 2), torch.log(torch.full((1, 2), 4.0)))
    per_latent = 2 * (math.log(2) + 2 / 8 - 0.5)
    joint = {"z_s": q, "z_audio": q, "z_image": q}
    unimodal = {"audio": {"z_s": r, "z_audio": r}, "image": {"z_s": q, "z_image": r}}
    # audio: two latents differ; image: z_s equal (0), z_image differs.
    assert coherence_kl(joint, unimodal).item() == pytest.approx(3 * per_latent, rel=1e-6)
    assert coherence_kl(joint, {"audio": {"z_s": q, "z_audio": q}}).item() == pytest.approx(0.0)


def test_kl_sum_to_prior_adds_latents():
    q = diag_gaussian(torch.tensor([[2.0]]), torch.zeros(1, 1))  # KL = 0.5 * 2^2 = 2
    assert kl_sum_to_prior({"a": q, "b": q}).item() == pytest.approx(4.0)


def test_rbf_kernel_values():
    a = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [1.0, 2.0]])
    assert torch.allclose(rbf_kernel(a, b), torch.tensor([math.exp(-1.0), 1.0]))


def test_cross_modal_hinge_hand_computed():
    mu = {"audio": torch.tensor([[0.0], [2.0]]), "image": torch.tensor([[0.0], [0.0]])}
    neg = torch.tensor([1, 0])
    e2 = math.exp(-2.0)
    # m=audio, anchor=image: row0 max(0, .5 - 1 + e2) = 0; row1 .5 - e2 + 1
    # m=image, anchor=audio: row0 .5 - 1 + 1 = .5; row1 .5 - e2 + e2 = .5
    expected = torch.tensor([(0 + 0.5) / 2, (0.5 - e2 + 1 + 0.5) / 2])
    got = cross_modal_hinge(mu, neg, margin=0.5)
    assert torch.allclose(got, expected, atol=1e-6)


def test_cross_modal_hinge_zero_when_separated_and_aligned():
    # Same-sample means identical (k = 1), negatives far apart (k ~ 0): no violation.
    mu = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    got = cross_modal_hinge({"audio": mu, "image": mu.clone()}, torch.tensor([1, 2, 0]))
    assert torch.allclose(got, torch.zeros(3), atol=1e-6)


def test_cross_modal_hinge_needs_two_modalities():
    with pytest.raises(ValueError, match="two modalities"):
        cross_modal_hinge({"audio": torch.zeros(2, 1)}, torch.tensor([1, 0]))


def test_random_negatives_never_pick_self():
    g = torch.Generator().manual_seed(0)
    for b in (2, 3, 17):
        for _ in range(20):
            idx = random_negatives(b, g)
            assert (idx != torch.arange(b)).all()
            assert sorted(idx.tolist()) == list(range(b))
    with pytest.raises(ValueError):
        random_negatives(1)


def test_unit_gaussian_likelihood_hand_value_and_mask():
    lik = UnitGaussianLikelihood()
    x = torch.zeros(2, 3, 4)
    mean = torch.ones(2, 3, 4)  # every valid element: -0.5 log 2pi - 0.5
    seqs = Sequences(x, torch.tensor([3, 1]))
    per_elem = -0.5 * math.log(2 * math.pi) - 0.5
    got = lik.log_prob(mean, seqs)
    assert torch.allclose(got, torch.tensor([12 * per_elem, 4 * per_elem]))
    # Garbage in padded frames (of mean and data) changes nothing, value or gradient.
    mean2 = mean.clone().requires_grad_(True)
    x2 = x.clone()
    x2[1, 1:] = 1e6
    with torch.no_grad():
        mean2[1, 1:] = -1e6
    out = lik.log_prob(mean2, Sequences(x2, torch.tensor([3, 1])))
    assert torch.allclose(out, got)
    out.sum().backward()
    assert torch.all(mean2.grad[1, 1:] == 0)
    # Images: plain sum over pixels.
    img = lik.log_prob(torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    assert torch.allclose(img, torch.full((2,), 4 * per_elem))


def test_bernoulli_and_categorical_likelihoods_hand_values():
    from dispart.distributions import BernoulliLikelihood, CategoricalLikelihood, make_likelihood

    bern = BernoulliLikelihood()
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    x = torch.tensor([[1.0, 0.0, 1.0]])
    expected = math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.e))
    assert bern.log_prob(logits, x).item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(bern.mean(logits), torch.sigmoid(logits))
    assert bern.log_prob_of_mean(bern.mean(logits), x).item() == pytest.approx(expected, rel=1e-4)
    # Extreme logits stay finite and exact (computed from logits, not probabilities):
    # log sigmoid(-100) = -100 - log(1 + e^-100), twice.
    extreme = bern.log_prob(torch.tensor([[100.0, -100.0]]), torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(extreme) and extreme.item() == pytest.approx(-200.0, rel=1e-6)
    # Masked sequence frames count for nothing.
    seq = Sequences(torch.ones(1, 3, 2), torch.tensor([1]))
    assert bern.log_prob(torch.zeros(1, 3, 2), seq).item() == pytest.approx(2 * math.log(0.5))

    cat = CategoricalLikelihood()
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))
    idx = torch.tensor([2, 0])
    assert torch.allclose(cat.log_prob(logits, idx), torch.log(torch.tensor([0.5, 0.6])))
    onehot = torch.nn.functional.one_hot(idx, 3).float()
    assert torch.allclose(cat.log_prob(logits, onehot), cat.log_prob(logits, idx))
    assert torch.allclose(cat.mean(logits), torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))
    with pytest.raises(ValueError, match="unknown likelihood"):
        make_likelihood("poisson")


def test_linear_kl_annealing():
    from dispart.objectives import linear_anneal

    assert [linear_anneal(s, 4, 2.0) for s in (0, 1, 4, 9)] == [0.0, 0.5, 2.0, 2.0]
    assert linear_anneal(0, 0, 0.7) == 0.7


def test_kl_static_matches_numpy():
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(4, 3, generator=g) for _ in range(4))
    got = kl_static(diag_gaussian(mq, lq), diag_gaussian(mp, lp))
    assert got.shape == (4,)
    assert np.allclose(got.numpy(), kl_diag(mq, lq, mp, lp), rtol=1e-5)


def test_kl_dynamic_sums_valid_frames_only():
    g = torch.Generator().manual_seed(1)
    mq, lq, mp, lp = (torch.randn(3, 5, 2, generator=g) for _ in range(4))
    lengths = [5, 2, 1]
    mask = torch.tensor([[t < n for t in range(5)] for n in lengths])
    got = kl_dynamic(diag_gaussian(mq, lq), diag_gaussian(mp, lp), mask)
    per_frame = kl_diag(mq, lq, mp, lp)  # (3, 5)
    expected = [per_frame[b, :n].sum() for b, n in enumerate(lengths)]
    assert got.shape == (3,)
    assert np.allclose(got.numpy(), expected, rtol=1e-5)
    # Padded frames give no gradient.
    mq.requires_grad_(True)
    kl_dynamic(diag_gaussian(mq, lq), diag_gaussian(mp, lp), mask).sum().backward()
    assert torch.all(mq.grad[1, 2:] == 0) and torch.all(mq.grad[2, 1:] == 0)
    assert torch.all(mq.grad[0] != 0)


def test_kl_shape_errors_are_clear():
    q = diag_gaussian(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="kl_static"):
        kl_static(q, q)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\)"):
        kl_dynamic(q, q, torch.ones(2, 4, dtype=torch.bool))


def _cka_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)), RBF kernels with the median heuristic."""
    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n

    def gram(x):
        d2 = np.array([[np.sum((x[i] - x[j]) ** 2) for j in range(n)] for i in range(n)])
        s2 = np.median(d2[~np.eye(n, dtype=bool)])
        return np.exp(-d2 / (2 * s2))

    k, ll = gram(a), gram(b)
    hsic = lambda p, q: np.trace(p @ h @ q @ h)  # noqa: E731
    return hsic(k, ll) / np.sqrt(hsic(k, k) * hsic(ll, ll))


def test_kernel_dependence_matches_the_hsic_formula_and_its_limits():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    got = kernel_dependence(torch.tensor(a), torch.tensor(b)).item()
    assert got == pytest.approx(_cka_by_hand(a, b), rel=1e-6)
    x = torch.tensor(rng.normal(size=(64, 4)))
    # one batch determines the other (any scale: the bandwidth follows the data) -> 1
    assert kernel_dependence(x, 5.0 * x + 2.0).item() == pytest.approx(1.0, abs=1e-6)
    # independent batches score far below a dependent pair
    y = torch.tensor(rng.normal(size=(64, 4)))
    assert kernel_dependence(x, y).item() < 0.4 < kernel_dependence(x, x[:, :2]).item()
    with pytest.raises(ValueError, match="same size"):
        kernel_dependence(x, y[:10])


def test_kernel_dependence_gradient_lowers_the_dependence():
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = (x[:, :2] + 0.1 * torch.randn(32, 2)).requires_grad_(True)
    before = kernel_dependence(x, y)
    before.backward()
    after = kernel_dependence(x, (y - 0.5 * y.grad / y.grad.norm()).detach())
    assert after.item() < before.item()


def test_style_content_critic_hand_computed_and_who_learns_from_what():
    """logits[b, c] = <W style_b + w0, content_c>: the critic's loss is the cross-entropy of each
    row's own partner, the encoder's the cross-entropy to the uniform over rows; the critic's loss
    moves only the critic, the encoder's only the style, and neither the (fixed) content."""
    critic = torch.nn.Linear(2, 3)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]]))
        critic.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    style = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    content = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 1.0]], requires_grad=True)
    c_loss, e_loss = style_content_critic(critic, style, content)
    w, w0 = critic.weight.detach().numpy(), critic.bias.detach().numpy()
    guess = style.detach().numpy() @ w.T + w0
    logits = guess @ content.detach().numpy().T
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert np.allclose(c_loss.detach().numpy(), -np.diag(log_p), atol=1e-6)
    assert np.allclose(e_loss.detach().numpy(), -log_p.mean(axis=1), atol=1e-6)
    c_loss.sum().backward(retain_graph=True)
    assert style.grad is None and content.grad is None and critic.weight.grad.abs().sum() > 0
    critic.zero_grad()
    e_loss.sum().backward()
    assert style.grad.abs().sum() > 0 and content.grad is None
    assert critic.weight.grad is None or critic.weight.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="same size >= 2"):
        style_content_critic(critic, style[:1], content[:1])


@pytest.mark.parametrize("holds_content", [True, False])
def test_style_content_critic_finds_content_only_where_the_style_holds_it(holds_content):
    """Trained alone, the critic gets well below log B when the style is a noisy copy of the content,
    and stays near log B (chance) when the style is independent of it."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    b, d = 32, 4
    critic = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, d))
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        content = torch.randn(b, d, generator=g)
        noise = torch.randn(b, d, generator=g)
        style = content + 0.1 * noise if holds_content else noise
        c_loss, _ = style_content_critic(critic, style, content)
        opt.zero_grad()
        c_loss.mean().backward()
        opt.step()
        losses.append(c_loss.mean().item())
    last = float(np.mean(losses[-50:]))
    if holds_content:
        assert last < 0.6 * math.log(b)
    else:
        assert last > 0.9 * math.log(b)


def test_cross_correlation_hand_computed_and_scale_free():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    expected = np.mean([np.corrcoef(a[:, i], b[:, j])[0, 1] ** 2 for i in range(3) for j in range(2)])
    ta, tb = torch.tensor(a), torch.tensor(b)
    assert cross_correlation(ta, tb).item() == pytest.approx(expected, rel=1e-6)
    scaled = ta * torch.tensor([100.0, 1.0, 0.01], dtype=ta.dtype) + 5.0  # per-column scale, shift
    assert cross_correlation(scaled, tb).item() == pytest.approx(expected, rel=1e-6)
    x = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    y = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])  # centred and orthogonal to x
    assert cross_correlation(x, y).item() == pytest.approx(0.0, abs=1e-12)
    assert cross_correlation(x, 3 * x).item() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="same size >= 3"):
        cross_correlation(x[:2], y[:2])


def test_running_cross_correlation_has_no_floor_of_one_over_b():
    """For independent columns each batch's mean squared correlation sits near 1 / B; the product
    of two independent estimates averages to the true value, 0; for a persistent correlation rho
    both estimate rho^2."""
    g = torch.Generator().manual_seed(0)
    plain, running = [], []
    previous = None
    for _ in range(400):
        a, b = torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)
        now = correlation_matrix(a, b)
        plain.append(cross_correlation(a, b).item())
        if previous is not None:
            running.append(running_cross_correlation(now, previous).item())
        previous = now
    assert np.mean(plain) == pytest.approx(1 / 15, rel=0.15)
    assert abs(np.mean(running)) < 0.004
    rho, shared = 0.6, torch.randn(4000, 1, generator=g)
    a = rho * shared + (1 - rho**2) ** 0.5 * torch.randn(4000, 1, generator=g)
    c1, c2 = correlation_matrix(a[:2000], shared[:2000]), correlation_matrix(a[2000:], shared[2000:])
    assert running_cross_correlation(c1, c2).item() == pytest.approx(rho**2, abs=0.03)
    c = torch.tensor([[0.5, -0.2]], requires_grad=True)
    value = running_cross_correlation(c, torch.tensor([[0.4, 0.1]]))
    assert value.item() == pytest.approx((0.5 * 0.4 - 0.2 * 0.1) / 2)
    value.backward()
    assert torch.allclose(c.grad, torch.tensor([[0.2, 0.05]]))
    with pytest.raises(ValueError, match="one shape"):
        running_cross_correlation(c, torch.zeros(2, 1))


def test_label_confusion_hand_computed_and_who_learns_from_what():
    """logits = W z + w0: the critic's loss is the cross-entropy of each row's label, the
    encoder's the cross-entropy to the uniform over classes; the critic's loss moves only the
    classifier, the encoder's only z."""
    classifier = torch.nn.Linear(2, 3)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]]))
        classifier.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([2, 1])
    c_loss, e_loss = label_confusion(classifier, z, labels)
    # row 0: logits (1.5, 0, 0.5); row 1: (0.5, 2, -1.5)
    lse0 = math.log(math.exp(1.5) + 1 + math.exp(0.5))
    lse1 = math.log(math.exp(0.5) + math.exp(2) + math.exp(-1.5))
    assert c_loss.tolist() == pytest.approx([lse0 - 0.5, lse1 - 2.0], rel=1e-6)
    assert e_loss.tolist() == pytest.approx([lse0 - 2.0 / 3, lse1 - 1.0 / 3], rel=1e-6)
    c_loss.sum().backward()
    assert z.grad is None and classifier.weight.grad.abs().sum() > 0
    classifier.zero_grad()
    e_loss.sum().backward()
    assert z.grad.abs().sum() > 0 and classifier.weight.grad is None
    with pytest.raises(ValueError, match="label_confusion"):
        label_confusion(classifier, z, torch.tensor([0, 1, 2]))
