"""Speaker-verification EER: hand-made trials, cosine scoring, pooling, a latent, real-data baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dispart.batches.segments import segment_set
from dispart.batches.sets import ModalitySet
from dispart.data.speech_commands import scan_speech_commands, split_speech_commands
from dispart.evaluation.verification import (
    cosine_trials,
    equal_error_rate,
    latent_verification,
    pool_by_group,
    speaker_verification,
)
from dispart.features.spectrum import SpectrumConfig, compute_spectra
from dispart.models.latents import Latent, declare

SHARED = Path(__file__).parents[1].parent / "shared" / "data"


def test_perfectly_separable_is_zero() -> None:
    eer, thr = equal_error_rate([0.9, 0.8, 0.3, 0.1, 0.2], [True, True, False, False, False])
    assert eer == 0.0 and thr == 0.8


def test_two_of_four_impostors_above_the_genuine_pairs() -> None:
    # genuine 0.5, 0.6; impostors 0.9, 0.7 above both, 0.2, 0.1 below. Accepting score >= t:
    # t = 0.7: FAR 2/4, FRR 2/2; t = 0.6: FAR 2/4, FRR 1/2 (equal); t = 0.5: FAR 2/4, FRR 0.
    eer, thr = equal_error_rate([0.5, 0.6, 0.9, 0.7, 0.2, 0.1], [1, 1, 0, 0, 0, 0])
    assert eer == pytest.approx(0.5) and thr == 0.6


def test_interpolated_between_two_roc_points() -> None:
    # genuine 0.8, 0.6; impostors 0.7, 0.2, 0.1. t = 0.7: FAR 1/3, FRR 1/2; t = 0.6: FAR 1/3, FRR 0.
    # FRR - FAR goes 1/6 -> -1/3: one third of the way, FAR = FRR = 1/3.
    eer, thr = equal_error_rate([0.8, 0.6, 0.7, 0.2, 0.1], [1, 1, 0, 0, 0])
    assert eer == pytest.approx(1 / 3) and thr == 0.7
    # a tie between one genuine and one impostor score: the ROC jumps (0, 0) -> (1, 1): EER 1/2
    assert equal_error_rate([0.5, 0.5], [1, 0])[0] == pytest.approx(0.5)
    # all impostors above all genuine: EER 1
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == pytest.approx(1.0)


def test_eer_rejects_bad_trials() -> None:
    with pytest.raises(ValueError, match="genuine and impostor"):
        equal_error_rate([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        equal_error_rate([np.nan, 0.2], [1, 0])


def test_cosine_trials_all_pairs() -> None:
    e = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    scores, genuine = cosine_trials(e, ["a", "a", "b", "b"])
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    np.testing.assert_allclose(scores, [1, 0, 2 ** -0.5, 0, 2 ** -0.5, 2 ** -0.5])
    assert genuine.tolist() == [True, False, False, False, False, True]
    r = speaker_verification(e, ["a", "a", "b", "b"])
    # genuine 1, 0.707; impostors 0, 0.707, 0, 0.707 -> t = 0.707 accepts both genuine and 2/4
    # impostors, t just above rejects 1/2 genuine and 0 impostors: the ROC segment (0, 1/2) -> (1/2, 0)
    assert (r.n_genuine, r.n_impostor, r.n_utterances, r.n_speakers) == (2, 4, 4, 2)
    assert r.eer == pytest.approx(0.25)
    with pytest.raises(ValueError, match="all zeros"):
        cosine_trials(np.zeros((2, 2)), ["a", "b"])


def test_pool_by_group() -> None:
    v = np.arange(12, dtype=float).reshape(3, 2, 2)  # (N=3 segments, T=2 frames, D=2)
    names, means = pool_by_group(v, ["u2", "u1", "u2"])
    assert names == ["u2", "u1"]
    # frame means: [1, 2], [5, 6], [9, 10]; u2 = mean of rows 0 and 2
    np.testing.assert_allclose(means, [[5.0, 6.0], [5.0, 6.0]])
    np.testing.assert_allclose(pool_by_group(v[:, 0], ["a", "a", "b"])[1], [[2.0, 3.0], [8.0, 9.0]])


class _Oracle(nn.Module):
    """A stand-in model: f = mean over frames of dims 0-1 (the speaker), z_t = dims 2-3 per frame."""

    name = "oracle"

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.latents = declare(Latent("f", 2, ("speech",), role="style", dynamic=False, symbol="f"),
                               Latent("z", 2, ("speech",), role="content", dynamic=True, symbol="z_t"))

    def embed(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["speech"]
        return {"f": x.data[:, :, :2].mean(dim=1), "z": x.data[:, :, 2:4]}


def test_latent_verification_pools_frames_then_segments() -> None:
    rng = np.random.default_rng(0)
    examples, speakers, utts = [], [], []
    directions = {"s1": [1.0, 0.2], "s2": [0.2, 1.0], "s3": [-1.0, 0.5]}
    for spk, d in directions.items():
        for u in range(4):
            for _ in range(3):  # 3 segments of 20 frames per utterance
                x = rng.normal(size=(20, 4)).astype(np.float32)
                x[:, :2] = np.asarray(d) * 5 + 0.3 * rng.normal(size=(20, 2))
                examples.append(x)
                speakers.append(spk)
                utts.append(f"{spk}/{u}.wav")
    mset = ModalitySet(examples, ["w"] * len(examples), speakers=speakers, meta={"utterance": utts})
    res = latent_verification(_Oracle(), mset, "speech")
    assert res["f"].eer == 0.0 and res["f"].n_utterances == 12 and res["f"].n_genuine == 3 * 6
    assert res["z"].eer > 0.2  # noise: no speaker information


def test_mean_log_spectrum_baseline_on_arabic_test_speakers() -> None:
    """The trivial embedding (mean log-spectrum of an utterance's segments) on the 5 unseen speakers."""
    root = SHARED / "arabic_speech_commands"
    if not (root / "dataset").is_dir():
        pytest.skip(f"Arabic Speech Commands not available at {root} (development data only)")
    test = split_speech_commands(root, scan_speech_commands(root))["test"]
    kept, feats, _ = compute_spectra(test, SpectrumConfig(sample_rate=16000, vad_top_db=30.0))
    mset, short = segment_set(kept, feats)
    assert short == []
    names, emb = pool_by_group(np.stack(mset.examples), mset.meta["utterance"])
    speaker_of = dict(zip(mset.meta["utterance"], mset.speakers, strict=True))
    r = speaker_verification(emb, [speaker_of[n] for n in names])
    print(f"\nmean log-spectrum baseline, Arabic test speakers: EER {r.eer:.4f} ({r.n_genuine} genuine, "
          f"{r.n_impostor} impostor trials)")
    assert (r.n_utterances, r.n_speakers, r.n_genuine, r.n_impostor) == (500, 5, 5 * 100 * 99 // 2, 100_000)
    assert 0.30 < r.eer < 0.45  # measured 0.3751: far from the <= 5% DSAE's mu_f must reach
