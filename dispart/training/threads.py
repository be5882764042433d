"""``train.threads=auto``: the number of torch threads that trains this model fastest here.

Small recurrent models on two CPU cores are the case: on one of our hosts (a Xeon) the demo's
epochs took 1.5x longer with two torch threads than with one, on another (an AMD EPYC with two
physical cores) 1.15-1.45x longer with one than with two. No rule of thumb gets both right, so
:class:`FastestThreads` measures: on the first training batch it times the model's forward and
backward pass with one thread and with every CPU of the process, alternately, and keeps the
faster (more threads only when they are at least ``margin`` faster). The probe leaves no trace
in training: the random state is restored, gradients are cleared, buffers put back, and no
optimiser step is taken. The choice is saved in checkpoints, so a resumed run keeps it.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import lightning as L
import torch

__all__ = ["FastestThreads", "available_cpus", "faster"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def faster(seconds_one: list[float], seconds_many: list[float], many: int, margin: float = 0.1) -> int:
    """1 or ``many``: ``many`` threads only when their median time is at least ``margin``
    (a fraction) below one thread's."""
    if many <= 1:
        return 1
    return many if statistics.median(seconds_many) <= (1 - margin) * statistics.median(seconds_one) else 1


class FastestThreads(L.Callback):
    """Chooses the torch thread count at the first training batch (see the module docstring);
    ``chosen`` and ``seconds`` (the probe's timings) are what it found."""

    def __init__(self, repeats: int = 3, margin: float = 0.1, quiet: bool = False) -> None:
        self.repeats, self.margin, self.quiet = repeats, margin, quiet
        self.chosen: int | None = None
        self.seconds: dict[int, list[float]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chosen = state.get("chosen")

    def on_train_start(self, trainer: L.Trainer, lit: L.LightningModule) -> None:
        if self.chosen is not None:  # resumed: keep the run's choice
            torch.set_num_threads(self.chosen)

    def on_train_batch_start(self, trainer: L.Trainer, lit: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.chosen is not None:
            return
        many = available_cpus()
        if many <= 1 or lit.device.type != "cpu":
            self.chosen = torch.get_num_threads()
            return
        self.seconds = {1: [], many: []}
        buffers = {k: v.clone() for k, v in lit.model.named_buffers()}
        with torch.random.fork_rng(devices=[]):
            self._pass(lit, batch)  # warm-up (first-call allocations, kernel selection)
            for _ in range(self.repeats):
                for n in (1, many):
                    torch.set_num_threads(n)
                    self.seconds[n].append(self._pass(lit, batch))
        with torch.no_grad():
            for k, b in lit.model.named_buffers():
                b.copy_(buffers[k])
        lit.model.zero_grad(set_to_none=True)
        self.chosen = faster(self.seconds[1], self.seconds[many], many, self.margin)
        torch.set_num_threads(self.chosen)
        if not self.quiet and trainer.is_global_zero:
            med = {n: statistics.median(s) for n, s in self.seconds.items()}
            print(f"train.threads=auto: {self.chosen} (a step of this model took {med[1]:.3f} s with "
                  f"1 thread, {med[many]:.3f} s with {many})")

    @staticmethod
    def _pass(lit: L.LightningModule, batch: Any) -> float:
        t0 = time.perf_counter()
        lit.model.loss(lit._inputs(batch)).loss.backward()
        seconds = time.perf_counter() - t0
        lit.model.zero_grad(set_to_none=True)
        return seconds
