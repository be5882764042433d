"""Importance-weighted log-likelihood estimates (MVAE Tables 2-3; JMVAE appendix A).

For target modalities T and a proposal given by the encoder of modalities P,

    log p(x^T) ~= log (1/K) sum_k p(x^T | z_k) p(z_k) / q(z_k | x^P),   z_k ~ q(z | x^P),

a lower bound in expectation that tightens as K grows (Burda et al., 2015) and is exact for
any K when q is the true posterior. Only the latents the decoders of T condition on are
sampled (posteriors factorise over latents, so the others integrate out); those the proposal
encoder does not infer (e.g. PVAE style latents of other modalities, or all of them with
``proposal=()``) are drawn from their prior. The variance of the K log weights measures the
proposal's quality (MVAE Table 3).

Conditionals: log p(x^T | x^G) = log p(x^T, x^G) - log p(x^G), each estimated as above; by
default the joint with q(z | x^G) and p(x^G) with prior samples (MVAE section 5; JMVAE eq. 4
uses the joint encoder: ``proposal=T + G``).

Everything runs under ``torch.no_grad`` in chunks of at most ``max_rows`` decoded samples, so
K = 1000 on the MNIST test set needs no more memory than a batch of ``max_rows`` images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dispart.data.batch import Batch, Modality, Sequences, batch_size
from dispart.models.base import MultimodalModel


@dataclass
class IWEstimate:
    """``log_p`` (B,) estimates; ``log_w_var`` (B,) variance of the K log importance weights."""

    log_p: Tensor
    log_w_var: Tensor
    k: int


@dataclass
class ConditionalEstimate:
    """log p(x^T | x^G) = joint.log_p - given.log_p, per sample (B,)."""

    log_p: Tensor
    joint: IWEstimate
    given: IWEstimate


def _repeat(x: Modality, times: int) -> Modality:
    if isinstance(x, Sequences):
        return Sequences(x.data.repeat(times, 1, 1), x.lengths.repeat(times))
    return x.repeat(times, *([1] * (x.dim() - 1)))


def log_importance_weights(
    model: MultimodalModel,
    batch: Batch,
    targets: Sequence[str],
    proposal: Sequence[str],
    k: int,
    max_rows: int = 8192,
) -> Tensor:
    """(K, B) log p(x^T, z_k) - log q(z_k | x^P) with z_k ~ q(. | x^P) (prior where not inferred)."""
    targets, proposal = tuple(targets), tuple(proposal)
    missing = [m for m in (*targets, *proposal) if m not in batch]
    if missing:
        raise ValueError(f"the batch lacks modalities {missing} needed for the estimate")
    if not targets:
        raise ValueError("an estimate needs at least one target modality")
    b = batch_size({m: batch[m] for m in (*targets, *proposal)})
    needed: list[str] = []
    for m in targets:
        needed += [name for name in model.decoder_latents(m) if name not in needed]
    q = model.encode({m: batch[m] for m in proposal}) if proposal else {}
    proposals = {name: q[name] if name in q else model.prior(name, b) for name in needed}
    priors = {name: model.prior(name, b) for name in needed}
    chunk = max(1, min(k, max_rows // b))
    out = []
    for start in range(0, k, chunk):
        kc = min(chunk, k - start)
        z = {name: proposals[name].sample((kc,)) for name in needed}  # (kc, B, D)
        lw = sum(priors[n].log_prob(z[n]) - proposals[n].log_prob(z[n]) for n in needed)
        flat = {n: v.reshape(kc * b, -1) for n, v in z.items()}
        for m in targets:
            rec = model.reconstruction_log_prob(flat, m, _repeat(batch[m], kc))
            lw = lw + rec.view(kc, b)
        out.append(lw)
    return torch.cat(out)


def _estimate(log_w: Tensor) -> IWEstimate:
    k = log_w.shape[0]
    var = log_w.var(dim=0) if k > 1 else torch.zeros_like(log_w[0])
    return IWEstimate(torch.logsumexp(log_w, dim=0) - math.log(k), var, k)


@torch.no_grad()
def log_marginal(
    model: MultimodalModel,
    batch: Batch,
    targets: Sequence[str] | None = None,
    proposal: Sequence[str] | None = None,
    k: int = 1000,
    max_rows: int = 8192,
) -> IWEstimate:
    """IW estimate of log p(x^T) (e.g. log p(x1) or log p(x1, x2)).

    Args:
        targets: modalities of the marginal; default every model modality in ``batch``.
        proposal: modalities whose encoder gives q (unimodal or joint); default ``targets``;
            ``()`` samples from the prior.
    """
    was_training = model.training
    model.eval()
    try:
        if targets is None:
            targets = [m for m in model.modalities if m in batch]
        proposal = tuple(targets) if proposal is None else tuple(proposal)
        return _estimate(log_importance_weights(model, batch, targets, proposal, k, max_rows))
    finally:
        model.train(was_training)


@torch.no_grad()
def log_conditional(
    model: MultimodalModel,
    batch: Batch,
    targets: Sequence[str],
    given: Sequence[str],
    proposal: Sequence[str] | None = None,
    k: int = 1000,
    k_given: int = 5000,
    given_proposal: Sequence[str] = (),
    max_rows: int = 8192,
) -> ConditionalEstimate:
    """IW estimate of log p(x^T | x^G) = log p(x^T, x^G) - log p(x^G).

    Args:
        proposal: encoder for the joint term; default ``given`` (MVAE's q(z | x2)).
        k_given: samples for log p(x^G) (MVAE: 5000; JMVAE: 10).
        given_proposal: encoder for log p(x^G); default ``()``, the prior (both papers).
    """
    targets, given = tuple(targets), tuple(given)
    if set(targets) & set(given):
        raise ValueError(f"targets {targets} and given {given} overlap")
    joint = log_marginal(model, batch, targets + given, given if proposal is None else proposal,
                         k, max_rows)
    cond = log_marginal(model, batch, given, given_proposal, k_given, max_rows)
    return ConditionalEstimate(joint.log_p - cond.log_p, joint, cond)


@torch.no_grad()
def evaluate_likelihoods(
    model: MultimodalModel,
    batches: Iterable[Batch],
    targets: Sequence[str],
    given: Sequence[str] = (),
    proposal: Sequence[str] | None = None,
    k: int = 1000,
    k_given: int = 5000,
    max_rows: int = 8192,
) -> dict[str, float]:
    """Data-set means of an estimate: ``log_p`` and ``log_w_var`` (of the joint term for
    conditionals), over every sample of ``batches`` (e.g. a test DataLoader)."""
    device = next(model.parameters()).device
    total_p, total_var, n = 0.0, 0.0, 0
    for raw in batches:
        batch = {m: raw[m].to(device) for m in (*targets, *given, *(proposal or ())) if m in raw}
        if given:
            est = log_conditional(model, batch, targets, given, proposal, k, k_given, (), max_rows)
            log_p, var = est.log_p, est.joint.log_w_var
        else:
            est = log_marginal(model, batch, targets, proposal, k, max_rows)
            log_p, var = est.log_p, est.log_w_var
        total_p += float(log_p.sum())
        total_var += float(var.sum())
        n += int(log_p.shape[0])
    if n == 0:
        raise ValueError("no samples to evaluate")
    return {"log_p": total_p / n, "log_w_var": total_var / n, "n": n, "k": k}
