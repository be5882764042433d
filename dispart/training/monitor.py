"""Optional in-training evaluation: test-split k-means purity of the latents every N epochs."""

from __future__ import annotations

import time

import lightning as L

from dispart.config import EvalConfig
from dispart.data.pipeline import ExperimentData
from dispart.evaluation.evaluate import evaluate_model


class PurityMonitor(L.Callback):
    """Logs ``eval/purity/<modality>/<latent>`` (fraction) and the wall time since fit start.

    With ``stop_at`` set, training stops once every semantic latent (z^s, or z for
    single-latent models) reaches that purity. ``history`` keeps (epoch, seconds, purities).
    """

    def __init__(self, data: ExperimentData, cfg: EvalConfig, every: int,
                 stop_at: float | None = None) -> None:
        self.data, self.cfg, self.every, self.stop_at = data, cfg, every, stop_at
        self.history: list[dict] = []
        self._t0 = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every or not trainer.is_global_zero:
            return
        result = evaluate_model(pl_module.model, "monitor", self.data.speech_test,
                                self.data.image_test, self.cfg, curves=False)
        seconds = time.perf_counter() - self._t0
        purities = {f"{r['modality']}/{r['latent']}": r["purity"] for r in result["rows"]}
        for key, value in purities.items():
            pl_module.log(f"eval/purity/{key}", value, rank_zero_only=True)
        self.history.append({"epoch": epoch, "seconds": seconds, "purity": purities})
        semantic = [v for k, v in purities.items() if k.endswith(("z^s", "/z"))]
        if self.stop_at is not None and semantic and min(semantic) >= self.stop_at:
            trainer.should_stop = True
