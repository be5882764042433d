"""Speaker verification by cosine scoring, reported as the equal error rate (DSAE paper, Table 2).

Protocol (Li & Mandt 2018, section 4.2, after Hsu et al. 2017): one embedding per test utterance,
the mean over its segments (and, for a dynamic latent, over their frames) of a latent's posterior
means; every pair of test utterances is a trial, genuine when both have the same speaker and an
impostor trial otherwise; the score is the cosine similarity. The EER is the error rate where the
false acceptance rate (impostor score >= threshold) equals the false rejection rate (genuine score
< threshold); between two points of the ROC curve it is linearly interpolated. TIMIT's 24 test
speakers x 8 utterances give the paper's 192 * 191 / 2 = 18,336 trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dispart.models.base import MultimodalModel

__all__ = ["VerificationResult", "cosine_trials", "equal_error_rate", "latent_verification",
           "pool_by_group", "speaker_verification"]


@dataclass(frozen=True)
class VerificationResult:
    """EER in [0, 1], the score threshold where it is reached, and the trial counts."""

    eer: float
    threshold: float
    n_genuine: int
    n_impostor: int
    n_utterances: int
    n_speakers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def equal_error_rate(scores: np.ndarray, genuine: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) of trials with ``scores`` (N,) and ``genuine`` (N,) booleans.

    Uses ``sklearn.metrics.roc_curve`` (all thresholds kept). At the first ROC point where the
    false rejection rate 1 - TPR falls below the false acceptance rate FPR, the EER is interpolated
    linearly between that point and the one before; the threshold is that of the closer point.
    """
    from sklearn.metrics import roc_curve

    scores = np.asarray(scores, dtype=np.float64).ravel()
    genuine = np.asarray(genuine, dtype=bool).ravel()
    if scores.shape != genuine.shape:
        raise ValueError(f"scores {scores.shape} and genuine {genuine.shape} differ in shape")
    if not genuine.any() or genuine.all():
        raise ValueError(f"EER needs genuine and impostor trials, got {int(genuine.sum())} genuine of "
                         f"{genuine.size}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("EER: scores contain NaN or infinite values")
    fpr, tpr, thr = roc_curve(genuine, scores, drop_intermediate=False)
    diff = (1.0 - tpr) - fpr  # >= 0 at the first point (FRR = 1, FAR = 0), < 0 once FRR < FAR
    b = int(np.argmax(diff < 0)) if np.any(diff < 0) else len(diff) - 1
    a = max(b - 1, 0)
    if diff[b] >= 0 or a == b:  # never crosses (cannot happen: the last point has FRR 0, FAR 1)
        return float(fpr[b]), float(thr[b])
    lam = diff[a] / (diff[a] - diff[b])
    eer = fpr[a] + lam * (fpr[b] - fpr[a])
    threshold = thr[a] if lam < 0.5 else thr[b]
    return float(eer), float(threshold)


def cosine_trials(embeddings: np.ndarray, speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores (P,) and genuine flags (P,) of all pairs i < j of ``embeddings`` (N, D)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or len(e) != len(speakers):
        raise ValueError(f"embeddings must be (N, D) with N = {len(speakers)} speakers, got {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"embedding {int(np.argmin(norms))} is all zeros: its cosine is undefined")
    e = e / norms
    i, j = np.triu_indices(len(e), k=1)
    spk = np.asarray(speakers, dtype=object)
    return np.einsum("pd,pd->p", e[i], e[j]), spk[i] == spk[j]


def speaker_verification(embeddings: np.ndarray, speakers: Sequence[str]) -> VerificationResult:
    """EER of cosine scoring over all pairs of ``embeddings`` (N, D), one row per utterance."""
    scores, genuine = cosine_trials(embeddings, speakers)
    eer, thr = equal_error_rate(scores, genuine)
    return VerificationResult(eer, thr, int(genuine.sum()), int((~genuine).sum()), len(speakers),
                              len(set(speakers)))


def pool_by_group(vectors: np.ndarray, groups: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean of ``vectors`` (N, D), or (N, T, D) averaged over T first, per group (e.g. utterance).

    Returns the groups in order of first appearance and their (G, D) means.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim == 3:
        v = v.mean(axis=1)
    if v.ndim != 2 or len(v) != len(groups):
        raise ValueError(f"vectors must be (N, D) or (N, T, D) with N = {len(groups)}, "
                         f"got {np.shape(vectors)}")
    names, index = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
    first = np.full(len(names), len(groups))
    np.minimum.at(first, index, np.arange(len(groups)))
    sums = np.zeros((len(names), v.shape[1]))
    np.add.at(sums, index, v)
    means = sums / np.bincount(index, minlength=len(names))[:, None]
    order = np.argsort(first, kind="stable")
    return [str(names[k]) for k in order], means[order]


def latent_verification(model: MultimodalModel, mset: Any, modality: str,
                        latents: Sequence[str] | None = None, batch_size: int = 512
                        ) -> dict[str, VerificationResult]:
    """EER from each latent's posterior means (DSAE: mu_f and mu_z) on the segments of ``mset``.

    ``mset`` is a ModalitySet of segments with ``speakers`` and ``meta["utterance"]`` (as the
    "speech_segments" loader gives); a dynamic latent's means are averaged over each segment's
    frames, then every latent's over the segments of each utterance. ``latents``: names to
    score (default: every latent the model infers from ``modality``).
    """
    from dispart.evaluation.latents import sequence_latents

    if mset.speakers is None or "utterance" not in mset.meta:
        raise ValueError("latent_verification needs segments with speakers and meta['utterance']")
    means = sequence_latents(model, list(mset.examples), modality, batch_size)
    names = list(latents) if latents is not None else list(means)
    unknown = [n for n in names if n not in means]
    if unknown:
        raise ValueError(f"{model.name} infers no latent {unknown} from {modality!r} (it has {list(means)})")
    speaker_of = dict(zip(mset.meta["utterance"], mset.speakers, strict=True))
    out = {}
    for name in names:
        utts, emb = pool_by_group(means[name], mset.meta["utterance"])
        out[name] = speaker_verification(emb, [speaker_of[u] for u in utts])
    return out
