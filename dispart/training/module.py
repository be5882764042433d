"""The LightningModule: a dispart model plus its optimiser. It adds no modelling of its own."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from dispart.data.batch import batch_size
from dispart.models import build_model, mask_key


class LitModel(L.LightningModule):
    """Wraps any :class:`~dispart.models.base.MultimodalModel`; ``model_hparams`` rebuilds it.

    Hyper-parameters are plain data, so Lightning checkpoints load with ``weights_only=True``.
    """

    def __init__(self, model_hparams: dict[str, Any], lr: float = 1e-3,
                 betas: tuple[float, float] | list[float] = (0.95, 0.999)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model_hparams)

    def _inputs(self, batch: dict) -> dict:
        """The model's modalities (and their ``<m>:present`` masks, when rows lack some)."""
        keys = [*self.model.modalities, *(mask_key(m) for m in self.model.modalities)]
        return {k: batch[k] for k in keys if k in batch}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model.loss(self._inputs(batch))
        n = batch_size(self._inputs(batch))
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value, batch_size=n, sync_dist=True)
        return out.loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        betas = tuple(self.hparams.betas)
        return torch.optim.Adam(self.model.parameters(), lr=self.hparams.lr, betas=betas)
