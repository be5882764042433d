"""Training objectives, written as per-sample terms (B,) so they can be checked by hand.

Sign convention: functions named ``*_kl`` or ``*_hinge`` return non-negative penalties. The
papers *maximise* L + a_CH * CH + a_CM * CM with CH = -sum KL and CM = -hinge; models here
*minimise* the negation: -L + a_CH * coherence_kl + a_CM * cross_modal_hinge.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Independent, kl_divergence
from torch.func import functional_call

from dispart.distributions import kl, kl_to_prior


def rbf_kernel(a: Tensor, b: Tensor) -> Tensor:
    """k(a, b) = exp(-||a - b||^2 / 2) row by row: (B, D), (B, D) -> (B,) in (0, 1]."""
    return torch.exp(-0.5 * (a - b).pow(2).sum(dim=-1))


def cross_modal_hinge(
    semantic_means: Mapping[str, Tensor], negative_index: Tensor, margin: float = 0.5
) -> Tensor:
    """-CM of PVAE eq. (8), per sample (B,), >= 0.

    For every ordered pair of modalities m != m' the anchor is the unimodal semantic mean from
    x^{m'}, the positive is the mean from x^m of the same sample and the negative is the mean
    from x^m of another sample (``negative_index[b]`` is that sample's row):

        (1/M) sum_{m != m'} max(0, t - k(mu_{m'}, mu_m) + k(mu_{m'}, mu~_m)).

    Args:
        semantic_means: modality -> (B, D) means of r(z^s | x^m).
        negative_index: (B,) long, the row used as the negative sample of each row.
        margin: the margin t.
    """
    names = list(semantic_means)
    if len(names) < 2:
        raise ValueError("cross_modal_hinge needs at least two modalities")
    total = torch.zeros_like(next(iter(semantic_means.values()))[:, 0])
    for m in names:
        for m_anchor in names:
            if m == m_anchor:
                continue
            anchor = semantic_means[m_anchor]
            positive = rbf_kernel(anchor, semantic_means[m])
            negative = rbf_kernel(anchor, semantic_means[m][negative_index])
            total = total + torch.clamp(margin - positive + negative, min=0.0)
    return total / len(names)


def coherence_kl(
    joint: Mapping[str, Independent], unimodal: Mapping[str, Mapping[str, Independent]]
) -> Tensor:
    """-CH of PVAE eq. (7), per sample (B,): sum_m KL(q(z^m, z^s | X) || r(z^m, z^s | x^m)).

    Both posteriors factorise over latents, so each KL is the sum of per-latent KLs over the
    latents r_m infers.

    Args:
        joint: latent name -> q(latent | X).
        unimodal: modality -> (latent name -> r(latent | x^m)).
    """
    total = None
    for posteriors in unimodal.values():
        for latent, r in posteriors.items():
            term = kl(joint[latent], r)
            total = term if total is None else total + term
    if total is None:
        raise ValueError("coherence_kl needs at least one unimodal posterior")
    return total


def _centred_rbf_gram(x: Tensor) -> Tensor:
    """Double-centred RBF Gram matrix H K H of the rows of ``x`` (B, D), bandwidth by the median
    heuristic (sigma^2 = median of the non-zero squared distances, held constant for gradients)."""
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)].detach()
    sigma2 = off[off > 0].median() if bool((off > 0).any()) else torch.ones((), device=x.device)
    k = torch.exp(-d2 / (2 * sigma2))
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def kernel_dependence(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Normalised HSIC (kernel CKA) between the rows of ``a`` (B, Da) and ``b`` (B, Db): a scalar in
    [0, 1], 0 when the two batches look independent, 1 when one determines the other up to the kernels.

        CKA = <HKH, HLH> / (||HKH|| ||HLH||),  K, L RBF Gram matrices (median bandwidth)

    A batch-level statistic (not per sample): used as PVAE's optional independence penalty
    between the content latent and a style latent (``alpha_indep``).
    """
    if a.shape[0] != b.shape[0] or a.shape[0] < 3:
        raise ValueError(f"kernel_dependence needs two batches of the same size >= 3, got "
                         f"{a.shape[0]} and {b.shape[0]} rows")
    kc, lc = _centred_rbf_gram(a), _centred_rbf_gram(b)
    return (kc * lc).sum() / (kc.pow(2).sum().sqrt() * lc.pow(2).sum().sqrt() + eps)


def correlation_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """(Da, Db) Pearson correlations across the batch between the columns of ``a`` (B, Da) and
    of ``b`` (B, Db), B >= 3."""
    if a.shape[0] != b.shape[0] or a.shape[0] < 3:
        raise ValueError(f"correlation_matrix / cross_correlation need two batches of the same size "
                         f">= 3, got {a.shape[0]} and {b.shape[0]} rows")
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    a = a / (a.pow(2).sum(dim=0, keepdim=True).sqrt() + eps)
    b = b / (b.pow(2).sum(dim=0, keepdim=True).sqrt() + eps)
    return a.T @ b


def cross_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean over every pair of columns (i, j) of the squared Pearson correlation across the batch
    between ``a[:, i]`` (B, Da) and ``b[:, j]`` (B, Db): a scalar in [0, 1], 0 when no column of
    ``a`` is linearly correlated with any column of ``b`` (about 1 / B for independent batches).

    Zero cross-covariance is what a linear read-out needs to find nothing: when ``b`` holds the
    content (another modality's z^s, paired with ``a``'s rows only through the class), the
    cross-covariance of ``a`` with it is the between-class term, so it vanishes when ``a``'s class
    means are equal. Correlations, not covariances: scaling a column of ``a`` up cannot lower it.
    """
    return correlation_matrix(a, b, eps).pow(2).mean()


def running_cross_correlation(batch: Tensor, running: Tensor) -> Tensor:
    """mean(running * batch): the mean squared correlation estimated from two independent
    estimates of the correlation matrix, ``batch`` (Da, Db, ``correlation_matrix`` of this
    batch, carrying the gradient) and ``running`` (Da, Db, held fixed: an average over earlier
    batches). Its expectation is the squared correlation itself, without the 1 / B that
    ``cross_correlation`` adds for independent columns; its gradient, running * d(batch) (up to
    the mean), follows the correlation that persists over batches rather than this batch's noise.
    """
    if batch.shape != running.shape:
        raise ValueError(f"running_cross_correlation needs matrices of one shape, got "
                         f"{tuple(batch.shape)} and {tuple(running.shape)}")
    return (running.detach() * batch).mean()


def _with_weights_fixed(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with the module's weights held fixed: the gradient reaches ``x`` only."""
    frozen = {name: w.detach() for name, w in module.named_parameters()}
    return functional_call(module, frozen, (x,))


def style_content_critic(critic: nn.Module, style_means: Tensor, content: Tensor) -> tuple[Tensor, Tensor]:
    """Adversarial InfoNCE between a style latent and the content of the other modality: (B,), (B,).

    The critic g maps style means (B, Dm) to guesses (B, Ds); logits[b, c] = <g(style_b), content_c>
    says how well row b's style matches row c's ``content`` (B, Ds) (the other modality's z^s
    means: held fixed). Returns

    - ``critic_loss[b] = -log softmax_c(logits)[b, b]`` with the style held fixed: trains g only,
      to find each row's partner from its style (it can when the style holds the content);
    - ``encoder_loss[b] = -(1/B) sum_c log softmax_c(logits)[b, c]`` with g's weights held fixed:
      trains the style encoder only, to leave g no preference (minimum log B, when g's guess is
      equally close to every row's content).
    """
    if style_means.shape[0] != content.shape[0] or style_means.shape[0] < 2:
        raise ValueError(f"style_content_critic needs two batches of the same size >= 2, got "
                         f"{style_means.shape[0]} and {content.shape[0]} rows")
    target = content.detach()
    own = torch.arange(len(target), device=target.device)
    critic_logits = critic(style_means.detach()) @ target.T
    critic_loss = nn.functional.cross_entropy(critic_logits, own, reduction="none")
    encoder_logits = _with_weights_fixed(critic, style_means) @ target.T
    encoder_loss = -torch.log_softmax(encoder_logits, dim=1).mean(dim=1)
    return critic_loss, encoder_loss


def label_confusion(classifier: nn.Module, z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """An adversary that reads a nuisance label from a latent, and the encoder's answer: (B,), (B,).

    ``classifier`` maps z (B, D) to logits over the K classes of ``labels`` (B,) int64 in [0, K).

    - ``critic_loss[b] = -log softmax(g(z_b))[labels_b]`` with z held fixed: trains g only, to
      read the label from z (it can when z holds it);
    - ``encoder_loss[b] = -(1/K) sum_k log softmax(g(z_b))[k]`` with g's weights held fixed:
      trains the encoder only, towards g's uniform guess (minimum log K, reached when g cannot
      prefer any class): the "confusion" loss, a bounded alternative to reversing g's gradient.
    """
    if z.dim() != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"label_confusion needs z (B, D) and labels (B,), got {tuple(z.shape)} and "
                         f"{tuple(labels.shape)}")
    critic_loss = nn.functional.cross_entropy(classifier(z.detach()), labels, reduction="none")
    encoder_loss = -torch.log_softmax(_with_weights_fixed(classifier, z), dim=1).mean(dim=1)
    return critic_loss, encoder_loss


def kl_sum_to_prior(posteriors: Mapping[str, Independent]) -> Tensor:
    """sum over latents of KL(q(latent) || N(0, I)), per sample (B,)."""
    terms = [kl_to_prior(q) for q in posteriors.values()]
    return torch.stack(terms).sum(dim=0)


def kl_static(q: Independent, p: Independent) -> Tensor:
    """KL(q || p) of a static latent, per sample (B,); both have batch shape (B,), event (D,)."""
    if q.batch_shape != p.batch_shape or len(q.batch_shape) != 1:
        raise ValueError(f"kl_static: q and p need the same (B,) batch shape, got "
                         f"{tuple(q.batch_shape)} and {tuple(p.batch_shape)}")
    return kl_divergence(q, p)


def kl_dynamic(q: Independent, p: Independent, mask: Tensor) -> Tensor:
    """KL of a dynamic latent summed over valid frames, per sample (B,).

    sum_t mask[b, t] KL(q(z_t) || p(z_t | z_<t)); q and p have batch shape (B, T), event (D,);
    ``mask`` (B, T) bool is True for frames t < length (see ``dispart.models.priors.frame_mask``).
    Padded frames contribute neither value nor gradient.
    """
    if q.batch_shape != p.batch_shape or len(q.batch_shape) != 2:
        raise ValueError(f"kl_dynamic: q and p need the same (B, T) batch shape, got "
                         f"{tuple(q.batch_shape)} and {tuple(p.batch_shape)}")
    if tuple(mask.shape) != tuple(q.batch_shape):
        raise ValueError(f"kl_dynamic: mask must have shape {tuple(q.batch_shape)}, "
                         f"got {tuple(mask.shape)}")
    per_frame = kl_divergence(q, p)
    return torch.where(mask.to(per_frame.device, torch.bool), per_frame,
                       torch.zeros_like(per_frame)).sum(dim=1)


def random_negatives(batch_size: int, generator: torch.Generator | None = None) -> Tensor:
    """(B,) index of a different row for every row (a random non-zero cyclic shift).

    Used for PVAE's negative sample X~ "randomly sampled from the training set": no labels
    are looked at, as in the paper.
    """
    if batch_size < 2:
        raise ValueError("a negative sample needs a batch of at least 2")
    shift = int(torch.randint(1, batch_size, (1,), generator=generator))
    return (torch.arange(batch_size) + shift) % batch_size


def linear_anneal(step: int, steps: int, final: float = 1.0) -> float:
    """KL weight beta after ``step`` training steps: final * min(1, step / steps); ``steps <= 0``
    means no annealing (always ``final``)."""
    if steps <= 0:
        return float(final)
    return float(final) * min(1.0, step / steps)
