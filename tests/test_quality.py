"""Judge classifiers on real held-out data, the Griffin-Lim sanity check, quality.json."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from browser import tiny_run

from dispart.batches.pipeline import load_experiment_data
from dispart.config import load_config
from dispart.evaluation.classifiers import (
    DigitClassifier,
    pool_features,
    train_image_classifier,
    train_speech_classifier,
)
from dispart.features.fbank import FbankConfig
from dispart.generation.audio import features_to_waveform, waveforms_to_features
from dispart.generation.quality import quality_run
from dispart.runs import load_run

# Bounds on the embedded sample (1200 MNIST / 300 FSDD training items; measured 91.5% / 96%).
IMAGE_BOUND = 0.85
SPEECH_BOUND = 0.85

pytestmark = pytest.mark.usefixtures("single_thread")

@pytest.fixture(scope="module")
def data():
    return load_experiment_data(load_config("tests/sample.yaml").data, progress=False)


@pytest.fixture(scope="module")
def speech_clf(data):
    return train_speech_classifier(data.split("audio", "train").examples, data.split("audio", "train").labels)


def test_image_classifier_beats_the_bound_on_held_out_mnist(data, tmp_path):
    train = data.split("image", "train")
    clf = train_image_classifier(train.examples, train.labels, steps=300)
    acc = clf.accuracy(data.split("image", "test").examples, data.split("image", "test").labels)
    assert acc > IMAGE_BOUND, acc
    # contrast does not matter to the judge (generated images are dim Gaussian means)
    dim = clf.predict(0.3 * data.split("image", "test").examples[:50])
    assert dim == clf.predict(data.split("image", "test").examples[:50])
    clf.save(tmp_path / "image")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.json", "image.safetensors"]
    again = DigitClassifier.load(tmp_path / "image")
    test = data.split("image", "test").examples
    assert again.predict(test[:64]) == clf.predict(test[:64])


def test_speech_classifier_beats_the_bound_on_held_out_fsdd(data, speech_clf):
    acc = speech_clf.accuracy(data.split("audio", "test").examples, data.split("audio", "test").labels)
    assert acc > SPEECH_BOUND, acc
    # shuffled labels must not be learnable to that level (the test can fail)
    rng = np.random.default_rng(0)
    wrong = list(rng.permutation(data.split("audio", "test").labels))
    assert speech_clf.accuracy(data.split("audio", "test").examples, wrong) < 0.5


def test_pool_features_shape_and_short_input():
    x = np.arange(2 * 80, dtype=np.float32).reshape(2, 80)
    assert pool_features(x).shape == (400,)
    with pytest.raises(ValueError):
        pool_features(np.zeros((0, 80), np.float32))


def test_griffin_lim_resynthesis_keeps_the_digit(data, speech_clf):
    """Real test utterance -> waveform -> features again: classified as the same digit."""
    fb = FbankConfig()
    idx = np.arange(0, len(data.split("audio", "test")), 5)
    feats = [data.split("audio", "test").examples[i] for i in idx]
    labels = [data.split("audio", "test").labels[i] for i in idx]
    norm = data.normalizers["audio"]
    again = waveforms_to_features([features_to_waveform(f, norm, fb) for f in feats], norm, fb)
    assert speech_clf.accuracy(again, labels) >= 0.8
    assert speech_clf.accuracy(again, labels) >= speech_clf.accuracy(feats, labels) - 0.15


def test_quality_run_writes_quality_json(tmp_path_factory, data):
    run = tiny_run(tmp_path_factory.getbasetemp())
    result = quality_run(run, max_items=60, data=data)
    saved = json.loads((run / "quality.json").read_text())
    assert saved["coherence"].keys() == {"audio->image", "image->audio"}
    for entry in saved["coherence"].values():
        assert entry["n"] == 60
        for key in ("reference_style", "prior_style"):  # a fraction of the 60 judged items
            assert entry[key] * 60 == pytest.approx(round(entry[key] * 60), abs=1e-9)
    assert saved["content_preservation"].keys() == {"audio", "image"}
    # slant / ink correlation of style source and output (dispart.evaluation.image_style)
    assert saved["image_style"].keys() == {"within_image", "audio_to_image"}
    for entry in saved["image_style"].values():
        assert entry.keys() == {"slant_corr", "ink_corr", "slant_corr_within_digit",
                                "ink_corr_within_digit", "slant_corr_ceiling", "ink_corr_ceiling",
                                "n"} and entry["n"] == 60
        assert all(-1.0 <= v <= 1.0 for k, v in entry.items() if k != "n")
    assert saved["classifiers"]["image"]["test_accuracy"] > IMAGE_BOUND
    assert saved["speaker_probe_accuracy"].keys() == {"z_s", "z_audio"}
    # the Griffin-Lim check, recomputed independently: the first 30 of the 60 test utterances the
    # seed-0 subset picks, waveform and back, judged by the run's saved speech classifier
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(data.split("audio", "test")), 60, replace=False))[:30]
    loaded = load_run(run)
    again = waveforms_to_features([features_to_waveform(data.split("audio", "test").examples[i],
                                                        loaded.normalizer, loaded.fbank) for i in idx],
                                  loaded.normalizer, loaded.fbank)
    judge = DigitClassifier.load(run / "classifiers" / "audio")
    expected = judge.accuracy(again, [data.split("audio", "test").labels[i] for i in idx])
    assert saved["resynthesis_real_speech"] == {"n": 30, "accuracy": pytest.approx(expected)}
    assert result["model_type"] == "pvae"
    # computed from these weights: the report recomputes it when model.safetensors changes
    weights = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    assert saved["weights_sha256"] == weights == result["weights_sha256"]
    assert (run / "classifiers" / "audio.safetensors").is_file()
