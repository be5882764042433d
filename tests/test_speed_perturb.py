"""``data.speed_perturb``: the training utterances also played faster / slower, each copy of a voice
a speaker of its own; the test split untouched; bad settings named."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dispart.batches.loaders import load_speech
from dispart.config import ConfigError, load_config
from dispart.data.corpus import scan_corpus
from dispart.data.sample import sample_fsdd_dir
from dispart.features.cache import cache_key
from dispart.features.fbank import FbankConfig, change_speed, fbank_from_file

pytestmark = pytest.mark.usefixtures("single_thread")


def test_change_speed_moves_pitch_and_duration_by_the_factor() -> None:
    t = np.arange(8000) / 8000.0  # 1 s at 8 kHz
    wave = np.sin(2 * np.pi * 500.0 * t).astype(np.float32)
    for speed in (0.8, 1.25):
        out = change_speed(wave, 8000, speed)
        assert len(out) == round(8000 / speed)
        peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 8000 / len(out)
        assert peak_hz == pytest.approx(500.0 * speed, abs=2.0)


def test_fbank_speed_is_keyed_only_when_it_changes_the_features() -> None:
    base = FbankConfig()
    assert "speed" not in base.to_dict()  # caches keyed before the field existed stay valid
    assert replace(base, speed=1.1).to_dict()["speed"] == 1.1
    with pytest.raises(ConfigError, match="speed=3.0"):
        FbankConfig(speed=3.0)
    with pytest.raises(ConfigError, match="data.speed_perturb"):
        load_config(None, ["data.speed_perturb=[1.0]"])
    with pytest.raises(ConfigError, match="data.speed_perturb"):
        load_config(None, ["data.speed_perturb=[0.9,0.9]"])


def test_sample_training_split_gets_a_copy_per_speed_and_the_test_split_none(tmp_path) -> None:
    plain = load_config(None, ["data.split=speaker:george", f"data.cache_dir={tmp_path}"]).data
    cfg = replace(plain, speed_perturb=[0.9, 1.1])
    before, after = load_speech(plain, progress=False), load_speech(cfg, progress=False)
    train0, train = before.sets["audio"]["train"], after.sets["audio"]["train"]
    assert len(train) == 3 * len(train0)
    counts = Counter(train.speakers)
    for spk, n in Counter(train0.speakers).items():
        assert counts[spk] == counts[f"{spk}@0.9"] == counts[f"{spk}@1.1"] == n
    assert len(set(train.ids)) == len(train)
    test0, test = before.sets["audio"]["test"], after.sets["audio"]["test"]
    assert test.ids == test0.ids and set(test.speakers) == {"george"}
    for a, b in zip(test.examples, test0.examples, strict=True):
        np.testing.assert_array_equal(a, b)
    # a copy is the file's features at that speed: 0.9 is longer, 1.1 shorter than the recording
    i = train.speakers.index(f"{train0.speakers[0]}@0.9")
    path = train.paths[i]
    np.testing.assert_array_equal(train.examples[i], fbank_from_file(path, replace(after.fbank, speed=0.9)))
    j = train0.paths.index(path)
    k = train.ids.index(f"{path}@1.1")
    assert len(train.examples[i]) > len(train0.examples[j]) > len(train.examples[k])
    # and is cached under its own key
    utt = scan_corpus(sample_fsdd_dir())[:1]
    assert cache_key(utt, after.fbank) != cache_key(utt, replace(after.fbank, speed=0.9))


def test_loso_benchmark_holds_out_real_speakers_not_speed_copies(tmp_path) -> None:
    """benchmarks/pvae_loso.py reads the speakers to hold out from the corpus: with speed
    perturbation on, the copies ("NAME@0.9") are training data, not folds."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from pvae_loso import corpus_speakers

    cfg = load_config(None, ["data.speed_perturb=[0.9]", f"data.cache_dir={tmp_path}"])
    assert corpus_speakers(cfg) == sorted({u.speaker for u in scan_corpus(sample_fsdd_dir())})
