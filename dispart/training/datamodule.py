"""Paired training batches, length-bucketed: pairing by label (a new random same-label pairing
every epoch) or by example (the modalities of one example, e.g. audio and video of one clip).

Exact resume: the batch order and the pairing of epoch ``e`` are pure functions of
``(seed, e)``, every sampler builds its batches lazily (at the first ``next``, after
``set_epoch``), and the data modules checkpoint where training stands (epoch, batches of it
already trained on) so that a run resumed from a mid-epoch checkpoint trains on exactly the
batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from itertools import islice
from typing import Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dispart.batches.batch import move_batch
from dispart.batches.modality import ModalitySpec
from dispart.batches.paired import PAIRINGS, ExamplePairs, LengthBucketSampler, PairedDigits, collate_paired
from dispart.batches.pipeline import ExperimentData
from dispart.batches.sets import ModalitySet
from dispart.batches.weak import WeaklyPaired, collate_partial
from dispart.errors import ConfigError
from dispart.features.augment import Augment


class EpochSampler(Protocol):
    """A batch sampler whose batches are a function of the epoch set last."""

    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[list[int]]: ...


class ShuffledBatches(Sampler[list[int]]):
    """Batches of a random permutation of ``range(n)``, redrawn by ``set_epoch`` (seeded).

    The permutation is drawn at the first ``next``, so ``set_epoch`` may follow ``iter``.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n).tolist()
        for i in range(0, self.n, self.batch_size):
            yield order[i:i + self.batch_size]


class ShardedBatchSampler(Sampler[list[int]]):
    """Every ``world_size``-th batch of ``base`` starting at ``rank`` (DDP without a
    DistributedSampler, which would break the length buckets). Drops the tail so that every
    rank runs the same number of steps. Lazy like ``base``."""

    def __init__(self, base: EpochSampler, rank: int, world_size: int) -> None:
        self.base, self.rank, self.world_size = base, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base) // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        usable = len(self) * self.world_size
        yield from islice(self.base, self.rank, usable, self.world_size)


class ResumableBatches(Sampler[list[int]]):
    """The batch sampler a DataLoader sees: ``base``'s batches of the current epoch without the
    first ``skip`` (those trained on before a mid-epoch checkpoint).

    ``set_epoch`` to another epoch clears ``skip``; ``len`` stays the whole epoch's, as
    Lightning expects of a resumed loader (it counts the skipped batches as fetched).
    """

    def __init__(self, base: EpochSampler) -> None:
        self.base, self.epoch, self.skip = base, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[list[int]]:
        yield from islice(self.base, self.skip, None)


class AugmentedPairs(Dataset):
    """Applies per-modality augmentations (modality -> ``f(example, epoch, index)``, e.g.
    :class:`RandomWarp` for "audio", :class:`RandomShift` for "image") to every item of a
    PairedDigits or an ExamplePairs."""

    def __init__(self, base: PairedDigits | ExamplePairs, augments: Mapping[str, Augment]) -> None:
        self.base, self.augments, self.epoch = base, dict(augments), 0
        self.lengths = base.lengths

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        for modality, augment in self.augments.items():
            item[modality] = augment(item[modality], self.epoch, i)
        return item


class _BatchedDataModule(L.LightningDataModule):
    """What both data modules share: a batch sampler sharded by DDP rank, per-epoch reshuffling,
    the resume position in checkpoints, and moving batches (which may hold Sequences) to the
    device. Subclasses set ``dataset`` and ``sampler`` in ``setup``."""

    seed: int
    num_workers: int
    dataset: Dataset | None
    sampler: ResumableBatches | None

    def __init__(self) -> None:
        super().__init__()
        # Worker seeds come from this generator (not the global RNG, which drives the model's
        # noise); it is reseeded from (seed, epoch) so that a resumed epoch gets the same ones.
        self.generator = torch.Generator()

    def _batches(self, base: LengthBucketSampler | ShuffledBatches) -> ResumableBatches:
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        sharded = ShardedBatchSampler(base, rank, world) if world > 1 else base
        return ResumableBatches(sharded)

    def set_epoch(self, epoch: int) -> None:
        """Re-pair / reshuffle for ``epoch``: a pure function of ``(seed, epoch)``."""
        assert self.dataset is not None and self.sampler is not None
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))

    def state_dict(self) -> dict[str, int]:
        """Where training stands (saved in every checkpoint): the epoch and how many of its
        batches were trained on (Lightning's own count of this epoch's batches)."""
        if self.sampler is None or self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return {"epoch": self.sampler.epoch, "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a checkpoint's position; a finished epoch resumes at the next one's start."""
        if not state:
            return
        assert self.sampler is not None
        epoch, done = int(state["epoch"]), int(state["batches"])
        if done >= len(self.sampler):
            epoch, done = epoch + 1, 0
        self.set_epoch(epoch)
        self.sampler.skip = done

    def _loader(self, collate_fn: Callable[[list], dict]) -> DataLoader:
        assert self.dataset is not None
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_fn,
                          num_workers=self.num_workers, generator=self.generator)

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int):
        return move_batch(batch, device)


class PairedDataModule(_BatchedDataModule):
    """Training batches of several modalities, paired as ``pairing`` says (default: as the data
    says, ``data.pairing``).

    * "label": every "audio" utterance with a random same-label "image", redrawn every epoch
      (:class:`PairedDigits`); batches as :func:`collate_paired`.
    * "example": the modalities of ``specs`` (default: every modality of the data, with its
      spec ``data.spec(m)``) of the same training examples, joined by example id
      (:class:`ExamplePairs`; static examples reshaped to their spec's shape, e.g. (28, 28)
      images to (1, 28, 28) or (784,)); batches ``{modality: tensor or Sequences, "label": (B,),
      "index": (B,)}`` (:func:`collate_partial`), bucketed by the length of the first dynamic
      modality.

    Either way the batch order of epoch ``e`` is a function of ``(seed, e)`` only.
    """

    def __init__(self, data: ExperimentData, batch_size: int = 256, seed: int = 0,
                 num_workers: int = 0, augments: Mapping[str, Augment] | None = None,
                 bucket_pool: int = 50, pairing: str | None = None,
                 specs: Sequence[ModalitySpec] | None = None) -> None:
        super().__init__()
        self.data = data
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.augments = dict(augments or {})
        self.bucket_pool = bucket_pool
        self.pairing = pairing or data.pairing
        if self.pairing not in PAIRINGS:
            raise ConfigError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if specs is None:
            names = ["audio", "image"] if self.pairing == "label" else data.modalities
            specs = [data.spec(m) for m in names]
        self.specs = list(specs)
        self.modalities = [s.name for s in self.specs]
        for m in self.modalities:
            data.spec(m)  # a modality the data lacks: a ConfigError naming it
        if self.pairing == "label" and sorted(self.modalities) != ["audio", "image"]:
            raise ConfigError(f"pairing by label pairs 'audio' with 'image', "
                              f"got modalities {self.modalities}")
        self.dataset: PairedDigits | ExamplePairs | AugmentedPairs | None = None
        self.sampler: ResumableBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        d = self.data
        if self.pairing == "label":
            audio, image = d.split("audio", "train"), d.split("image", "train")
            self.dataset = PairedDigits(
                audio.examples, audio.labels, image.examples, image.labels,  # type: ignore[arg-type]
                seed=self.seed, speakers=audio.speakers,
            )
        else:
            self.dataset = ExamplePairs({m: d.split(m, "train") for m in self.modalities},
                                        shapes={s.name: s.shape for s in self.specs
                                                if s.kind in ("image", "vector")})
        if self.augments:
            lacking = [m for m in self.augments if m not in self.modalities]
            if lacking:
                raise ConfigError(f"augmentations given for {lacking}, which this run lacks "
                                  f"(its modalities: {self.modalities})")
            self.dataset = AugmentedPairs(self.dataset, self.augments)
        lengths = self.dataset.lengths
        base = (ShuffledBatches(len(self.dataset), self.batch_size, self.seed) if lengths is None
                else LengthBucketSampler(lengths, self.batch_size, shuffle=True, seed=self.seed,
                                         bucket_size_multiplier=self.bucket_pool))
        self.sampler = self._batches(base)
        self.set_epoch(0)

    def train_dataloader(self) -> DataLoader:
        if self.pairing == "label":
            return self._loader(collate_paired)
        return self._loader(partial(collate_partial, specs=self.specs))


class EpochPairing(L.Callback):
    """Calls ``datamodule.set_epoch`` at the start of every training epoch."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.datamodule.set_epoch(trainer.current_epoch)


class LabelledImages(Dataset):
    """MNIST as two modalities: items ``{"image": array of ``shape``, "label": int class}``.

    ``redraw=True`` (``data.binarize=dynamic``): item ``i`` of epoch ``e`` is a new binary image,
    pixel ~ Bernoulli(intensity), drawn from ``(seed, e, i)`` alone (so a resumed run draws the
    same images), from the set's ``meta["intensity"]``.
    """

    def __init__(self, images: ModalitySet, shape: Sequence[int], redraw: bool = False,
                 seed: int = 0) -> None:
        self.shape = tuple(shape)
        self.images = np.asarray(images.examples).reshape(len(images), *shape).astype(np.float32, copy=False)
        self.labels = np.asarray([int(y) for y in images.labels], dtype=np.int64)
        self.intensity: list[np.ndarray] | None = None
        if redraw:
            if "intensity" not in images.meta:
                raise ConfigError("data.binarize=dynamic: the training images carry no intensities "
                                  "to redraw from (meta['intensity'], set by the MNIST loader)")
            self.intensity = images.meta["intensity"]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if self.intensity is None:
            image = self.images[i]
        else:
            p = np.asarray(self.intensity[i], dtype=np.float32)
            u = np.random.default_rng((self.seed, self.epoch, i)).random(p.shape, dtype=np.float32)
            image = (u < p).astype(np.float32).reshape(self.shape)
        return {"image": image, "label": int(self.labels[i])}


class ImageLabelDataModule(_BatchedDataModule):
    """Image + label training data, optionally weakly supervised (MVAE section 5.1).

    ``paired_fraction`` of the training examples stay paired; the rest is split into image-only
    and label-only examples with the pairing shuffled away (``unpaired="split"``) or dropped
    (``"drop"``, for models that need complete examples such as JMVAE). Batches carry
    ``"<m>:present"`` masks where rows lack a modality. ``redraw``: new binary training images
    every epoch (:class:`LabelledImages`, ``data.binarize=dynamic``).
    """

    def __init__(self, data: ExperimentData, specs: Sequence[ModalitySpec], batch_size: int = 256,
                 seed: int = 0, num_workers: int = 0, paired_fraction: float = 1.0,
                 unpaired: str = "split", redraw: bool = False) -> None:
        super().__init__()
        self.data, self.specs = data, list(specs)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.paired_fraction, self.unpaired, self.redraw = paired_fraction, unpaired, redraw
        self.dataset: Dataset | None = None
        self.sampler: ResumableBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        image = next(s for s in self.specs if s.name == "image")
        base = LabelledImages(self.data.split("image", "train"), image.shape, self.redraw, self.seed)
        names = [s.name for s in self.specs]
        if self.paired_fraction < 1.0 and len(names) > 1:
            self.dataset = WeaklyPaired(base, names, self.paired_fraction, seed=self.seed,
                                        unpaired="split", paired_only=self.unpaired == "drop")
        else:
            self.dataset = base
        if len(self.dataset) == 0:
            raise ValueError(f"data.paired_fraction={self.paired_fraction} with data.unpaired="
                             f"{self.unpaired!r} leaves no training example")
        self.sampler = self._batches(ShuffledBatches(len(self.dataset), self.batch_size, self.seed))
        self.set_epoch(0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(partial(collate_partial, specs=self.specs))
