"""Datasets pairing modalities, and batching helpers. Two pairing modes:

* by label (:class:`PairedDigits`), as in the PVAE paper: every spoken digit is paired with a
  random image of the same label, and the pairing is redrawn every epoch
  (:meth:`PairedDigits.set_epoch`);
* by example (:class:`ExamplePairs`): the modalities of one example (audio and video frames of
  one clip) are joined by their example id; the pairing is fixed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dispart.batches.batch import Sequences
from dispart.errors import DataError

__all__ = [
    "PAIRINGS",
    "ExamplePairs",
    "LengthBucketSampler",
    "PairedDigits",
    "UnimodalAudio",
    "UnimodalImages",
    "collate_audio",
    "collate_images",
    "collate_paired",
    "sort_classes",
]


PAIRINGS = ("label", "example")


def _label_str(x: Any) -> str:
    if isinstance(x, (np.integer, int)) and not isinstance(x, bool):
        return str(int(x))
    return str(x)


def sort_classes(labels: Sequence[Any]) -> list[str]:
    """Distinct labels as strings, sorted numerically if all are integers, else as text."""
    names = {_label_str(x) for x in labels}
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _class_index(labels: Sequence[Any], classes: list[str], modality: str) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    strs = [_label_str(x) for x in labels]
    unknown = sorted({s for s in strs if s not in lookup})
    if unknown:
        raise DataError(f"{modality}: label(s) {unknown} are not among the classes {classes}")
    return np.array([lookup[s] for s in strs], dtype=np.int64)


def _check_images(images: np.ndarray, n_labels: int) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise DataError(f"images must be (N, H, W), got shape {images.shape}")
    if images.shape[0] != n_labels:
        raise DataError(f"{images.shape[0]} images but {n_labels} image labels")
    return images


class PairedDigits(Dataset):
    """Spoken digits (variable-length features) paired with images of the same class.

    Args:
        audio: list of (T_i, D) float arrays, one per utterance.
        audio_labels: class of each utterance (compared as strings, so ``"3" == 3``).
        images: (N, 28, 28) float32 images in [0, 1].
        image_labels: class of each image.
        seed: pairing seed; the pairing of epoch ``e`` depends only on ``(seed, e)``.
        speakers: optional speaker of each utterance (kept in ``self.speakers``).

    Items are ``dict(audio=(T, D) float32, image=(1, 28, 28) float32, label=int class index,
    index=int)``, and ``speaker=int`` (index into ``speaker_names``, the sorted speakers) when
    speakers are given; ``classes`` maps class index -> name, ``pairing[i]`` is the image index of
    utterance ``i`` this epoch. With DataLoader workers, call :meth:`set_epoch` before creating
    the epoch's iterator and do not use ``persistent_workers`` (workers copy the dataset).
    """

    def __init__(
        self,
        audio: list[np.ndarray],
        audio_labels: Sequence[int | str],
        images: np.ndarray,
        image_labels: Sequence[Any],
        seed: int = 0,
        speakers: Sequence[str] | None = None,
    ) -> None:
        if len(audio) != len(audio_labels):
            raise DataError(f"{len(audio)} utterances but {len(audio_labels)} audio labels")
        if len(audio) == 0:
            raise DataError("PairedDigits needs at least one utterance")
        if speakers is not None and len(speakers) != len(audio):
            raise DataError(f"{len(audio)} utterances but {len(speakers)} speakers")
        self.images = _check_images(images, len(image_labels))
        a_cls = set(sort_classes(audio_labels))
        i_cls = set(sort_classes(image_labels)) if len(image_labels) else set()
        problems = []
        if a_cls - i_cls:
            problems.append(
                f"class(es) {sort_classes(list(a_cls - i_cls))} present in audio but absent "
                "from images"
            )
        if i_cls - a_cls:
            problems.append(
                f"class(es) {sort_classes(list(i_cls - a_cls))} present in images but absent "
                "from audio"
            )
        if problems:
            raise DataError("cannot pair modalities: " + "; ".join(problems))
        self.classes: list[str] = sort_classes(audio_labels)
        self.audio = [np.asarray(a, dtype=np.float32) for a in audio]
        for i, a in enumerate(self.audio):
            if a.ndim != 2 or a.shape[0] == 0:
                raise DataError(f"utterance {i}: features must be (T>0, D), got {a.shape}")
        self.labels = _class_index(audio_labels, self.classes, "audio")
        self.image_labels = _class_index(image_labels, self.classes, "images")
        self.speakers = None if speakers is None else [str(s) for s in speakers]
        self.speaker_names: list[str] = sorted(set(self.speakers or []))
        where = {name: k for k, name in enumerate(self.speaker_names)}
        self.speaker_index = None if self.speakers is None else np.array(
            [where[s] for s in self.speakers], dtype=np.int64)
        self.lengths: list[int] = [int(a.shape[0]) for a in self.audio]
        self.seed = int(seed)
        self._pool = [np.flatnonzero(self.image_labels == c) for c in range(len(self.classes))]
        self.epoch = 0
        self.pairing = np.zeros(len(self.audio), dtype=np.int64)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the image paired with every utterance (deterministic in (seed, epoch))."""
        self.epoch = int(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        pairing = np.empty(len(self.audio), dtype=np.int64)
        for c, pool in enumerate(self._pool):
            members = np.flatnonzero(self.labels == c)
            pairing[members] = pool[rng.integers(0, len(pool), size=len(members))]
        self.pairing = pairing

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {
            "audio": self.audio[i],
            "image": self.images[self.pairing[i]][None],
            "label": int(self.labels[i]),
            "index": int(i),
        }
        if self.speaker_index is not None:
            item["speaker"] = int(self.speaker_index[i])
        return item


def collate_paired(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items of :class:`PairedDigits`.

    Returns ``{"audio": Sequences (B, T_max, D), "image": (B, 1, 28, 28) float32,
    "label": (B,) int64, "index": (B,) int64}``, and "speaker" (B,) int64 when every item has it.
    """
    out = {
        "audio": Sequences.from_list([it["audio"] for it in items]),
        "image": torch.from_numpy(np.stack([it["image"] for it in items])).float(),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }
    if all("speaker" in it for it in items):
        out["speaker"] = torch.tensor([it["speaker"] for it in items], dtype=torch.int64)
    return out


class ExamplePairs(Dataset):
    """The modalities of the same examples, joined by example id (pairing "by example").

    Args:
        sets: modality -> its examples in one split (:class:`dispart.batches.sets.ModalitySet`:
            ``examples``, ``labels``, ``ids``). Examples are joined on ``ids``; the order is that
            of the first modality. Ids missing from some modality are left out
            (``self.dropped`` counts them); no common id at all is a DataError.
        classes: class names (index order); default: the sorted labels of the first modality.
        shapes: modality -> shape its examples are reshaped to in items (e.g. (28, 28) images
            to (1, 28, 28)); modalities not named are given as stored.

    Items are ``{modality: its example, "label": int class index, "index": int}``; a
    "categorical" modality named "label" is the class index itself. ``lengths`` are the time
    steps of the first dynamic modality (arrays with a time axis and a variable length), for
    length bucketing, or None when no modality varies in length.
    """

    def __init__(self, sets: Mapping[str, Any], classes: Sequence[str] | None = None,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        if not sets:
            raise DataError("ExamplePairs needs at least one modality")
        self.modalities = tuple(sets)
        first = sets[self.modalities[0]]
        common = set(first.ids)
        for m in self.modalities[1:]:
            common &= set(sets[m].ids)
        if not common:
            raise DataError(f"pairing by example: modalities {list(self.modalities)} share no example id")
        self.ids = [e for e in first.ids if e in common]
        self.dropped = {m: len(sets[m]) - len(self.ids) for m in self.modalities}
        positions = {m: sets[m].position() for m in self.modalities}
        self._rows = {m: [positions[m][e] for e in self.ids] for m in self.modalities}
        self._sets = dict(sets)
        self._shapes = {m: tuple(shape) for m, shape in (shapes or {}).items() if m in sets}
        for m, shape in self._shapes.items():
            size = int(np.prod(np.shape(sets[m].examples[0])))
            if size != int(np.prod(shape)):
                raise DataError(f"modality {m!r}: examples of shape {np.shape(sets[m].examples[0])} "
                                f"cannot be reshaped to {shape}")
        labels = [first.labels[i] for i in self._rows[self.modalities[0]]]
        for m in self.modalities[1:]:
            other = [sets[m].labels[i] for i in self._rows[m]]
            bad = next((j for j, (a, b) in enumerate(zip(labels, other, strict=True)) if a != b), None)
            if bad is not None:
                raise DataError(f"pairing by example: example {self.ids[bad]!r} has label {labels[bad]!r} "
                                f"in {self.modalities[0]!r} but {other[bad]!r} in {m!r}")
        self.classes: list[str] = list(classes) if classes is not None else sort_classes(labels)
        self.labels = _class_index(labels, self.classes, self.modalities[0])
        self.lengths: list[int] | None = None
        for m in self.modalities:
            ex = sets[m].examples
            if isinstance(ex, list) and ex and np.ndim(ex[0]) >= 2:
                self.lengths = [int(np.shape(ex[i])[0]) for i in self._rows[m]]
                break

    def set_epoch(self, epoch: int) -> None:
        """Nothing to redraw: the pairing by example is fixed."""

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for m in self.modalities:
            x = self._sets[m].examples[self._rows[m][i]]
            item[m] = np.reshape(x, self._shapes[m]) if m in self._shapes else x
        item["label"] = int(self.labels[i])
        item["index"] = int(i)
        return item


class UnimodalAudio(Dataset):
    """Spoken digits alone; items ``dict(audio=(T, D), label=int, index=int)``.

    ``classes`` defaults to the sorted labels; pass the training classes to share an index.
    """

    def __init__(
        self,
        audio: list[np.ndarray],
        labels: Sequence[Any],
        classes: Sequence[str] | None = None,
    ) -> None:
        if len(audio) != len(labels):
            raise DataError(f"{len(audio)} utterances but {len(labels)} labels")
        self.audio = [np.asarray(a, dtype=np.float32) for a in audio]
        self.classes = list(classes) if classes is not None else sort_classes(labels)
        self.labels = _class_index(labels, self.classes, "audio")
        self.lengths: list[int] = [int(a.shape[0]) for a in self.audio]

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"audio": self.audio[i], "label": int(self.labels[i]), "index": int(i)}


def collate_audio(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"audio": Sequences, "label": (B,) int64, "index": (B,) int64}``."""
    return {
        "audio": Sequences.from_list([it["audio"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }


class UnimodalImages(Dataset):
    """Images alone; items ``dict(image=(1, 28, 28), label=int, index=int)``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[Any],
        classes: Sequence[str] | None = None,
    ) -> None:
        self.images = _check_images(images, len(labels))
        self.classes = list(classes) if classes is not None else sort_classes(labels)
        self.labels = _class_index(labels, self.classes, "images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i][None], "label": int(self.labels[i]), "index": int(i)}


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"image": (B, 1, H, W) float32, "label": (B,) int64, "index": (B,) int64}``."""
    return {
        "image": torch.from_numpy(np.stack([it["image"] for it in items])).float(),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of indices of similar length, every index exactly once per epoch.

    With ``shuffle``: indices are permuted, cut into chunks of ``batch_size *
    bucket_size_multiplier``, sorted by length within each chunk, cut into batches, and the
    batch order is shuffled. Without: the same on the identity order, batches in order.
    Deterministic in ``(seed, epoch)``; call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        bucket_size_multiplier: int = 50,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1 or bucket_size_multiplier < 1:
            raise ValueError("batch_size and bucket_size_multiplier must be >= 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.bucket = self.batch_size * int(bucket_size_multiplier)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        chunks = []
        for s in range(0, n, self.bucket):
            chunk = order[s : s + self.bucket]
            chunks.append(chunk[np.argsort(self.lengths[chunk], kind="stable")])
        flat = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        batches = [flat[s : s + self.batch_size] for s in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for b in batches:
            yield b.tolist()
