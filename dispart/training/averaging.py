"""``train.average_from = N``: the trained model is the equal-weight average of the weights at the
end of epochs N, N+1, ..., the last (stochastic weight averaging at the run's learning rate).

Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (on ``torch.optim.swa_utils.
AveragedModel``) keeps the average beside the model being trained; training itself is unchanged
(the same seed gives the same trajectory with or without averaging), and when it ends the
average replaces the weights, so the run folder's ``model.safetensors`` is the average (the
``train.eval_every`` monitor reads the weights being trained). Its checkpoints hold the average
under ``state_dict`` and the weights being trained under ``current_model_state``
(``averaging_state``: how many epochs are averaged), so a resumed run continues both exactly;
:func:`averaged_checkpoint` tells such a checkpoint from a plain one. Floating-point parameters
and buffers are averaged; integer buffers (step counters such as MVAE's ``anneal_step``) are not
quantities to average and take the value of the weights being trained (:func:`mean_floats`).
"""

from __future__ import annotations

import warnings
from typing import Any

from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor
from torch.optim.swa_utils import get_swa_multi_avg_fn

__all__ = ["EpochAveraging", "averaged_checkpoint", "mean_floats"]

_SWA_UPDATE = get_swa_multi_avg_fn()
CURRENT = "current_model_state"  # WeightAveraging's checkpoint key of the weights being trained


def mean_floats(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
    """In place, for tensors of one dtype (as ``AveragedModel`` groups them): floating point ->
    torch's own SWA update (the running mean of ``n_averaged`` values updated with ``current``);
    integers (which that update cannot divide) -> ``current`` copied."""
    if averaged and (averaged[0].is_floating_point() or averaged[0].is_complex()):
        _SWA_UPDATE(averaged, current, n_averaged)
    else:
        for avg, cur in zip(averaged, current, strict=True):
            avg.copy_(cur)


class EpochAveraging(WeightAveraging):
    """Average the weights at the end of every epoch from ``start_epoch`` (1-based, as
    ``train.epochs`` counts) to the last, each with the same weight."""

    def __init__(self, start_epoch: int) -> None:
        if start_epoch < 1:
            raise ValueError(f"start_epoch counts from 1, got {start_epoch}")
        super().__init__(use_buffers=True, multi_avg_fn=mean_floats)
        self.start_epoch = int(start_epoch)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Only at epoch ends (``epoch_idx`` is 0-based) from epoch ``start_epoch`` on."""
        return epoch_idx is not None and epoch_idx + 1 >= self.start_epoch

    @property
    def averaged_epochs(self) -> int:
        """How many epoch ends are in the average so far."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """The average replaces the weights, unless training stopped before ``start_epoch`` ended
        (``train.max_time``, ``max_steps``, ``stop_at_purity``): then nothing was averaged, the
        trained weights stay, and a warning says so."""
        if self.averaged_epochs > 0:
            super().on_train_end(trainer, pl_module)
        elif trainer.is_global_zero:
            warnings.warn(f"train.average_from={self.start_epoch}: training stopped before epoch "
                          f"{self.start_epoch} ended, so no weights were averaged; the run keeps "
                          "its last weights", stacklevel=1)


def averaged_checkpoint(ckpt: dict[str, Any]) -> bool:
    """Whether a loaded Lightning checkpoint was written with :class:`EpochAveraging` (its
    ``state_dict`` is then the average, not the weights being trained)."""
    return CURRENT in ckpt
