"""Paired training batches: a new random same-label pairing every epoch, length-bucketed."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dispart.data.batch import move_batch
from dispart.data.paired import LengthBucketSampler, PairedDigits, collate_paired
from dispart.data.pipeline import ExperimentData
from dispart.features.augment import RandomWarp


class ShardedBatchSampler(Sampler[list[int]]):
    """Every ``world_size``-th batch of ``base`` starting at ``rank`` (DDP without a
    DistributedSampler, which would break the length buckets). Drops the tail so that every
    rank runs the same number of steps."""

    def __init__(self, base: LengthBucketSampler, rank: int, world_size: int) -> None:
        self.base, self.rank, self.world_size = base, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base) // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.base)
        usable = len(batches) // self.world_size * self.world_size
        return iter(batches[self.rank:usable:self.world_size])


class AugmentedPairs(Dataset):
    """Applies a feature augmentation to the speech of every item of a PairedDigits."""

    def __init__(self, base: PairedDigits, augment: RandomWarp) -> None:
        self.base, self.augment, self.epoch = base, augment, 0
        self.lengths = base.lengths

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        item["audio"] = self.augment(item["audio"], self.epoch, i)
        return item


class PairedDataModule(L.LightningDataModule):
    def __init__(self, data: ExperimentData, batch_size: int = 256, seed: int = 0,
                 num_workers: int = 0, augment: RandomWarp | None = None,
                 bucket_pool: int = 50) -> None:
        super().__init__()
        self.data = data
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.augment = augment
        self.bucket_pool = bucket_pool
        self.dataset: PairedDigits | AugmentedPairs | None = None
        self.sampler: LengthBucketSampler | ShardedBatchSampler | None = None

    def setup(self, stage: str | None = None) -> None:
        d = self.data
        self.dataset = PairedDigits(
            d.speech_train.features, d.speech_train.labels,
            d.image_train.images, d.image_train.labels,
            seed=self.seed, speakers=d.speech_train.speakers,
        )
        if self.augment is not None:
            self.dataset = AugmentedPairs(self.dataset, self.augment)
        base = LengthBucketSampler(self.dataset.lengths, self.batch_size, shuffle=True,
                                   seed=self.seed, bucket_size_multiplier=self.bucket_pool)
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self.sampler = ShardedBatchSampler(base, rank, world) if world > 1 else base

    def set_epoch(self, epoch: int) -> None:
        """Re-pair speech and images and reshuffle the batches for ``epoch``."""
        assert self.dataset is not None and self.sampler is not None
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int):
        return move_batch(batch, device)

    def train_dataloader(self) -> DataLoader:
        assert self.dataset is not None
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_paired,
                          num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))


class EpochPairing(L.Callback):
    """Calls ``datamodule.set_epoch`` at the start of every training epoch."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.datamodule.set_epoch(trainer.current_epoch)
