"""Weak supervision (MVAE, section 5.1): only a fraction of the examples stay paired.

:class:`WeaklyPaired` wraps any map-style dataset whose items are dicts modality -> value
(e.g. :class:`dispart.batches.paired.PairedDigits`). A fixed random fraction of the examples is
kept multimodal; every other example is turned into unimodal examples, one per modality (or,
with ``unpaired="split"``, the rest is split into M disjoint parts, part m keeping modality m
only), and each modality's unimodal examples are shuffled independently so no pairing is left.

:func:`collate_partial` batches such items: a modality missing from some rows gets placeholder
zeros there and a (B,) bool mask under ``"<modality>:present"``
(:func:`dispart.models.base.mask_key`), which every model honours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec

MASK_SUFFIX = ":present"  # == dispart.models.base.MASK_SUFFIX (data does not import models)


class WeaklyPaired(Dataset):
    """A paired dataset where only ``paired_fraction`` of the examples keep every modality.

    Args:
        dataset: items are dicts with (at least) every name of ``modalities``; other keys
            (metadata such as "index", "speaker", or "label" when it is not a modality) are
            kept in every item.
        modalities: the modalities to un-pair.
        paired_fraction: in [0, 1]; ``round(fraction * len(dataset))`` examples stay paired.
        seed: the choice of paired examples and the shuffles are deterministic in it.
        unpaired: "all" (each unpaired example gives M unimodal items) or "split" (each gives
            one, modalities assigned in equal shares).
        paired_only: keep only the paired examples (e.g. for JMVAE, trained on complete data).
    """

    def __init__(
        self,
        dataset: Any,
        modalities: Sequence[str],
        paired_fraction: float,
        seed: int = 0,
        unpaired: str = "all",
        paired_only: bool = False,
    ) -> None:
        if not 0.0 <= paired_fraction <= 1.0:
            raise ValueError(f"paired_fraction must be in [0, 1], got {paired_fraction}")
        if unpaired not in ("all", "split"):
            raise ValueError(f"unpaired must be 'all' or 'split', got {unpaired!r}")
        if len(modalities) < 2:
            raise ValueError("weak supervision needs at least two modalities")
        self.dataset, self.modalities = dataset, tuple(modalities)
        n = len(dataset)
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        n_paired = int(round(paired_fraction * n))
        self.paired_indices = np.sort(order[:n_paired])
        rest = order[n_paired:]
        items: list[tuple[int, tuple[str, ...]]] = [(int(i), self.modalities) for i in self.paired_indices]
        self.unpaired_indices: dict[str, np.ndarray] = {}
        if not paired_only:
            parts = (np.array_split(rng.permutation(rest), len(self.modalities)) if unpaired == "split"
                     else [rest] * len(self.modalities))
            for m, part in zip(self.modalities, parts, strict=True):
                shuffled = rng.permutation(part)  # independent order per modality: no pairing
                self.unpaired_indices[m] = shuffled
                items += [(int(i), (m,)) for i in shuffled]
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        source, keep = self.items[i]
        item = self.dataset[source]
        return {k: v for k, v in item.items() if k in keep or k not in self.modalities}

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def summary(self) -> dict[str, int]:
        """Counts of paired and unimodal items."""
        out = {"paired": len(self.paired_indices)}
        out.update({f"only_{m}": len(v) for m, v in self.unpaired_indices.items()})
        return out


def _to_tensor(values: list[Any]) -> torch.Tensor:
    if all(isinstance(v, (int, np.integer)) for v in values):
        return torch.tensor([int(v) for v in values], dtype=torch.int64)
    arrays = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]
    t = torch.from_numpy(np.stack(arrays))
    return t.float() if t.is_floating_point() else t


def collate_partial(items: list[Mapping[str, Any]], specs: Sequence[ModalitySpec]) -> dict[str, Any]:
    """Batch items that may lack some modalities.

    A modality every item has is batched as usual (dynamic kinds "sequence" and "frames" as
    :class:`Sequences`, data (B, T_max, D) or (B, T_max, C, H, W)); one that some items lack gets
    zeros (a one-frame zero sequence for dynamic kinds, class 0 for integer labels) in those rows plus a
    mask ``"<name>:present"``; one no item has is left out. Metadata keys ("label" when not a
    modality, "index", "speaker") are kept when every item has them.
    """
    out: dict[str, Any] = {}
    names = {s.name for s in specs}
    for spec in specs:
        have = [spec.name in it for it in items]
        if not any(have):
            continue
        first = next(it[spec.name] for it in items if spec.name in it)
        if spec.kind in ("sequence", "frames"):  # (T, D) or (T, C, H, W) per example
            filler = np.zeros((1, *spec.shape), dtype=np.float32)
            out[spec.name] = Sequences.from_list(
                [np.asarray(it[spec.name], dtype=np.float32) if h else filler
                 for it, h in zip(items, have, strict=True)])
        else:
            filler = 0 if isinstance(first, (int, np.integer)) else np.zeros_like(np.asarray(first))
            out[spec.name] = _to_tensor([it[spec.name] if h else filler
                                         for it, h in zip(items, have, strict=True)])
        if not all(have):
            out[spec.name + MASK_SUFFIX] = torch.tensor(have, dtype=torch.bool)
    for key in ("label", "index", "speaker"):
        if key in names or not all(key in it for it in items):
            continue
        values = [it[key] for it in items]
        out[key] = values if isinstance(values[0], str) else _to_tensor(values)
    return out
