"""Data keyed by modality: specs of image sequences, modality sets, corpus loaders, the two
pairing modes, and the GRID audio-visual loader (on ../shared/data when present)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from grid_helpers import grid_subset

from dispart.batches.batch import Sequences
from dispart.batches.loaders import LOADERS, Corpus, get_loader, grid_fbank, register_loader
from dispart.batches.modality import ModalitySpec
from dispart.batches.paired import ExamplePairs
from dispart.batches.pipeline import ExperimentData, load_experiment_data, merge_corpora
from dispart.batches.sets import ImageSet, ModalitySet, SpeechSet
from dispart.batches.weak import collate_partial
from dispart.data.config import DataConfig
from dispart.data.grid import _downsample, read_align, sentence
from dispart.errors import ConfigError, DataError
from dispart.features.normalize import FeatureNormalizer
from dispart.training.datamodule import PairedDataModule

# --------------------------------------------------------------------------- ModalitySpec "frames"


def test_frames_spec_round_trips_and_old_dicts_load() -> None:
    video = ModalitySpec("video", "frames", (1, 36, 45), frame_rate=25.0)
    assert video.dynamic and not ModalitySpec("image", "image", (1, 28, 28)).dynamic
    d = video.to_dict()
    assert d == {"name": "video", "kind": "frames", "shape": [1, 36, 45], "likelihood": "gaussian",
                 "frame_rate": 25.0}
    assert ModalitySpec.from_dict(d) == video
    old = {"name": "audio", "kind": "sequence", "shape": [80], "likelihood": "gaussian"}  # a saved run's
    assert ModalitySpec.from_dict(old) == ModalitySpec("audio", "sequence", (80,))
    assert ModalitySpec.from_dict(old).to_dict() == old  # static / rate-less dicts are unchanged
    assert ModalitySpec.from_dict({"name": "x", "kind": "vector", "shape": [3]}).likelihood == "gaussian"


@pytest.mark.parametrize("args, words", [
    (("video", "frames", (36, 45)), r"\(C, H, W\) shape"),
    (("image", "image", (784,)), r"\(C, H, W\) shape"),
    (("audio", "sequence", (1, 80)), "1-d shape"),
    (("video", "frames", (1, 0, 45)), "positive integers"),
    (("image", "image", (1, 28, 28), "gaussian", 25.0), "frame_rate is for kinds"),
    (("video", "frames", (1, 4, 4), "gaussian", -1.0), "frame_rate must be > 0"),
    (("video", "film", (1, 4, 4)), "unknown kind"),
])
def test_bad_specs_name_the_modality(args: tuple, words: str) -> None:
    with pytest.raises(ValueError, match=words) as e:
        ModalitySpec(*args)
    assert repr(args[0]) in str(e.value)


def test_bad_spec_dicts_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['shape'\]"):
        ModalitySpec.from_dict({"name": "a", "kind": "sequence"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['fps'\]"):
        ModalitySpec.from_dict({"name": "a", "kind": "sequence", "shape": [3], "fps": 25})
    with pytest.raises(ValueError, match="field 'shape'"):
        ModalitySpec.from_dict({"name": "a", "kind": "sequence", "shape": ["x"]})
    with pytest.raises(ValueError, match="must be a mapping"):
        ModalitySpec.from_dict(["a", "sequence", [3]])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- sets and ExperimentData


def test_modality_sets_check_their_fields() -> None:
    s = ModalitySet([np.zeros((3, 2)), np.zeros((5, 2))], ["a", "b"])
    assert s.ids == ["0", "1"] and s.lengths() == [3, 5] and s.position() == {"0": 0, "1": 1}
    with pytest.raises(DataError, match="2 examples but 1 labels"):
        ModalitySet([np.zeros((3, 2)), np.zeros((5, 2))], ["a"])
    with pytest.raises(DataError, match=r"2 examples but 3 meta\['words'\]"):
        ModalitySet(np.zeros((2, 4)), ["a", "b"], meta={"words": [1, 2, 3]})
    with pytest.raises(DataError, match="'x' occurs more than once"):
        ModalitySet(np.zeros((2, 4)), ["a", "b"], ids=["x", "x"])
    speech = SpeechSet([np.ones((2, 3))], ["7"], ["george"], ["/d/7_george_0.wav"])
    assert speech.features is speech.examples and speech.ids == ["/d/7_george_0.wav"]
    images = ImageSet(np.zeros((2, 28, 28)), ["1", "2"])
    assert images.images is images.examples and len(images) == 2


def _toy_corpus(seed: int = 0, n_train: int = 6, n_test: int = 3) -> Corpus:
    """Audio (T_i, 2) and video (T_i, 1, 2, 2) of the same clips; every value of clip k's video
    is k, so a batch row can be traced back to its clip."""
    rng = np.random.default_rng(seed)
    sets: dict[str, dict[str, ModalitySet]] = {"audio": {}, "video": {}}
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        lengths = rng.integers(2, 7, size=n)
        ids = [f"clip{k + i}" for i in range(n)]
        labels = [str((k + i) % 3) for i in range(n)]
        audio = [rng.normal(3.0, 2.0, size=(int(t), 2)).astype(np.float32) for t in lengths]
        video = [np.full((int(t), 1, 2, 2), float(k + i), np.float32) for i, t in enumerate(lengths)]
        sets["audio"][split] = ModalitySet(audio, labels, ids)
        sets["video"][split] = ModalitySet(video, labels, ids)
        k += n
    specs = {"audio": ModalitySpec("audio", "sequence", (2,), frame_rate=25.0),
             "video": ModalitySpec("video", "frames", (1, 2, 2), frame_rate=25.0)}
    return Corpus(sets, specs, pairing="example", normalize=("audio",))


def test_merged_data_normalises_with_train_statistics() -> None:
    corpus = _toy_corpus()
    raw_train = [a.copy() for a in corpus.sets["audio"]["train"].examples]
    raw_test = [a.copy() for a in corpus.sets["audio"]["test"].examples]
    data = merge_corpora([corpus], DataConfig())
    frames = np.concatenate(raw_train).astype(np.float64)  # hand-computed statistics
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    for got, raw in zip(data.sets["audio"]["test"].examples, raw_test, strict=True):
        np.testing.assert_allclose(got, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    train = np.concatenate(data.sets["audio"]["train"].examples)
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    assert data.pairing == "example" and data.modalities == ["audio", "video"]
    assert set(data.normalizers) == {"audio"} and isinstance(data.normalizers["audio"], FeatureNormalizer)
    assert data.sets["video"]["train"].examples[0][0, 0, 0, 0] == 0.0  # not normalised
    assert data.spec("video").kind == "frames"
    assert data.split("video", "test").ids == ["clip6", "clip7", "clip8"]
    # the modality-keyed view: speech here, no image
    assert "audio" in data.sets and data.split("audio", "train") is data.sets["audio"]["train"]
    assert "image" not in data.sets
    with pytest.raises(ConfigError, match="modality 'depth' is not in the data"):
        data.spec("depth")
    with pytest.raises(ConfigError, match="no split 'val'"):
        data.split("audio", "val")


def test_reused_normaliser_and_corpus_merging() -> None:
    first = merge_corpora([_toy_corpus(0)], DataConfig())
    again = merge_corpora([_toy_corpus(1)], DataConfig(), {"audio": first.normalizers["audio"]})
    assert again.normalizers["audio"] is first.normalizers["audio"]
    raw = _toy_corpus(1).sets["audio"]["train"].examples[0]
    n = first.normalizers["audio"]
    np.testing.assert_allclose(again.sets["audio"]["train"].examples[0], (raw - n.mean) / n.std, rtol=1e-6)
    with pytest.raises(ConfigError, match="modality 'audio' comes from two corpora"):
        merge_corpora([_toy_corpus(0), _toy_corpus(1)], DataConfig())
    images = Corpus({"image": {"train": ImageSet(np.zeros((2, 28, 28)), ["0", "1"]),
                               "test": ImageSet(np.zeros((1, 28, 28)), ["0"])}},
                    {"image": ModalitySpec("image", "image", (1, 28, 28))})
    both = merge_corpora([_toy_corpus(0), images], DataConfig())
    assert both.pairing == "label" and both.modalities == ["audio", "video", "image"]
    with pytest.raises(ValueError, match="spec 'x' is filed under modality 'image'"):
        Corpus({"image": {}}, {"image": ModalitySpec("x", "image", (1, 2, 2))})


def test_loader_registry() -> None:
    assert {"speech", "mnist", "grid"} <= set(LOADERS)
    with pytest.raises(ConfigError, match=r"unknown corpus loader 'tidigits'; choose among \["):
        get_loader("tidigits")
    name = "toy-av-test"
    if name not in LOADERS:
        register_loader(name)(lambda cfg, progress: _toy_corpus())
    with pytest.raises(ValueError, match="already registered"):
        register_loader(name)(lambda cfg, progress: _toy_corpus())
    data = load_experiment_data(DataConfig(), progress=False, loaders=[name])
    assert isinstance(data, ExperimentData) and data.pairing == "example"
    assert len(data.sets["video"]["train"]) == 6
    mnist = load_experiment_data(DataConfig(), progress=False, speech=False)
    assert mnist.pairing == "example" and mnist.modalities == ["image", "label"]
    np.testing.assert_array_equal(mnist.sets["label"]["train"].examples,
                                  np.array([int(y) for y in mnist.split("image", "train").labels]))
    assert mnist.spec("label").shape == (10,) and mnist.spec("image").likelihood == "gaussian"


# --------------------------------------------------------------------------- pairing by example


def test_example_pairs_join_by_id() -> None:
    a = ModalitySet([np.full((2, 1), 1.0), np.full((3, 1), 2.0), np.full((4, 1), 3.0)], ["x", "y", "x"],
                    ids=["c1", "c2", "c3"])
    v = ModalitySet(np.array([30.0, 10.0]), ["x", "x"], ids=["c3", "c1"])  # other order, c2 missing
    pairs = ExamplePairs({"audio": a, "vec": v})
    assert pairs.ids == ["c1", "c3"] and pairs.dropped == {"audio": 1, "vec": 0}
    assert pairs.lengths == [2, 4] and pairs.classes == ["x"]
    item = pairs[1]
    assert item["audio"][0, 0] == 3.0 and item["vec"] == 30.0 and item["label"] == 0 and item["index"] == 1
    with pytest.raises(DataError, match="share no example id"):
        ExamplePairs({"audio": a, "vec": ModalitySet(np.zeros(1), ["x"], ids=["zz"])})
    with pytest.raises(DataError, match="example 'c1' has label 'x' in 'audio' but 'y' in 'vec'"):
        ExamplePairs({"audio": a, "vec": ModalitySet(np.zeros(1), ["y"], ids=["c1"])})


def test_collate_frames_with_a_missing_modality() -> None:
    specs = [ModalitySpec("video", "frames", (1, 2, 2)), ModalitySpec("audio", "sequence", (3,))]
    items = [{"video": np.ones((2, 1, 2, 2), np.float32), "audio": np.ones((2, 3), np.float32), "label": 0},
             {"audio": np.ones((4, 3), np.float32), "label": 1}]
    batch = collate_partial(items, specs)
    video = batch["video"]
    assert isinstance(video, Sequences) and tuple(video.data.shape) == (2, 2, 1, 2, 2)
    assert video.lengths.tolist() == [2, 1] and float(video.data[1].abs().sum()) == 0.0
    assert batch["video:present"].tolist() == [True, False] and "audio:present" not in batch
    assert batch["label"].tolist() == [0, 1]


def _epoch(dm: PairedDataModule, epoch: int) -> list[dict]:
    dm.set_epoch(epoch)
    return list(dm.train_dataloader())


def test_datamodule_pairs_by_example() -> None:
    corpus = _toy_corpus(n_train=11)
    raw_lengths = corpus.sets["audio"]["train"].lengths()
    data = merge_corpora([corpus], DataConfig())
    dm = PairedDataModule(data, batch_size=4, seed=3)
    dm.setup()
    assert dm.pairing == "example" and dm.modalities == ["audio", "video"]
    batches = _epoch(dm, 0)
    seen = []
    for b in batches:
        audio, video = b["audio"], b["video"]
        assert isinstance(video, Sequences) and video.data.shape[2:] == (1, 2, 2)
        assert torch.equal(audio.lengths, video.lengths)
        clips = video.data[:, 0, 0, 0, 0].long().tolist()  # every value of clip k's video is k
        assert b["index"].tolist() == clips  # row i holds audio and video of the same clip
        assert audio.lengths.tolist() == [raw_lengths[k] for k in clips]
        expect = [int(lab) for lab in (data.sets["audio"]["train"].labels[k] for k in clips)]
        assert b["label"].tolist() == expect
        seen += clips
    assert sorted(seen) == list(range(11))  # every example exactly once per epoch
    again = PairedDataModule(data, batch_size=4, seed=3)
    again.setup()
    for x, y in zip(_epoch(again, 0), batches, strict=True):  # a function of (seed, epoch)
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["video"].data, y["video"].data)
    assert [b["index"].tolist() for b in _epoch(dm, 1)] != [b["index"].tolist() for b in batches]
    with pytest.raises(ConfigError, match="modality 'image' is not in the data"):
        PairedDataModule(data, pairing="example", specs=[ModalitySpec("image", "image", (1, 2, 2))])
    with pytest.raises(ConfigError, match="pairing must be one of"):
        PairedDataModule(data, pairing="speaker")


def test_image_and_label_pair_by_example() -> None:
    data = load_experiment_data(DataConfig(), progress=False, speech=False)
    dm = PairedDataModule(data, batch_size=100, seed=0)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert tuple(b["image"].shape) == (100, 1, 28, 28)
    rows = b["index"].numpy()
    images = data.split("image", "train")
    np.testing.assert_array_equal(b["image"][:, 0].numpy(), images.examples[rows])
    np.testing.assert_array_equal(b["label"].numpy(), [int(images.labels[i]) for i in rows])


# --------------------------------------------------------------------------- GRID


def test_read_align_and_downsample(tmp_path: Path) -> None:
    f = tmp_path / "x.align"
    f.write_text("0 15250 sil\n15250 21000 bin\n21000 25750 blue\n25750 27750 at\n27750 32250 l\n"
                 "32250 40500 seven\n40500 50500 soon\n50500 74500 sil\n")
    words = read_align(f)
    assert words[1].start == pytest.approx(0.61) and words[1].end == pytest.approx(0.84)
    assert sentence(words) == ["bin", "blue", "at", "l", "seven", "soon"]
    f.write_text("0 15250 sil\n15250 bin\n")
    with pytest.raises(DataError, match="line 2: expected 'start end word'"):
        read_align(f)
    frames = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    small = _downsample(frames, 2)
    assert small.shape == (2, 2, 3)
    assert small[0, 0, 0] == np.mean([0, 1, 6, 7]) and small[1, 1, 2] == np.mean([40, 41, 46, 47])


def test_grid_clips_give_aligned_audio_and_video(tmp_path: Path) -> None:
    root = grid_subset(tmp_path, 6)  # skips without the GRID sample or PyAV
    import av
    cfg = replace(DataConfig(), audio=str(root))
    data = load_experiment_data(cfg, progress=False, loaders=["grid"])
    assert data.pairing == "example" and data.modalities == ["audio", "video"]
    assert data.spec("video") == ModalitySpec("video", "frames", (1, 36, 45), frame_rate=25.0)
    assert data.spec("audio") == ModalitySpec("audio", "sequence", (cfg.n_mels,), frame_rate=25.0)
    assert data.fbank.hop_length == cfg.sample_rate // 25  # one feature frame per video frame
    ids = sorted(p.stem for p in (root / "video").glob("*.mpg"))
    assert data.sets["video"]["test"].ids == [ids[0], ids[5]]  # every 5th clip is test
    assert data.sets["audio"]["train"].ids == data.sets["video"]["train"].ids == ids[1:5]
    video, audio = data.sets["video"]["train"], data.sets["audio"]["train"]
    for v, a, clip, label in zip(video.examples, audio.examples, video.ids, video.labels, strict=True):
        assert v.shape == (75, 1, 36, 45) and a.shape == (75, cfg.n_mels)  # 3 s at 25 fps
        assert 0.0 <= v.min() and v.max() <= 1.0
        words = (root / "align" / f"{clip}.align").read_text().split()[2::3]
        assert label == [w for w in words if w != "sil"][4]  # the digit word
    with av.open(str(root / "video" / f"{video.ids[0]}.mpg")) as c:  # block means keep the mean
        first = next(c.decode(video=0)).to_ndarray(format="gray").astype(np.float64) / 255.0
    assert video.examples[0][0].mean() == pytest.approx(first.mean(), abs=1e-5)
    frames = np.concatenate(audio.examples).astype(np.float64)  # normalised with train statistics
    np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=1e-3)
    assert grid_fbank(cfg).n_fft >= grid_fbank(cfg).win_length
    dm = PairedDataModule(data, batch_size=4, seed=0)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert tuple(b["video"].data.shape) == (4, 75, 1, 36, 45) and tuple(b["audio"].data.shape) == (4, 75, 80)


def test_grid_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.audio: the grid loader needs the GRID folder"):
        get_loader("grid")(DataConfig(), False)
    root = grid_subset(tmp_path, 2)
    with pytest.raises(ConfigError, match="data.split='speaker:s1'"):
        get_loader("grid")(replace(DataConfig(), audio=str(root), split="speaker:s1"), False)
    (root / "align" / sorted((root / "align").iterdir())[0].name).unlink()
    with pytest.raises(DataError, match="no alignment"):
        get_loader("grid")(replace(DataConfig(), audio=str(root)), False)
    loaded = partial(get_loader("grid"), replace(DataConfig(), audio=str(root), on_error="skip"))
    with pytest.raises(DataError, match=r"no usable clip in split\(s\) \['test'\]"):
        loaded(False)


def test_select_keeps_every_field_of_the_chosen_examples() -> None:
    seqs = SpeechSet([np.full((i + 1, 2), i, np.float32) for i in range(4)], list("0123"),
                     ["a", "b", "a", "c"], [f"/x/{i}.wav" for i in range(4)])
    seqs.meta["words"] = ["w0", "w1", "w2", "w3"]
    sub = seqs.select([True, False, True, False])
    assert [x.shape[0] for x in sub.examples] == [1, 3] and sub.labels == ["0", "2"]
    assert sub.ids == ["/x/0.wav", "/x/2.wav"] and sub.speakers == ["a", "a"]
    assert sub.paths == ["/x/0.wav", "/x/2.wav"] and sub.meta == {"words": ["w0", "w2"]}
    images = ImageSet(np.arange(12, dtype=np.float32).reshape(3, 2, 2), ["1", "2", "3"])
    kept = images.select(np.array([False, True, True]))
    assert isinstance(kept.examples, np.ndarray) and kept.examples.shape == (2, 2, 2)
    assert kept.labels == ["2", "3"] and kept.ids == ["1", "2"] and kept.speakers is None
    with pytest.raises(ValueError, match=r"keep has shape \(2,\)"):
        images.select([True, False])
