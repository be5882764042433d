"""The examples of one modality in one split: what loaders return and ExperimentData holds.

``ExperimentData.sets[modality][split]`` is a :class:`ModalitySet`. Example ``i`` is
``examples[i]`` with class ``labels[i]`` and example id ``ids[i]``; the modalities of one example
(audio and video of one clip) share an id, which is how pairing "by example" joins them.
:class:`SpeechSet` and :class:`ImageSet` are the same thing under their older field names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dispart.errors import DataError

__all__ = ["ImageSet", "ModalitySet", "SpeechSet", "SplitSets"]


@dataclass(eq=False)
class ModalitySet:
    """Examples of one modality in one split.

    Attributes:
        examples: per-example arrays (a list: (T_i, D) feature frames, (T_i, C, H, W) video
            frames, ...) or one stacked array (N, *shape) (images, class indices).
        labels: class name of each example, as strings (e.g. ``"3"``).
        ids: example id of each example, unique within the set; modalities of the same example
            share it. Default: the position, ``"0"``, ``"1"``, ...
        speakers: speaker of each example, or None.
        paths: source file of each example, or None.
        meta: further per-example lists (e.g. ``"words"`` of a sentence), each of length N.
    """

    examples: Sequence[np.ndarray] | np.ndarray
    labels: list[str]
    ids: list[str] = field(default_factory=list)
    speakers: list[str] | None = None
    paths: list[str] | None = None
    meta: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.examples)
        if not self.ids:
            self.ids = [str(i) for i in range(n)]
        for name, values in (("labels", self.labels), ("ids", self.ids), ("speakers", self.speakers),
                             ("paths", self.paths), *((f"meta[{k!r}]", v) for k, v in self.meta.items())):
            if values is not None and len(values) != n:
                raise DataError(f"{type(self).__name__}: {n} examples but {len(values)} {name}")
        if len(set(self.ids)) != n:
            dup = next(i for i, c in Counter(self.ids).items() if c > 1)
            raise DataError(f"{type(self).__name__}: example id {dup!r} occurs more than once")

    def __len__(self) -> int:
        return len(self.examples)

    def lengths(self) -> list[int]:
        """Number of time steps of every example (first axis of each array)."""
        return [int(np.shape(x)[0]) for x in self.examples]

    def position(self) -> dict[str, int]:
        """Example id -> index in this set."""
        return {e: i for i, e in enumerate(self.ids)}

    def select(self, keep: Sequence[bool] | np.ndarray) -> ModalitySet:
        """The examples where ``keep`` (one bool per example) is True, as a :class:`ModalitySet`
        with their labels, ids, speakers, paths and meta (a stacked array stays stacked)."""
        mask = np.asarray(keep, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"select: keep has shape {mask.shape}, expected ({len(self)},)")
        idx = np.flatnonzero(mask)

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in idx]

        examples = (self.examples[idx] if isinstance(self.examples, np.ndarray)
                    else [self.examples[i] for i in idx])
        return ModalitySet(examples, pick(self.labels) or [], pick(self.ids) or [], pick(self.speakers),
                           pick(self.paths), {k: pick(v) or [] for k, v in self.meta.items()})


class SpeechSet(ModalitySet):
    """Normalised speech features of one split (compatibility name). ``features[i]`` is (T_i, n_mels)."""

    def __init__(self, features: list[np.ndarray], labels: list[str], speakers: list[str],
                 paths: list[str], ids: list[str] | None = None) -> None:
        super().__init__(features, labels, list(ids) if ids else list(paths), speakers, paths)

    @property
    def features(self) -> list[np.ndarray]:
        return self.examples  # type: ignore[return-value]

    @features.setter
    def features(self, value: list[np.ndarray]) -> None:
        self.examples = value


class ImageSet(ModalitySet):
    """``images`` (N, 28, 28) float32 in [0, 1]; ``labels`` as class-name strings (compatibility name)."""

    def __init__(self, images: np.ndarray, labels: list[str], ids: list[str] | None = None,
                 meta: dict[str, list[Any]] | None = None) -> None:
        super().__init__(images, labels, list(ids) if ids else [], meta=dict(meta or {}))

    @property
    def images(self) -> np.ndarray:
        return self.examples  # type: ignore[return-value]

    @images.setter
    def images(self, value: np.ndarray) -> None:
        self.examples = value


SplitSets = dict[str, ModalitySet]  # split name ("train", "test") -> the modality's examples there
