"""benchmarks/dsae_speech.py plumbing: the mean-log-spectrum baseline on a hand-made case (through
the normaliser), and EER from mu_f / mu_z / word trials on a tiny DSAE trained on synthetic
"speakers" (a constant spectral offset per speaker, random content per frame). Synthetic data only:
nothing here reads ../shared/data (the real numbers are the benchmark's)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec
from dispart.batches.sets import ModalitySet
from dispart.evaluation.verification import latent_verification
from dispart.features.normalize import FeatureNormalizer
from dispart.models.dsae import DSAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import dsae_speech  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def _unit(deg: float) -> np.ndarray:
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])


def test_baseline_pools_segments_and_undoes_the_normaliser() -> None:
    # Utterance mean frames at angles A1 0, A2 20, B1 90, B2 50 degrees. Cosines: genuine
    # A1-A2 cos 20 = .940, B1-B2 cos 40 = .766; impostors A2-B2 cos 30 = .866, A1-B2 cos 50 = .643,
    # A2-B1 cos 70 = .342, A1-B1 0. Accept >= t: t = .866 -> FRR 1/2, FAR 1/4; t = .766 -> FRR 0,
    # FAR 1/4; the ROC points (FAR, FRR) (0, .5), (.25, .5), (.25, 0): FRR = FAR at 0.25.
    norm = FeatureNormalizer()
    norm.mean, norm.std = np.array([3.0, -1.0], np.float32), np.array([2.0, 0.5], np.float32)
    examples, utts, spk = [], [], []
    for name, deg in (("A1", 0), ("A2", 20), ("B1", 90), ("B2", 50)):
        v = _unit(deg)
        d = np.array([0.3, -0.2])
        # two segments of 2 frames each whose frames average to v: (v + d, v - d) and (v, v)
        for seg in (np.stack([v + d, v - d]), np.stack([v, v])):
            examples.append(((seg - norm.mean) / norm.std).astype(np.float32))
            utts.append(name)
            spk.append(name[0])
    test = ModalitySet(examples, ["w"] * len(examples), speakers=spk, meta={"utterance": utts})
    assert dsae_speech.baseline_eer(test, norm) == pytest.approx(0.25)
    # without undoing the normaliser the angles change, and so does the EER
    assert dsae_speech.baseline_eer(test) != pytest.approx(0.25)


def _synthetic(n_speakers: int = 4, utts: int = 6, dim: int = 8, seed: int = 0) -> ModalitySet:
    """2 segments of 10 frames per utterance: frame = 2 * speaker offset + N(0, 1) content."""
    rng = np.random.default_rng(seed)
    offsets = 2.0 * rng.standard_normal((n_speakers, dim))
    examples, labels, spk, utt = [], [], [], []
    for s in range(n_speakers):
        for u in range(utts):
            for _ in range(2):
                examples.append((offsets[s] + rng.standard_normal((10, dim))).astype(np.float32))
                labels.append(f"w{u % 2}")
                spk.append(f"s{s}")
                utt.append(f"s{s}_u{u}")
    return ModalitySet(examples, labels, speakers=spk, meta={"utterance": utt})


def test_score_on_a_tiny_trained_model() -> None:
    data = _synthetic()
    torch.manual_seed(0)
    model = DSAE([ModalitySpec("speech", "sequence", (8,))], f_dim=2, z_dim=2, hidden=16, prior_hidden=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = Sequences(torch.from_numpy(np.stack(data.examples)), torch.full((len(data),), 10))
    for _ in range(80):
        loss = model.loss({"speech": x}).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = dsae_speech.score(model, data)
    # 4 speakers x 6 utterances: 24 * 23 / 2 = 276 trials, 4 * 15 = 60 genuine
    assert out["trials"] == {"genuine": 60, "impostor": 216, "utterances": 24, "speakers": 4}
    direct = latent_verification(model, data, "speech", ["f", "z"])
    assert out["eer_f"] == round(direct["f"].eer, 5) and out["eer_z"] == round(direct["z"].eer, 5)
    # the offset is the only thing constant over a segment: f must hold it, so far below chance
    assert out["eer_f"] < 0.15
    assert 0.0 <= out["word_eer_f"] <= 1.0
