"""What inverting per-utterance centring needs comes from the normaliser in run.json; run folders
written before it was stored still work (the offset is recomputed from the training split)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import dispart.generation.audio as audio
from dispart.config import load_config
from dispart.data.corpus import scan_corpus
from dispart.data.sample import sample_fsdd_dir
from dispart.data.splits import official_split
from dispart.features.fbank import FbankConfig, fbank_from_file
from dispart.features.normalize import FeatureNormalizer
from dispart.generation.audio import features_to_logmel, utterance_offset

pytestmark = pytest.mark.usefixtures("single_thread")


def _run(normalize: str, normalizer: FeatureNormalizer) -> SimpleNamespace:
    cfg = load_config(None, [f"data.normalize={normalize}"])
    return SimpleNamespace(config=cfg, normalizer=normalizer)


def _no_scan(*args: object, **kwargs: object) -> None:
    raise AssertionError("the corpus was scanned although the normaliser stores the offset")


def test_offset_is_read_from_the_normaliser_without_scanning(monkeypatch) -> None:
    monkeypatch.setattr(audio, "_training_mean_frame", _no_scan)
    norm = FeatureNormalizer().fit([np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)],
                                   centre_utterances=True)
    np.testing.assert_array_equal(utterance_offset(_run("utterance", norm)), [2.0, 4.0])
    assert utterance_offset(_run("global", norm)) is None  # nothing was removed: nothing to add
    # inversion adds it back after the inverse normalisation (centred frames -1, 1 and -2, 2)
    x = norm.transform(np.array([[-1.0, -2.0]], np.float32))
    np.testing.assert_allclose(features_to_logmel(x, norm, utterance_offset(_run("utterance", norm))),
                               [[1.0, 2.0]], rtol=1e-6)


def test_old_run_without_stored_offset_falls_back_to_the_training_split() -> None:
    old = FeatureNormalizer.from_state_dict({"mean": np.zeros(80), "std": np.ones(80)})
    assert old.utterance_offset is None
    got = utterance_offset(_run("utterance", old))
    # by hand: the mean raw log-Mel frame of the sample's official training split (takes 5+)
    train, _ = official_split(scan_corpus(sample_fsdd_dir()))
    frames = np.concatenate([fbank_from_file(u.path, FbankConfig()) for u in train])
    assert got.shape == (80,) and got.dtype == np.float32
    np.testing.assert_allclose(got, frames.mean(axis=0), rtol=1e-4, atol=1e-4)
    assert utterance_offset(_run("global", old)) is None
