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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dispart.batches.batch import Batch, Modality, Sequences, batch_size, index_batch
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
    """``x`` stacked ``times`` times along the batch: (times * B, ...), Sequences of any frame shape."""
    if isinstance(x, Sequences):
        return Sequences(x.data.repeat(times, *([1] * (x.data.dim() - 1))), x.lengths.repeat(times))
    return x.repeat(times, *([1] * (x.dim() - 1)))


def _needed(model: MultimodalModel, targets: Sequence[str]) -> list[str]:
    needed: list[str] = []
    for m in targets:
        needed += [name for name in model.decoder_latents(m) if name not in needed]
    return needed


def log_importance_weights_multi(
    model: MultimodalModel,
    batch: Batch,
    target_sets: Sequence[Sequence[str]],
    proposal: Sequence[str],
    k: int,
    max_rows: int = 8192,
) -> dict[tuple[str, ...], Tensor]:
    """(K, B) log weights for several target sets from the *same* samples z_k ~ q(. | x^P).

    Each modality's decoder runs once per sample however many target sets use it, so e.g.
    log p(x1) and log p(x1, x2) with q(z | x1) cost one pass of the x1 decoder. The weights of
    a target set T only involve the latents T's decoders condition on.
    """
    sets = [tuple(t) for t in target_sets]
    proposal = tuple(proposal)
    if not sets or any(not t for t in sets):
        raise ValueError("an estimate needs at least one target modality")
    every = [m for t in sets for m in t]
    missing = sorted({m for m in (*every, *proposal) if m not in batch})
    if missing:
        raise ValueError(f"the batch lacks modalities {missing} needed for the estimate")
    b = batch_size({m: batch[m] for m in (*every, *proposal)})
    needed = _needed(model, list(dict.fromkeys(every)))
    q = model.encode({m: batch[m] for m in proposal}) if proposal else {}
    proposals = {name: q[name] if name in q else model.prior(name, b) for name in needed}
    priors = {name: model.prior(name, b) for name in needed}
    chunk = max(1, min(k, max_rows // b))
    out: dict[tuple[str, ...], list[Tensor]] = {t: [] for t in sets}
    for start in range(0, k, chunk):
        kc = min(chunk, k - start)
        z = {name: proposals[name].sample((kc,)) for name in needed}  # (kc, B, D)
        ratio = {n: priors[n].log_prob(z[n]) - proposals[n].log_prob(z[n]) for n in needed}
        flat = {n: v.reshape(kc * b, -1) for n, v in z.items()}
        rec = {m: model.reconstruction_log_prob(flat, m, _repeat(batch[m], kc)).view(kc, b)
               for m in dict.fromkeys(every)}
        for t in sets:
            out[t].append(sum(ratio[n] for n in _needed(model, t)) + sum(rec[m] for m in t))
    return {t: torch.cat(v) for t, v in out.items()}


def log_importance_weights(
    model: MultimodalModel,
    batch: Batch,
    targets: Sequence[str],
    proposal: Sequence[str],
    k: int,
    max_rows: int = 8192,
) -> Tensor:
    """(K, B) log p(x^T, z_k) - log q(z_k | x^P) with z_k ~ q(. | x^P) (prior where not inferred)."""
    return log_importance_weights_multi(model, batch, [targets], proposal, k, max_rows)[tuple(targets)]


def prior_log_weights(
    model: MultimodalModel, batch: Batch, targets: Sequence[str], k: int, max_elems: int = 1 << 23
) -> Tensor:
    """(K, B) log p(x^T | z_k) with z_k ~ p(z) shared by every row (the weights of ``proposal=()``).

    The decoders run K times in all instead of K times per row, which makes e.g. log p(label)
    with K = 5000 cheap. Not for "sequence"/"frames" modalities (their decoders need each row's
    length).
    """
    targets = tuple(targets)
    for m in targets:
        if model.specs[m].dynamic:
            raise ValueError(f"prior_log_weights: {m!r} is a {model.specs[m].kind} modality")
    b = batch_size({m: batch[m] for m in targets})
    z = {n: model.prior(n, 1).sample((k,)).squeeze(1) for n in _needed(model, targets)}  # (K, D)
    lw = torch.zeros(k, b, device=next(model.parameters()).device)
    for m in targets:
        params = model.decode_params(z, m)  # (K, *shape)
        x = batch[m]
        per_row = max(1, int(params[0].numel()))
        kc = max(1, min(k, max_elems // max(1, per_row * b)))
        for s0 in range(0, k, kc):
            p = params[s0:s0 + kc]
            n = p.shape[0]
            pe = p.unsqueeze(1).expand(n, b, *p.shape[1:]).reshape(n * b, *p.shape[1:])
            xe = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])
            lw[s0:s0 + n] += model.likelihoods[m].log_prob(pe, xe).view(n, b)
    return lw


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
        if not proposal and not any(model.specs[m].dynamic for m in targets):
            return _estimate(prior_log_weights(model, batch, targets, k))
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


@torch.no_grad()
def likelihood_table(
    model: MultimodalModel,
    batch: Batch,
    x1: str,
    x2: str | None = None,
    k: int = 1000,
    k_given: int = 5000,
    rows_per_step: int = 100,
    max_rows: int = 8192,
    progress: Callable[[int, int], None] | None = None,
    conditional_proposal: str = "x1",
    proposal: Sequence[str] | None = None,
) -> dict[str, Any]:
    """MVAE Tables 2-3 on a data set held in ``batch`` (all rows), ``rows_per_step`` at a time.

    Estimates (data-set means, nats) and the mean variance of their K log importance weights:
    ``log_p_x1`` and ``log_p_x1_x2`` with q(z | x1) (the same samples), and ``log_p_x1_given_x2``
    = log p(x1, x2) minus log p(x2) with ``k_given`` prior samples (variance: of the joint term).
    The joint term of the conditional uses q(z | x1) (``conditional_proposal="x1"``, MVAE
    Table 2, footnote 2: it is ``log_p_x1_x2`` itself) or q(z | x2) (``"x2"``, MVAE section 5's
    text; an extra pass of the x1 decoder). Without ``x2`` only ``log_p_x1``.
    ``proposal``: the encoder for the first two estimates instead of q(z | x1), e.g.
    ``(x1, x2)`` for the joint encoder (any proposal gives an unbiased estimate of p).
    The model's training mode is restored afterwards.
    """
    prop = tuple(proposal) if proposal else (x1,)
    if conditional_proposal not in ("x1", "x2"):
        raise ValueError(f"conditional_proposal must be 'x1' or 'x2', got {conditional_proposal!r}")
    was_training = model.training
    model.eval()
    try:
        n = batch_size({m: batch[m] for m in (x1,) + ((x2,) if x2 else ())})
        sums: dict[str, float] = {}
        for s in range(0, n, rows_per_step):
            rows = torch.arange(s, min(n, s + rows_per_step))
            sub = index_batch({m: batch[m] for m in dict.fromkeys((x1,) + ((x2,) if x2 else ()) + prop)},
                              rows)
            sets = [(x1,), (x1, x2)] if x2 else [(x1,)]
            w = log_importance_weights_multi(model, sub, sets, prop, k, max_rows)
            ests = {"log_p_x1": _estimate(w[(x1,)])}
            if x2:
                ests["log_p_x1_x2"] = _estimate(w[(x1, x2)])
                cond_prop = (x1,) if conditional_proposal == "x1" else (x2,)
                joint = ests["log_p_x1_x2"] if cond_prop == prop else _estimate(
                    log_importance_weights(model, sub, (x1, x2), cond_prop, k, max_rows))
                given = log_marginal(model, sub, (x2,), (), k_given, max_rows)
                ests["log_p_x1_given_x2"] = IWEstimate(joint.log_p - given.log_p, joint.log_w_var, k)
            for name, e in ests.items():
                sums[name] = sums.get(name, 0.0) + float(e.log_p.sum())
                sums[name + "/log_w_var"] = sums.get(name + "/log_w_var", 0.0) + float(e.log_w_var.sum())
            if progress is not None:
                progress(int(rows[-1]) + 1, n)
    finally:
        model.train(was_training)
    out: dict[str, Any] = {key: v / n for key, v in sums.items()}
    out.update({"n": n, "k": k, "k_given": k_given if x2 else None, "x1": x1, "x2": x2,
                "proposals": {"log_p_x1": f"q(z|{','.join(prop)})",
                              "log_p_x1_x2": f"q(z|{','.join(prop)})",
                              "log_p_x1_given_x2": f"q(z|{x1 if conditional_proposal == 'x1' else x2})"
                                                   f" for the joint, p(z) for p({x2})"}
                if x2 else {"log_p_x1": f"q(z|{','.join(prop)})"}})
    return out
