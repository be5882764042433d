"""Optional in-training evaluation: test-split k-means purity of the latents every N epochs."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities.seed import isolate_rng

from dispart.batches.pipeline import ExperimentData
from dispart.config import EvalConfig
from dispart.evaluation.evaluate import evaluate_model, split_sets
from dispart.evaluation.table import content_row_keys


class PurityMonitor(L.Callback):
    """Logs ``eval/purity/<modality>/<latent>`` (fraction) and the training wall time.

    With ``stop_at`` set, training stops once every content latent (role "content" in the
    model's latent declarations: PVAE's z^s, the single z of JMVAE-kl/VAE) reaches that
    purity. ``history`` keeps (epoch, seconds, purities); it is saved in checkpoints, so a
    resumed run continues it (``seconds`` counts training time only, not the time between a
    crash and the resume). Rank 0 evaluates and decides; under
    DDP the decision is broadcast so that every rank stops at the same epoch.
    """

    def __init__(self, data: ExperimentData, cfg: EvalConfig, every: int,
                 stop_at: float | None = None) -> None:
        self.data, self.cfg, self.every, self.stop_at = data, cfg, every, stop_at
        self.history: list[dict] = []
        self._t0 = 0.0
        self._seconds_before = 0.0  # training time of the run before it was resumed

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "seconds": self._elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self._seconds_before = float(state.get("seconds", 0.0))

    def _elapsed(self) -> float:
        return self._seconds_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()  # after a resume, load_state_dict set the time before

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every:
            return
        stop = trainer.is_global_zero and self._evaluate(epoch, pl_module)
        if trainer.strategy.broadcast(stop, src=0):
            trainer.should_stop = True

    def _evaluate(self, epoch: int, pl_module: L.LightningModule) -> bool:
        """Evaluate, log and record; True when every content-latent purity reached ``stop_at``."""
        with isolate_rng():  # evaluation must not move the RNG that training draws from
            result = evaluate_model(pl_module.model, "monitor", split_sets(self.data, "test"),
                                    self.cfg, curves=False)
        purities = {f"{r['modality']}/{r['latent']}": float(r["purity"]) for r in result["rows"]}
        for key, value in purities.items():
            pl_module.log(f"eval/purity/{key}", value, rank_zero_only=True)
        self.history.append({"epoch": epoch, "seconds": self._elapsed(), "purity": purities})
        content = [purities[k] for k in content_row_keys(result["rows"])]
        return self.stop_at is not None and bool(content) and min(content) >= self.stop_at
