"""``data.normalize=speaker``: each speaker's mean log-Mel frame (over their utterances in the split)
is removed before the train-split normaliser; what inversion adds back; bad input named."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dispart.batches.corpus import Corpus
from dispart.batches.modality import ModalitySpec
from dispart.batches.pipeline import load_experiment_data, load_speech_set, merge_corpora
from dispart.batches.sets import SpeechSet
from dispart.config import ConfigError, load_config
from dispart.data.config import DataConfig
from dispart.data.sample import sample_fsdd_dir
from dispart.errors import DataError
from dispart.features.fbank import FbankConfig, log_mel
from dispart.features.normalize import FeatureNormalizer, centre_as
from dispart.generation.audio import features_to_logmel, utterance_offset, waveforms_to_features

pytestmark = pytest.mark.usefixtures("single_thread")


def test_centring_by_group_removes_each_groups_frame_weighted_mean() -> None:
    a = np.array([[1.0, 10.0], [3.0, 14.0]], np.float32)  # speaker s, 2 frames
    b = np.array([[5.0, 0.0], [7.0, 2.0], [9.0, 4.0], [11.0, 6.0]], np.float32)  # speaker s, 4 frames
    c = np.array([[2.0, 2.0]], np.float32)  # speaker t, alone
    # s: frame-weighted mean of a's and b's six frames = (36 / 6, 36 / 6) = (6, 6), not the mean
    # of the two utterance means ((2, 12) and (8, 3) -> (5, 7.5))
    got = FeatureNormalizer.centre([a, b, c], ["s", "s", "t"])
    np.testing.assert_allclose(got[0], a - 6.0)
    np.testing.assert_allclose(got[1], b - 6.0)
    np.testing.assert_allclose(got[2], [[0.0, 0.0]])
    # one group per utterance is per-utterance centring
    for x, y in zip(FeatureNormalizer.centre([a, b], ["u", "v"]), FeatureNormalizer.centre([a, b]),
                    strict=True):
        np.testing.assert_allclose(x, y)
    with pytest.raises(DataError, match="2 arrays but 1 group"):
        FeatureNormalizer.centre([a, b], ["s"])
    # centre_as: what each data.normalize mode removes, in one place
    np.testing.assert_allclose(centre_as([a, b, c], "speaker", ["s", "s", "t"])[1], b - 6.0)
    np.testing.assert_allclose(centre_as([a], "utterance")[0], a - a.mean(0))
    np.testing.assert_array_equal(centre_as([a], "global")[0], a)
    with pytest.raises(ValueError, match="needs the speaker"):
        centre_as([a], "speaker")
    with pytest.raises(ValueError, match="data.normalize must be one of"):
        centre_as([a], "speakers")
    # fit: the offset is the raw mean frame; statistics of the group-centred frames
    norm = FeatureNormalizer().fit([a, b, c], centre_utterances=True, groups=["s", "s", "t"])
    np.testing.assert_allclose(norm.utterance_offset, [38 / 7, 38 / 7], rtol=1e-6)
    centred = np.concatenate(got)
    np.testing.assert_allclose(norm.mean, centred.mean(0), atol=1e-6)
    np.testing.assert_allclose(norm.std, centred.std(0), rtol=1e-6)


def _corpus(speakers_train: list[str | None], speakers_test: list[str]) -> Corpus:
    rng = np.random.default_rng(0)
    level = {"a": 0.0, "b": 5.0, "c": -3.0, None: 1.0}  # a speaker's channel: a constant offset

    def utts(speakers):
        feats = [rng.normal(size=(int(rng.integers(3, 9)), 4)).astype(np.float32) + level[s]
                 for s in speakers]
        return SpeechSet(feats, ["0"] * len(feats), list(speakers), [f"u{i}.wav" for i in range(len(feats))])

    sets = {"audio": {"train": utts(speakers_train), "test": utts(speakers_test)}}
    spec = ModalitySpec("audio", "sequence", (4,))
    return Corpus(sets, {"audio": spec}, normalize=("audio",), fbank=FbankConfig())


def test_pipeline_centres_each_speaker_of_each_split_on_their_own_frames() -> None:
    corpus = _corpus(["a", "b", "a", "b", "b"], ["c", "c", "c"])
    raw_train = list(corpus.sets["audio"]["train"].examples)
    data = merge_corpora([corpus], DataConfig(normalize="speaker"))
    norm = data.normalizers["audio"]
    np.testing.assert_allclose(norm.utterance_offset, np.concatenate(raw_train).mean(0), rtol=1e-5)
    for split in ("train", "test"):
        s = data.split("audio", split)
        for spk in set(s.speakers):
            frames = np.concatenate([x for x, sp in zip(s.examples, s.speakers, strict=True) if sp == spk])
            # every speaker's centred mean frame is 0, i.e. transform(0) after the normaliser: the
            # speakers' levels (0, 5, -3) are gone, the unseen speaker c's from its own frames
            np.testing.assert_allclose(frames.mean(0), norm.transform(np.zeros(4)), atol=1e-5)
    # per-utterance centring would also take each utterance's own mean: speaker centring does not
    utt = merge_corpora([_corpus(["a", "b", "a", "b", "b"], ["c", "c", "c"])],
                        DataConfig(normalize="utterance"))
    assert not np.allclose(data.split("audio", "train").examples[0], utt.split("audio", "train").examples[0])


def test_an_utterance_without_a_speaker_is_named() -> None:
    with pytest.raises(DataError, match="'audio' train split has examples without a speaker"):
        merge_corpora([_corpus(["a", None], ["c"])], DataConfig(normalize="speaker"))


def test_config_accepts_speaker_and_names_other_values() -> None:
    assert load_config(None, ["data.normalize=speaker"]).data.normalize == "speaker"
    with pytest.raises(ConfigError, match="data.normalize"):
        load_config(None, ["data.normalize=speakers"])


def test_inversion_adds_the_training_mean_and_generated_speech_is_centred_as_one_voice() -> None:
    norm = FeatureNormalizer().fit([np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)],
                                   centre_utterances=True, groups=["s"])
    run = SimpleNamespace(config=load_config(None, ["data.normalize=speaker"]), normalizer=norm)
    np.testing.assert_array_equal(utterance_offset(run), [2.0, 4.0])
    # waveforms -> features: one mean frame removed from all of them together
    fb = FbankConfig()
    t = np.arange(4000) / 8000.0
    waves = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (300.0, 900.0)]
    one = FeatureNormalizer().fit([np.zeros((2, fb.n_mels), np.float32), np.ones((2, fb.n_mels), np.float32)])
    got = waveforms_to_features(waves, one, fb, "speaker")
    raw = [log_mel(w, fb) for w in waves]
    mean = np.concatenate(raw).mean(0)
    for g, r in zip(got, raw, strict=True):
        np.testing.assert_allclose(g, one.transform(r - mean), rtol=1e-5, atol=1e-5)
    per_utt = waveforms_to_features(waves, one, fb, "utterance")
    np.testing.assert_allclose(per_utt[0], one.transform(raw[0] - raw[0].mean(0)), rtol=1e-5, atol=1e-5)


def test_real_sample_and_an_unseen_speaker_csv(tmp_path) -> None:
    """The embedded FSDD sample with speaker centring; a CSV of another speaker's files is centred
    on that speaker's own frames (``dispart evaluate --audio CSV``)."""
    cfg = load_config(None, ["data.normalize=speaker", "data.split=speaker:george"]).data
    data = load_experiment_data(cfg, progress=False, speech=False, loaders=["speech"])
    test = data.split("audio", "test")
    assert set(test.speakers) == {"george"}
    frames = np.concatenate(list(test.examples))
    norm = data.normalizers["audio"]
    np.testing.assert_allclose(frames.mean(0), norm.transform(np.zeros(cfg.n_mels)), atol=1e-4)
    wavs = sorted(sample_fsdd_dir().glob("*_george_*.wav"))[:6]
    csv = tmp_path / "unseen.csv"
    csv.write_text("label,speaker,path\n" + "".join(f"{p.name[0]},someone,{p}\n" for p in wavs))
    got, skipped = load_speech_set(csv, cfg, norm, progress=False)
    assert skipped == [] and len(got) == 6
    np.testing.assert_allclose(np.concatenate(list(got.examples)).mean(0),
                               norm.transform(np.zeros(cfg.n_mels)), atol=1e-4)


def test_the_shipped_config_is_the_measured_loso_setting() -> None:
    """configs/pvae_speaker_norm.yaml is configs/pvae_robust.yaml plus the overrides the LOSO
    headline (tag robust_bilstm_mel24_h20_spknorm_b64 in benchmarks/results/pvae_loso.json) ran with."""
    root = Path(__file__).resolve().parent.parent
    folds = json.loads((root / "benchmarks" / "results" / "pvae_loso.json").read_text())["folds"]
    commands = {f["command"] for f in folds if f["tag"] == "robust_bilstm_mel24_h20_spknorm_b64"}
    assert len(folds) and commands
    overrides = {tuple(a for a in shlex.split(c) if "=" in a and a.split("=")[0].count(".") == 1
                       and not a.startswith(("OMP_", "--"))) for c in commands}
    (measured,) = overrides
    want = asdict(load_config(root / "configs" / "pvae_robust.yaml", list(measured)))
    got = asdict(load_config(root / "configs" / "pvae_speaker_norm.yaml"))
    want["model"]["display_name"] = got["model"]["display_name"]
    assert got == want


def test_speaker_var_standardises_each_speakers_bands_and_inversion_restores_the_average_voice() -> None:
    """``data.normalize=speaker_var``: each speaker's frames minus their mean frame, divided by their
    per-band std (both frame-weighted over the speaker's utterances); the normaliser keeps the
    pooled within-speaker std, which inversion multiplies back before adding the mean raw frame."""
    a = np.array([[1.0, 10.0], [3.0, 14.0]], np.float32)  # speaker s
    b = np.array([[5.0, 6.0], [7.0, 2.0]], np.float32)  # speaker s
    c = np.array([[2.0, 2.0], [2.0, 6.0]], np.float32)  # speaker t: band 0 constant
    # s: mean (4, 8); deviations band 0 (-3, -1, 1, 3) -> std sqrt(5); band 1 (2, 6, -2, -6) -> sqrt(20)
    got = centre_as([a, b, c], "speaker_var", ["s", "s", "t"])
    np.testing.assert_allclose(got[0], (a - [4.0, 8.0]) / np.sqrt([5.0, 20.0]), rtol=1e-6)
    np.testing.assert_allclose(got[1], (b - [4.0, 8.0]) / np.sqrt([5.0, 20.0]), rtol=1e-6)
    # t: band 0 has std 0 (floored at 1e-5, deviations 0 stay 0); band 1 deviations (-2, 2), std 2
    np.testing.assert_allclose(got[2], [[0.0, -1.0], [0.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="needs the speaker"):
        centre_as([a], "speaker_var")
    norm = FeatureNormalizer().fit([a, b, c], centre_utterances=True, groups=["s", "s", "t"], scale=True)
    # pooled within-speaker std over the 6 frames:
    # band 0 sqrt((9+1+1+9+0+0)/6), band 1 sqrt((4+36+4+36+4+4)/6)
    np.testing.assert_allclose(norm.utterance_scale, np.sqrt([20 / 6, 88 / 6]), rtol=1e-6)
    np.testing.assert_allclose(norm.utterance_offset, [20 / 6, 40 / 6], rtol=1e-6)
    # round trip of the state; a speaker-mean-only normaliser has no scale
    back = FeatureNormalizer.from_state_dict(norm.state_dict())
    np.testing.assert_array_equal(back.utterance_scale, norm.utterance_scale)
    assert FeatureNormalizer().fit([a, c], centre_utterances=True, groups=["s", "t"]).utterance_scale is None
    bad = dict(norm.state_dict(), utterance_scale=np.array([1.0, -1.0], np.float32))
    with pytest.raises(DataError, match="utterance_scale must be positive"):
        FeatureNormalizer.from_state_dict(bad)
    with pytest.raises(DataError, match="utterance_scale must be 2 finite"):
        FeatureNormalizer.from_state_dict(dict(norm.state_dict(), utterance_scale=np.ones(3)))
    # inversion: a frame standardised as speaker s is z; back in log-Mel it is z * scale + offset
    z = np.asarray(got[0], np.float32)
    logmel = features_to_logmel(norm.transform(z), norm, norm.utterance_offset)
    np.testing.assert_allclose(logmel, z * norm.utterance_scale + norm.utterance_offset, rtol=1e-5, atol=1e-5)
    # the config accepts it; the pipeline standardises every speaker of every split on their own frames
    assert load_config(None, ["data.normalize=speaker_var"]).data.normalize == "speaker_var"
    data = merge_corpora([_corpus(["a", "b", "a", "b", "b"], ["c", "c", "c"])],
                         DataConfig(normalize="speaker_var"))
    norm = data.normalizers["audio"]
    for split in ("train", "test"):
        s = data.split("audio", split)
        for spk in set(s.speakers):
            frames = norm.inverse_transform(np.concatenate(
                [x for x, sp in zip(s.examples, s.speakers, strict=True) if sp == spk]))
            np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-5)
            np.testing.assert_allclose(frames.std(0), 1.0, rtol=1e-4)
