"""Pairing spoken and written digits, batching and length-bucketed sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dispart.batches.batch import Sequences
from dispart.batches.paired import (
    LengthBucketSampler,
    PairedDigits,
    UnimodalAudio,
    UnimodalImages,
    collate_audio,
    collate_images,
    collate_paired,
)
from dispart.data.corpus import scan_corpus
from dispart.data.mnist import load_mnist
from dispart.data.sample import sample_fsdd_dir, sample_mnist_path
from dispart.errors import DataError
from dispart.features.cache import FeatureSet, compute_features
from dispart.features.fbank import FbankConfig


@pytest.fixture(scope="module")
def sample_features() -> FeatureSet:
    utts = scan_corpus(sample_fsdd_dir())[::4]  # 100 real utterances, every class
    return compute_features(utts, FbankConfig(), None, progress=False)


@pytest.fixture(scope="module")
def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    return load_mnist(sample_mnist_path())["train"]


@pytest.fixture()
def paired(sample_features: FeatureSet, mnist_train: tuple[np.ndarray, np.ndarray]) -> PairedDigits:
    images, labels = mnist_train
    return PairedDigits(
        sample_features.features,
        [u.label for u in sample_features.utterances],  # strings "0".."9"
        images,
        labels,  # int64 0..9
        seed=7,
        speakers=[u.speaker for u in sample_features.utterances],
    )


def test_pairs_have_equal_labels(paired: PairedDigits, mnist_train: tuple) -> None:
    images, labels = mnist_train
    assert paired.classes == [str(d) for d in range(10)]
    assert len(paired) == 100 and len(paired.lengths) == 100
    for epoch in range(3):
        paired.set_epoch(epoch)
        for i in range(len(paired)):
            item = paired[i]
            assert item["index"] == i
            assert item["audio"].shape == (paired.lengths[i], 80)
            assert item["image"].shape == (1, 28, 28) and item["image"].dtype == np.float32
            j = paired.pairing[i]
            np.testing.assert_array_equal(item["image"][0], images[j])
            assert labels[j] == item["label"] == int(paired.classes[item["label"]])


def test_repairing_changes_with_epoch_and_is_deterministic(
    paired: PairedDigits, sample_features: FeatureSet, mnist_train: tuple
) -> None:
    paired.set_epoch(0)
    e0 = paired.pairing.copy()
    paired.set_epoch(1)
    e1 = paired.pairing.copy()
    assert (e0 != e1).mean() > 0.9  # ~120 images per class: almost all pairs change
    paired.set_epoch(0)
    np.testing.assert_array_equal(paired.pairing, e0)
    images, labels = mnist_train
    audio_labels = [u.label for u in sample_features.utterances]
    same = PairedDigits(sample_features.features, audio_labels, images, labels, seed=7)
    other = PairedDigits(sample_features.features, audio_labels, images, labels, seed=8)
    for ds in (same, other):
        ds.set_epoch(1)
    np.testing.assert_array_equal(same.pairing, e1)
    assert (other.pairing != e1).mean() > 0.9


def test_class_mismatch_names_class_and_modality(mnist_train: tuple) -> None:
    images, labels = mnist_train
    audio = [np.zeros((5, 80), np.float32)] * 3
    with pytest.raises(DataError, match=r"\['10'\] present in audio but absent from images"):
        PairedDigits(audio, ["1", "2", "10"], images, labels)
    keep = labels != 7
    msg = r"\['7'\] present in audio but absent from images"
    with pytest.raises(DataError, match=msg):
        PairedDigits(audio, [1, 7, 2], images[keep], labels[keep])
    with pytest.raises(DataError, match=r"present in images but absent from audio"):
        PairedDigits(audio, [1, 2, 3], images, labels)


def test_collate_and_dataloader_with_bucket_sampler(paired: PairedDigits) -> None:
    sampler = LengthBucketSampler(paired.lengths, batch_size=16, seed=1, bucket_size_multiplier=2)
    loader = DataLoader(paired, batch_sampler=sampler, collate_fn=collate_paired)
    seen = []
    for batch in loader:
        audio = batch["audio"]
        assert isinstance(audio, Sequences) and audio.data.shape[2] == 80
        b = audio.batch_size
        assert batch["image"].shape == (b, 1, 28, 28) and batch["image"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64 and batch["index"].shape == (b,)
        idx = batch["index"].tolist()
        assert audio.lengths.tolist() == [paired.lengths[i] for i in idx]
        assert audio.data.shape[1] == max(audio.lengths.tolist())
        for k, i in enumerate(idx):  # padding is zero, frames are the utterance's
            n = paired.lengths[i]
            torch.testing.assert_close(audio.data[k, :n], torch.from_numpy(paired.audio[i]))
            assert not audio.data[k, n:].any()
        seen += idx
    assert sorted(seen) == list(range(len(paired)))


def test_bucket_sampler_covers_and_groups() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(15, 80, size=1003).tolist()
    sampler = LengthBucketSampler(lengths, batch_size=32, seed=3, bucket_size_multiplier=8)
    assert len(sampler) == 32
    lens = np.asarray(lengths)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1003))  # every index exactly once
        spread = np.mean([np.ptp(lens[b]) for b in batches if len(b) > 1])
        random_spread = np.mean([np.ptp(lens[rng.permutation(1003)[:32]]) for _ in range(50)])
        assert spread < 0.25 * random_spread  # length-homogeneous batches
        orders.append(flat)
    assert orders[0] != orders[1]
    sampler.set_epoch(0)
    assert [i for b in sampler for i in b] == orders[0]  # deterministic per (seed, epoch)
    dropped = LengthBucketSampler(lengths, batch_size=32, drop_last=True)
    assert len(dropped) == 31 and all(len(b) == 32 for b in dropped)
    ordered = LengthBucketSampler(lengths, batch_size=32, shuffle=False)
    assert sorted(i for b in ordered for i in b) == list(range(1003))


def test_unimodal_datasets(sample_features: FeatureSet, mnist_train: tuple) -> None:
    labels = [u.label for u in sample_features.utterances]
    audio = UnimodalAudio(sample_features.features, labels)
    batch = collate_audio([audio[i] for i in range(5)])
    assert isinstance(batch["audio"], Sequences) and batch["audio"].batch_size == 5
    assert batch["label"].tolist() == [int(x) for x in labels[:5]]
    images, ilabels = mnist_train
    imgs = UnimodalImages(images[:10], ilabels[:10], classes=audio.classes)
    ib = collate_images([imgs[i] for i in range(10)])
    assert ib["image"].shape == (10, 1, 28, 28)
    assert ib["label"].tolist() == ilabels[:10].tolist()
    with pytest.raises(DataError, match=r"\['x'\]"):
        UnimodalImages(images[:2], ["1", "x"], classes=audio.classes)


def test_speaker_indices_in_items_and_batches(paired: PairedDigits, sample_features: FeatureSet,
                                              mnist_train: tuple) -> None:
    """Each item carries its utterance's speaker as an index into the sorted speakers; a batch
    has them as (B,) int64 (what PVAE's speaker penalty reads); without speakers there are none."""
    speakers = [u.speaker for u in sample_features.utterances]
    assert paired.speaker_names == sorted(set(speakers)) and len(paired.speaker_names) >= 2
    items = [paired[i] for i in range(len(paired))]
    assert [paired.speaker_names[it["speaker"]] for it in items] == speakers
    b = collate_paired(items[:7])
    assert b["speaker"].dtype == torch.int64 and b["speaker"].tolist() == [it["speaker"] for it in items[:7]]
    plain = PairedDigits(sample_features.features, [u.label for u in sample_features.utterances],
                         *mnist_train)
    assert "speaker" not in plain[0] and "speaker" not in collate_paired([plain[0], plain[1]])
